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

__all__ = [
    "MAX_LEASE",
    "SECRET_OPTIONS",
    "check_option_bounds",
    "coerce_options",
    "number_option",
    "parse_options",
    "redact_url",
]

#: The options every board takes, and their types.
_FLOAT_OPTIONS = ("lease", "retention")
_INT_OPTIONS = ("max_payload", "max_attempts")
#: Longest lease a claim may ask for, in seconds (one day): a lease is renewed by
#: its owner's heartbeat, a longer one only delays taking over from a dead owner.
MAX_LEASE = 86400.0
#: Allowed ranges of the common board options: (low, high, low included).
_OPTION_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "lease": (0.0, MAX_LEASE, False),
    "retention": (0.0, 100 * 365 * 86400.0, True),
    "max_payload": (1, 1 << 30, True),
    "max_attempts": (1, 1000, True),
}


def parse_options(url: str) -> dict[str, str]:
    """The query-string options of a board URL as a dict."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


#: Query options whose values are secrets (masked by :func:`redact_url`).
SECRET_OPTIONS = frozenset(
    {"password", "passwd", "ssl_password", "sentinel_password", "digest", "auth", "secret", "token"}
)

_SECRET_QUERY = re.compile(
    r"(^|[&;])(" + "|".join(sorted(SECRET_OPTIONS)) + r")=[^&;]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """A board URL without its password (in the address or as a query option such as
    ``?password=``), for messages, logs and displays."""
    parts = urlsplit(url)
    query = _SECRET_QUERY.sub(r"\1\2=***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
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
    query strings to numbers, and check the common ones are in range.

    Raises ``BadURL`` naming the option (never the URL's password) when a value
    does not parse or is out of range.
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
    check_option_bounds(out, url)
    return out


def check_option_bounds(options: Mapping[str, Any], url: str = "") -> None:
    """Raise ``BadURL`` naming the first common option (lease, retention,
    max_payload, max_attempts) that is not a number in its range."""
    for key, (low, high, low_ok) in _OPTION_BOUNDS.items():
        value = options.get(key)
        if value is None:
            continue
        is_int = key in _INT_OPTIONS
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int if is_int else (int, float))
            and (low <= value if low_ok else low < value)
            and value <= high
        )
        if not ok:
            kind = "a whole number" if is_int else "a number"
            above = f"from {low:g}" if low_ok else f"above {low:g}"
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: option {key!r} must be {kind} {above} "
                f"to {high:g}, got {value!r}"
            )
