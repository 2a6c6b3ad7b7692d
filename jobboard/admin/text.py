"""Text helpers of the admin tool: cutting, formatting and fitting tables to a width.

Only the standard library: tables fit a given width (80 columns by default)
by shrinking the widest columns and cutting cells with an ellipsis, so the
output stays readable in a narrow terminal, a pager or a log file.
"""

from __future__ import annotations

import json
import textwrap
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_WIDTH",
    "ELLIPSIS",
    "compact_json",
    "counts_line",
    "cut",
    "fmt_age",
    "fmt_clock",
    "fmt_duration",
    "fmt_time",
    "key_values",
    "one_line",
    "printable",
    "short_id",
    "table",
]

#: Width used when the caller does not know the terminal's.
DEFAULT_WIDTH = 80
#: Marks a cell or value that was cut to fit.
ELLIPSIS = "…"
#: Spaces between two table columns.
COLUMN_GAP = 2
#: Narrowest a shrunk column gets (its header may be cut below this).
MIN_COLUMN = 5
#: Characters of a job id shown in tables (any unique prefix is accepted back).
SHORT_ID = 12


def printable(text: str) -> str:
    """``text`` safe for a terminal: every control or format character (escape
    sequences, bell, carriage return, bidi overrides, zero-width marks) shown as
    its ``\\x..``/``\\u....`` escape; line breaks and tabs kept. Names, flows and
    errors come from anyone who can post: printed raw they could repaint the
    screen or hide text."""
    if text.isprintable():
        return text
    return "\n".join(
        line if line.isprintable() else "".join(_escape(c) for c in line)
        for line in text.split("\n")
    )


def _escape(char: str) -> str:
    if char.isprintable() or char == "\t":
        return char
    if unicodedata.category(char) == "Zs":  # a no-break or other wide space
        return " "
    return repr(char)[1:-1] if char not in "'\"" else char


def one_line(text: Any) -> str:
    """``text`` as a terminal-safe string with line breaks and tabs turned into spaces."""
    return printable(str(text).translate(_FLATTEN))


_FLATTEN = {ord(c): " " for c in "\n\r\t\v\f"}


def cut(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = one_line(text)
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS


def short_id(job_id: str | None) -> str:
    """The first characters of a job id, as shown in tables."""
    return (job_id or "-")[:SHORT_ID]


def fmt_duration(seconds: float | None) -> str:
    """A compact human duration: ``45ms``, ``12.3s``, ``3m05s``, ``2h03m``, ``1d04h``."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(float(seconds))
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    if s < 60:
        return f"{sign}{s:.1f}s"
    whole = int(s)
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{sign}{whole // 86400}d{whole % 86400 // 3600:02d}h"


def fmt_age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a board timestamp was, e.g. ``3m05s``; ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return fmt_duration((time.time() if now is None else now) - timestamp)


def fmt_time(timestamp: float | None) -> str:
    """A board timestamp as UTC ISO 8601 with milliseconds, e.g. ``2024-05-01T12:00:03.250Z``."""
    if timestamp is None:
        return "-"
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{whole}.{int(timestamp % 1 * 1000):03d}Z"


def fmt_clock(timestamp: float | None) -> str:
    """The UTC time of day of a timestamp, ``HH:MM:SS``, for narrow columns."""
    if timestamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(timestamp))


def compact_json(value: Any) -> str:
    """JSON on one line, for cells and key-value blocks."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _fit(widths: list[int], floors: list[int], budget: int) -> list[int]:
    """Shrink the widest columns, one character at a time, until they fit ``budget``."""
    widths = list(widths)
    excess = sum(widths) - budget
    while excess > 0:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int = DEFAULT_WIDTH,
    right: Iterable[int] = (),
    fixed: Iterable[int] = (),
    indent: int = 0,
) -> str:
    """A text table that fits ``width`` columns; ``right`` lists right-aligned columns.

    Cells are converted with ``str``; ``None`` shows as ``-``. Columns wider
    than their share are cut with an ellipsis (the widest first), except the
    ``fixed`` ones (ids, numbers), which are never cut.
    """
    cells = [["-" if c is None else one_line(c) for c in row] for row in rows]
    natural = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            natural[i] = max(natural[i], len(cell))
    keep = set(fixed)
    floors = [n if i in keep else min(n, MIN_COLUMN) for i, n in enumerate(natural)]
    budget = width - indent - COLUMN_GAP * (len(headers) - 1)
    widths = _fit(natural, floors, budget)
    aligned = set(right)
    pad = " " * indent
    gap = " " * COLUMN_GAP

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            text = cut(value, widths[i])
            parts.append(text.rjust(widths[i]) if i in aligned else text.ljust(widths[i]))
        return (pad + gap.join(parts)).rstrip()

    out = [line(list(headers))]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def key_values(
    pairs: Iterable[tuple[str, Any]], *, width: int = DEFAULT_WIDTH, indent: int = 2
) -> str:
    """Aligned ``key  value`` lines; long values wrap on words under the value column."""
    items = [(k, "-" if v is None else str(v)) for k, v in pairs]
    if not items:
        return ""
    key_width = max(len(k) for k, _ in items)
    room = max(20, width - indent - key_width - COLUMN_GAP)
    lead = " " * (indent + key_width + COLUMN_GAP)
    out = []
    for key, value in items:
        # Wrap on spaces; only a word longer than the whole line is broken.
        chunks = textwrap.wrap(
            value, room, break_on_hyphens=False, replace_whitespace=True, drop_whitespace=True
        ) or [""]
        out.append(" " * indent + key.ljust(key_width) + " " * COLUMN_GAP + chunks[0])
        out.extend(lead + chunk for chunk in chunks[1:])
    return "\n".join(line.rstrip() for line in out)


def counts_line(counts: Mapping[str, int | None]) -> str:
    """``waiting 3   claimed 1   complete 12`` from an ordered mapping."""
    return "   ".join(f"{name} {'-' if n is None else n}" for name, n in counts.items())
