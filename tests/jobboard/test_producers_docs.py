"""Every example of docs/producers.md runs, on the memory board and on an SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobboard.memory import MemoryBoard
from tests.fixtures import sqlite_url

DOC = Path(__file__).resolve().parents[2] / "docs" / "producers.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
MEMORY_URL = "memory://producers"


def test_the_page_has_one_example_per_feature():
    assert len(EXAMPLES) == 7
    assert all(MEMORY_URL in example for example in EXAMPLES)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(index, backend, tmp_path):
    source = EXAMPLES[index]
    if backend == "sqlite":
        source = source.replace(MEMORY_URL, sqlite_url(tmp_path / "board.db"))
    try:
        exec(compile(source, f"{DOC.name}[{index}]", "exec"), {"__name__": "example"})
    finally:
        MemoryBoard.reset("producers")
