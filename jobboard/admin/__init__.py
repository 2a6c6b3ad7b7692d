"""The ``jobboard`` admin command (also ``python -m jobboard``).

It inspects and steers a board through the contract only (never a backend's
insides): :mod:`~jobboard.admin.cli` parses and dispatches,
:mod:`~jobboard.admin.listings` holds the read-only commands,
:mod:`~jobboard.admin.operations` the ones that change the board,
:mod:`~jobboard.admin.watch` the live view, and :mod:`~jobboard.admin.render`
(with :mod:`~jobboard.admin.records` and :mod:`~jobboard.admin.text`) what
they print.
"""

from jobboard.admin.cli import (
    ENV_BOARD,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Watch,
    build_parser,
    main,
    parse_duration,
)

__all__ = [
    # the command
    "main",
    "build_parser",
    "parse_duration",
    "ENV_BOARD",
    # exit codes
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_UNAVAILABLE",
    "EXIT_INTERRUPTED",
    # the live view
    "Watch",
]
