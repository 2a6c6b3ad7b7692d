"""The shape of the ``jobboard`` package: layers, no import circle, small modules.

Read from the source with :mod:`ast` (imports inside functions count too), so
a forbidden or circular import fails here before it surprises anyone at run
time; each module is also imported on its own, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jobboard"
#: Largest module and class, in lines.
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
#: The contract and what it is made of: they know no backend and no admin tool.
CORE = {
    "jobboard",
    "jobboard.base",
    "jobboard.changes",
    "jobboard.checks",
    "jobboard.claimview",
    "jobboard.errors",
    "jobboard.model",
    "jobboard.producers",
    "jobboard.urls",
}
BACKENDS = ("jobboard.memory", "jobboard.redis", "jobboard.sqlite", "jobboard.zookeeper")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES or m.split(".")[0] == "conductor"} - {name}


GRAPH = {name: _imports(name) for name in MODULES}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges(sources: set[str] | None = None) -> list[tuple[str, str]]:
    return [
        (a, b) for a, targets in GRAPH.items() for b in targets if sources is None or a in sources
    ]


def test_the_contract_imports_no_backend_and_no_admin_tool():
    bad = [
        (a, b)
        for a, b in _edges(CORE)
        if any(_within(b, p) for p in (*BACKENDS, "jobboard.admin"))
    ]
    assert bad == []


def test_backends_never_import_the_admin_tool_nor_each_other():
    bad = []
    for a, b in _edges():
        home = next((p for p in BACKENDS if _within(a, p)), None)
        if home is None:
            continue
        if _within(b, "jobboard.admin") or any(_within(b, p) and p != home for p in BACKENDS):
            bad.append((a, b))
    assert bad == []


def test_the_admin_tool_uses_the_contract_not_a_backend_inside():
    inside = [
        (a, b)
        for a, b in _edges()
        if _within(a, "jobboard.admin") and any(_within(b, p + ".") for p in BACKENDS)
    ]
    assert inside == []


def test_jobboard_never_imports_conductor():
    assert [(a, b) for a, b in _edges() if b.split(".")[0] == "conductor"] == []


def test_no_import_circle():
    """Depth-first search for a cycle; a package's own ``__init__`` re-exporting
    its submodules is not an edge back (Python imports the package first)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target not in MODULES or _within(node, target):
                continue  # a submodule importing its own package's names
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if state.get(target) is None:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in MODULES:
        if state.get(name) is None:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_on_its_own():
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'jobboard' or m.startswith('jobboard.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {err!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_classes_stay_small(name):
    path = MODULES[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: split it by responsibility"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{path}: class {node.name} has {size} lines"
