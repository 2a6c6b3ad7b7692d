"""Engine test fixtures: engines of both kinds, with every transition checked for legality."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conductor import engines, states
from conductor.engines.action_engine.engine import ActionEngine
from conductor.listeners.capturing import CaptureListener

_FLOW_OK = states.flow_transitions()
_ATOM_OK = states.atom_transitions()


class Transitions(CaptureListener):
    """Captures ``(kind, name, old, new)`` of every transition."""

    def _format_capture(self, kind: str, state: str, details: dict[str, Any]) -> Any:
        if kind == self.FLOW:
            name = details["flow_name"]
        else:
            name = details.get("task_name", details.get("retry_name"))
        return (kind, name, details["old_state"], state)

    def of(self, name: str) -> list[str]:
        """The states atom (or flow) ``name`` moved into, in order."""
        return [new for _, n, _, new in self.values if n == name]

    def illegal(self) -> list[tuple[str, str, str, str]]:
        return [
            v
            for v in self.values
            if (v[2], v[3]) not in (_FLOW_OK if v[0] == self.FLOW else _ATOM_OK)
        ]


@pytest.fixture(params=["serial", "parallel"])
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per engine."""
    return request.param


@pytest.fixture
def load(engine_name: str) -> Iterator[Callable[..., tuple[ActionEngine, Transitions]]]:
    """``load(flow, store, **options) -> (engine, transitions)``; checks legality at teardown."""
    made: list[Transitions] = []

    def _load(flow: Any, store: Any = None, **options: Any) -> tuple[ActionEngine, Transitions]:
        if engine_name == "parallel":
            options.setdefault("max_workers", 4)
        eng = engines.load(flow, store, engine=engine_name, **options)
        capture = Transitions(eng)
        capture.register()
        made.append(capture)
        return eng, capture

    yield _load
    for capture in made:
        assert capture.illegal() == []
