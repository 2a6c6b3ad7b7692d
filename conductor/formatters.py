"""Turning a failure into log-ready text that places it in its flow."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from conductor.failure import ExcInfo, Failure

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["FailureFormatter"]

_HIDDEN = "<hidden>"


class FailureFormatter:
    """Formats a failure together with the atoms it concerns and their inputs.

    Inputs and results of the atoms named in ``hide_inputs_outputs_of`` are
    shown as ``<hidden>`` (for secrets and bulky values).
    """

    def __init__(self, engine: ActionEngine, hide_inputs_outputs_of: Iterable[str] = ()):
        self._engine = engine
        self._hidden = frozenset(hide_inputs_outputs_of)

    def format(
        self, fail: Failure, atom_matcher: Callable[[str], bool]
    ) -> tuple[ExcInfo | None, str]:
        """``(exc_info, details)`` for logging ``fail``.

        ``exc_info`` is the ``(type, value, traceback)`` triple while the
        exception is still known (else ``None``, and ``details`` ends with the
        saved traceback text).  ``details`` describes each atom for which
        ``atom_matcher(name)`` is true: its state, the inputs it ran with and
        the atoms that provided them, with their state and result.
        """
        storage = self._engine.storage
        lines = [f"Failure: {fail.pformat()}"]
        for name in storage.get_atom_names():
            if not atom_matcher(name):
                continue
            lines.append(f"Atom '{name}' ({storage.get_atom_state(name)})")
            inputs = storage.get_atom_inputs(name)
            if inputs is not None:
                lines.append(f"  inputs: {self._show(name, inputs)}")
            for provider in storage.get_atom_providers(name):
                lines.append(
                    f"  provided by '{provider}' ({storage.get_atom_state(provider)}): "
                    f"{self._show(provider, storage.get(provider))}"
                )
        exc_info = fail.exc_info
        if exc_info is None and fail.traceback_str:
            lines.append(fail.traceback_str.rstrip())
        return exc_info, "\n".join(lines)

    def _show(self, name: str, value: object) -> str:
        return _HIDDEN if name in self._hidden else repr(value)
