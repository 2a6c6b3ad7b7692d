"""The package root lists the public API: every name imports, is documented, and none is missing."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import conductor

API_DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
_NOT_API = {"annotations", "TYPE_CHECKING", "Any"}


def test_every_public_name_imports_from_the_root_and_has_a_docstring():
    for name in conductor.__all__:
        obj = getattr(conductor, name)
        assert (obj.__doc__ or "").strip(), f"conductor.{name} has no docstring"


def test_every_public_name_is_on_the_api_page():
    missing = [n for n in conductor.__all__ if not re.search(rf"`[^`]*\b{n}\b[^`]*`", API_DOC)]
    assert missing == []


def test_no_public_class_or_function_at_the_root_is_left_out_of_all():
    public = {
        name
        for name, obj in vars(conductor).items()
        if not name.startswith("_") and name not in _NOT_API and not isinstance(obj, types.ModuleType)
    }
    assert public - set(conductor.__all__) == set()
    assert len(conductor.__all__) == len(set(conductor.__all__))


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from conductor import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(conductor.__all__)


def test_importing_the_root_does_not_load_the_board_code():
    code = "import sys, conductor; print('jobboard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
