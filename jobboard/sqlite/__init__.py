"""The SQLite board (``sqlite:///path``): see :mod:`jobboard.sqlite.board`."""

from jobboard.sqlite.board import SqliteBoard

__all__ = ["SqliteBoard"]
