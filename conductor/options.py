"""The options of ``conductor run`` that concern finding things: the board and the flows.

- ``--board-file PATH`` (or ``CONDUCTOR_BOARD_FILE``) reads the board URL, password
  included, from a file, so no secret sits in ``argv`` or the environment.
- ``--path DIR[:DIR...]`` (default ``.``) goes first on ``sys.path`` before
  ``--flows`` modules are imported, so ``conductor run --flows flows`` finds
  ``./flows.py`` as ``python -m`` would.
- every option also comes from a ``CONDUCTOR_*`` variable (see
  :mod:`jobboard.envopts`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping

from jobboard import envopts

__all__ = ["DEFAULT_METRICS_PORT", "ENV_PREFIX", "add_run_options", "board_url", "use_path"]

#: Prefix of the environment variables ``conductor run`` reads.
ENV_PREFIX = "CONDUCTOR"
#: The metrics port of ``--metrics-port`` without a value, and of the deployment kit.
DEFAULT_METRICS_PORT = 9464


def add_run_options(run: argparse.ArgumentParser) -> None:
    """Add ``--board-file`` and ``--path`` to the ``run`` parser."""
    envopts.add_board_file(run)
    run.add_argument(
        "--path",
        default=".",
        metavar="DIR[:DIR...]",
        help="folders put first on sys.path before importing --flows modules (default: .)",
    )


def board_url(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """The board URL from ``--board``, ``--board-file`` or their variables (None: none given)."""
    return envopts.board_url(args, (ENV_PREFIX,), environ)


def use_path(text: str) -> list[str]:
    """Put the folders of a ``--path`` value first on ``sys.path``; returns them, absolute."""
    folders = [os.path.abspath(part) for part in text.split(os.pathsep) if part]
    for folder in reversed(folders):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    importlib.invalidate_caches()
    return folders
