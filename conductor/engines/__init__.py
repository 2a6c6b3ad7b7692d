"""Loading and running flows: ``engines.load(flow, store)`` then ``engine.run()``.

Example::

    from conductor import engines
    from conductor.patterns import linear_flow

    engine = engines.load(linear_flow.Flow("f").add(...), store={"x": 1})
    engine.run()
    engine.storage.fetch("y")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conductor.engines.action_engine.engine import ActionEngine, SerialActionEngine
from conductor.engines.action_engine.parallel import ParallelActionEngine
from conductor.flow import Flow
from conductor.storage import ProgressBackend

__all__ = ["ENGINES", "ActionEngine", "load", "run"]

#: Engine names accepted by :func:`load`.
ENGINES: Mapping[str, type[ActionEngine]] = {
    "serial": SerialActionEngine,
    "parallel": ParallelActionEngine,
}


def load(
    flow: Flow,
    store: Mapping[str, Any] | None = None,
    engine: str = "serial",
    *,
    progress: ProgressBackend | None = None,
    context: Mapping[str, Any] | None = None,
    json_results: bool | None = None,
    **options: Any,
) -> ActionEngine:
    """Compile ``flow`` and return an engine ready to ``run()`` it.

    ``store`` holds the initial named values.  ``engine`` is ``"serial"`` (one
    atom at a time on the calling thread) or ``"parallel"`` (a thread pool;
    options ``max_workers`` and ``executor``).  ``progress`` saves each
    finished atom and resumes from what it already holds; ``context`` is the
    mapping :func:`conductor.context.current` returns inside tasks;
    ``json_results`` (default: true when ``progress`` is given) fails tasks
    whose results are not JSON.

    Raises :class:`~conductor.exceptions.InvalidFlow` (duplicate names,
    cycles, or :class:`~conductor.exceptions.MissingDependencies` listing every
    input nobody provides) and converter registration errors.
    """
    try:
        engine_cls = ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}") from None
    return engine_cls(
        flow, store, progress=progress, context=context, json_results=json_results, **options
    )


def run(
    flow: Flow,
    store: Mapping[str, Any] | None = None,
    engine: str = "serial",
    **options: Any,
) -> dict[str, Any]:
    """Load and run ``flow``; returns every named value (``storage.fetch_all()``)."""
    eng = load(flow, store, engine, **options)
    eng.run()
    return eng.storage.fetch_all()
