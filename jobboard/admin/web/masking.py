"""Masking of secrets in what the dashboard shows: stores, results, details, progress.

A value is hidden when its key names a secret: one of the words in
:data:`SECRET_WORDS` appears in the key, split at underscores, dashes, dots,
spaces and camelCase humps (``password``, ``db_password``, ``apiKey``,
``X-Auth-Token``, ``aws.secret_access_key``), or the key ends with one
(``dbpassword``). Whole sub-documents under such a key are hidden too.
Strings holding a URL with a password keep the URL but lose the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jobboard.base import redact_url

__all__ = ["MASK", "SECRET_WORDS", "is_secret_key", "mask"]

#: What a hidden value is replaced with.
MASK = "••••••"
#: Words that make a key secret.
SECRET_WORDS = frozenset(
    {
        "auth",
        "authorization",
        "apikey",
        "cookie",
        "credential",
        "credentials",
        "key",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "secrets",
        "token",
        "tokens",
        "private",
    }
)
#: Endings that make a key secret even without a separator (``dbpassword``, ``apitoken``).
_SECRET_ENDINGS = ("password", "passwd", "secret", "token", "credential", "credentials", "apikey")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
#: Deepest nesting masked; anything deeper is hidden whole (a store is JSON, never cyclic).
MAX_DEPTH = 64


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret."""
    words = [w.lower() for w in _SEPARATORS.split(_HUMP.sub("_", key)) if w]
    if any(w in SECRET_WORDS for w in words):
        return True
    flat = "".join(words)
    return flat.endswith(_SECRET_ENDINGS)


def mask(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON value with every secret hidden (see the module docstring)."""
    if depth > MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {
            str(k): MASK if is_secret_key(str(k)) else mask(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(v, depth + 1) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            return redact_url(value)
        except ValueError:  # not a parsable URL after all
            return value
    return value
