"""Start-up cost of the ``jobboard`` command, and what a terminal-table library would add.

Every ``jobboard list`` / ``show`` / ``claims`` pays the import of the admin
package before it reads the board. This prints the median wall time of
``python -c "import jobboard.admin.cli"`` and of ``jobboard --help`` in fresh
processes, and, for a module given with ``--extra`` (``rich.console,rich.table,rich.live``
by default) when it is importable, the median import time it would add.

Examples::

    python bench/admin_startup.py
    python bench/admin_startup.py --runs 20 --python /path/to/other/venv/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(python: str, code: list[str], runs: int) -> float | None:
    """Median wall time of ``python CODE...`` in fresh processes; None if it fails."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([python, *code], cwd=ROOT, capture_output=True)
        if done.returncode != 0:
            return None
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure with")
    parser.add_argument("--extra", default="rich.console,rich.table,rich.live")
    args = parser.parse_args()
    base = median_seconds(args.python, ["-c", "pass"], args.runs)
    admin = median_seconds(args.python, ["-c", "import jobboard.admin.cli"], args.runs)
    helped = median_seconds(args.python, ["-m", "jobboard", "--help"], args.runs)
    modules = ", ".join(args.extra.split(","))
    extra = median_seconds(args.python, ["-c", f"import {modules}"], args.runs)
    assert base is not None
    print(f"python start-up           {base * 1000:7.1f} ms")
    for label, value in (("import jobboard.admin.cli", admin), ("jobboard --help", helped)):
        shown = "failed" if value is None else f"{(value - base) * 1000:7.1f} ms over start-up"
        print(f"{label:<25} {shown}")
    if extra is None:
        print(f"import {modules}: not installed")
    else:
        print(f"import {modules}: {(extra - base) * 1000:7.1f} ms over start-up")


if __name__ == "__main__":
    main()
