"""Small tasks and helpers shared by the engine tests."""

from __future__ import annotations

import re
import threading
from typing import Any

from conductor.task import Task

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ADDRESS = re.compile(r"0x[0-9a-f]+")


def mask(text: str) -> str:
    """Replace uuids and object addresses by ``...``."""
    return ADDRESS.sub("...", UUID.sub("...", text))


class Recorder:
    """A thread-safe log of what tasks did, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def add(self, event: str) -> None:
        with self._lock:
            self.events.append(event)


class Step(Task):
    """Records its execution and revert; returns ``value`` (default: its name)."""

    def __init__(self, name: str, log: Recorder, value: Any = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.log = log
        self.value = name if value is None else value

    def execute(self) -> Any:
        self.log.add(f"{self.name}.execute")
        return self.value

    def revert(self, result: Any, flow_failures: dict[str, Any]) -> None:
        self.log.add(f"{self.name}.revert")


class Boom(Step):
    """Always fails with ``ValueError(message)``; records its revert."""

    def __init__(self, name: str, log: Recorder, message: str = "boom", **kwargs: Any):
        super().__init__(name, log, **kwargs)
        self.message = message

    def execute(self) -> None:
        self.log.add(f"{self.name}.execute")
        raise ValueError(self.message)


class Flaky(Task):
    """Fails its first ``failures`` executions, then returns ``value``."""

    def __init__(self, name: str, failures: int, value: Any = "ok", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.failures = failures
        self.value = value
        self.calls = 0
        self._lock = threading.Lock()

    def execute(self) -> Any:
        with self._lock:
            self.calls += 1
            calls = self.calls
        if calls <= self.failures:
            raise ConnectionError(f"attempt {calls} failed")
        return self.value
