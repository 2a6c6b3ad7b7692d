"""``python -m jobboard``: the admin tool (same as the ``jobboard`` command)."""

from __future__ import annotations

import sys

from jobboard.admin.cli import main

if __name__ == "__main__":
    sys.exit(main())
