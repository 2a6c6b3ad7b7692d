"""Board URLs: their query-string options, typed, and their display without secrets.

Every backend's ``from_url`` reads its options here, so that a number that
does not parse is refused the same way everywhere, naming the option, and no
error ever shows the URL's password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from jobboard import errors

__all__ = ["coerce_options", "number_option", "parse_options", "redact_url"]

#: The options every board takes, and their types.
_FLOAT_OPTIONS = ("lease", "retention")
_INT_OPTIONS = ("max_payload", "max_attempts")


def parse_options(url: str) -> dict[str, str]:
    """The query-string options of a board URL as a dict."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


#: Query options whose values are secrets: ``password``, ``sentinel_password``...
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|digest|auth)$", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A board URL without its password (in the address or as a query option such as
    ``sentinel_password=``), for messages, logs and displays."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(_SECRET_KEY.search(k) for k, _ in pairs):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join(f"{k}={'***' if _SECRET_KEY.search(k) else v}" for k, v in pairs)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def number_option(value: Any, key: str, url: str) -> float:
    """``value`` as a float; ``BadURL`` naming the option (never the password) otherwise."""
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise errors.BadURL(
            f"board URL {redact_url(url)!r}: option {key!r} must be a number, got {value!r}"
        ) from err


def coerce_options(
    options: Mapping[str, Any], url: str = "", floats: Iterable[str] = ()
) -> dict[str, Any]:
    """Convert the common board options (and the backend's ``floats``) given as URL
    query strings to numbers.

    Raises ``BadURL`` naming the option when a value does not parse.
    """
    out = dict(options)
    for key in (*_FLOAT_OPTIONS, *floats):
        if isinstance(out.get(key), str):
            out[key] = number_option(out[key], key, url)
    for key in _INT_OPTIONS:
        if isinstance(out.get(key), str):
            try:
                out[key] = int(out[key])
            except ValueError as err:
                raise errors.BadURL(
                    f"board URL {redact_url(url)!r}: option {key!r} must be a whole number, "
                    f"got {out[key]!r}"
                ) from err
    return out
