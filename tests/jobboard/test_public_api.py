"""The public API of ``jobboard`` and ``jobboard.admin``: complete, importable, documented.

Every name of a package's ``__all__`` must be importable from the package
root and documented: classes and functions by their own docstring, constants
and type aliases by a ``#:`` comment on the line above their definition.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jobboard
import jobboard.admin
from jobboard import errors, model

PACKAGES = (jobboard, jobboard.admin)
SOURCES = sorted(Path(jobboard.__file__).parent.rglob("*.py"))


def _documented_constant(name: str) -> bool:
    """Whether some module defines ``name`` right below a ``#:`` comment."""
    definition = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=", re.M)
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if definition.match(line) and index and lines[index - 1].startswith("#:"):
                return True
    return False


@pytest.mark.parametrize(
    ("package", "name"), [(p, n) for p in PACKAGES for n in p.__all__], ids=str
)
def test_every_public_name_is_importable_from_the_root_and_documented(package, name):
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import {name}", namespace)  # the import a user writes
    value = namespace[name]
    if inspect.isclass(value):  # its own docstring, not one inherited
        assert (vars(value).get("__doc__") or "").strip(), f"{name} has no docstring"
    elif inspect.isroutine(value):
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    else:
        assert _documented_constant(name), f"{package.__name__}.{name} needs a #: comment"


def test_all_lists_each_name_once():
    for package in PACKAGES:
        assert len(package.__all__) == len(set(package.__all__)), package.__name__


def test_the_root_exports_the_whole_model_and_every_error():
    board_errors = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.BoardError)
    }
    missing = (set(model.__all__) | board_errors | {"JobBoard", "connect"}) - set(jobboard.__all__)
    assert missing == set()


def test_importing_the_root_loads_no_backend_and_no_admin_tool():
    """Backends (and their client libraries) load only when a URL names them."""
    script = (
        "import sys, jobboard\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in"
        " ('redis', 'kazoo', 'sqlite3', 'conductor')"
        " or m.startswith(('jobboard.redis', 'jobboard.zookeeper', 'jobboard.sqlite',"
        " 'jobboard.memory', 'jobboard.admin'))]\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    "module", ["jobboard.redis", "jobboard.zookeeper", "jobboard.sqlite", "jobboard.memory"]
)
def test_each_backend_package_exports_its_board(module):
    package = importlib.import_module(module)
    (name,) = package.__all__
    board = getattr(package, name)
    assert issubclass(board, jobboard.JobBoard) and board.__doc__
    assert jobboard.backend_for(board.scheme) is board
