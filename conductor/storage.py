"""Engine storage and the progress-backend protocol.

:class:`Storage` (``engine.storage``) holds what a run knows: the store given
to ``engines.load``, each atom's state, result or failure, execution record
(:class:`~conductor.records.TaskInfo`) and metadata, and the flow's state.

A :class:`ProgressBackend` makes that survive the process.  After each atom
reaches ``SUCCESS``, ``FAILURE``, ``REVERTED``, ``REVERT_FAILURE`` or
``IGNORE`` the engine calls ``save(atom_name, record)`` with a JSON-ready
record::

    {"state": "SUCCESS",
     "result": <the atom's result, SUCCESS only, else None>,
     "failure": <Failure.to_dict() for FAILURE / REVERT_FAILURE, else None>,
     "execution": <TaskInfo.to_dict() of the last execution, or None>,
     "metadata": {...}}   # atom metadata (e.g. "duration"; "retry_history")

A new engine loaded with the same backend restores every ``SUCCESS`` record
(result, metadata, execution record) and does not run that atom again; every
other atom runs.  If ``save`` raises, the engine stops at once without
reverting anything and ``run()`` raises that very exception: another owner of
the job may resume it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conductor import states
from conductor.exceptions import NotFound
from conductor.records import TaskInfo, TaskResult

if TYPE_CHECKING:
    from conductor.failure import Failure
    from conductor.retry import History

__all__ = ["AtomDetail", "MemoryProgress", "ProgressBackend", "Storage", "extract"]

RETRY_HISTORY_KEY = "retry_history"

_JSON = json.JSONEncoder(allow_nan=False)


@runtime_checkable
class ProgressBackend(Protocol):
    """Where an engine saves per-atom progress and reads it back to resume."""

    def load(self) -> Mapping[str, dict[str, Any]]:
        """Saved records by atom name (empty for a job that never ran)."""
        ...

    def save(self, atom_name: str, record: dict[str, Any]) -> None:
        """Persist one atom's record; raise to stop the engine (e.g. a stale claim)."""
        ...


class MemoryProgress:
    """A progress backend in memory that keeps records as JSON text, as a board would.

    ``saves`` lists ``(atom_name, state)`` in the order they were saved.
    """

    def __init__(self, records: Mapping[str, dict[str, Any]] | None = None):
        self._lock = threading.Lock()
        self._records = {name: json.dumps(rec) for name, rec in (records or {}).items()}
        self.saves: list[tuple[str, str]] = []

    def load(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: json.loads(text) for name, text in self._records.items()}

    def save(self, atom_name: str, record: dict[str, Any]) -> None:
        text = _JSON.encode(record)
        with self._lock:
            self._records[atom_name] = text
            self.saves.append((atom_name, record["state"]))

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """The saved records, decoded."""
        return self.load()


class AtomDetail:
    """What storage knows about one atom in one engine."""

    __slots__ = (
        "name",
        "uuid",
        "kind",
        "state",
        "result",
        "failure",
        "revert_result",
        "revert_failure",
        "execution",
        "metadata",
        "history",
        "seq",
        "args",
        "parents",
    )

    def __init__(self, name: str, uuid: str, kind: str):
        self.name = name
        self.uuid = uuid
        self.kind = kind
        self.state = states.PENDING
        self.result: Any = None
        self.failure: Failure | None = None
        self.revert_result: Any = None
        self.revert_failure: Failure | None = None
        self.execution: TaskInfo | None = None
        self.metadata: dict[str, Any] = {}
        self.history: History | None = None
        #: Order in which atoms finished (reverts go in reverse).
        self.seq = -1
        #: The arguments of the last execution, once resolved.
        self.args: dict[str, Any] | None = None
        #: The atoms whose outputs this one reads.
        self.parents: tuple[AtomDetail, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready progress record of the atom's current state."""
        state = self.state
        failure = self.revert_failure if state == states.REVERT_FAILURE else self.failure
        metadata = dict(self.metadata)
        if self.history is not None:
            metadata[RETRY_HISTORY_KEY] = self.history.to_list()
        return {
            "state": state,
            "result": self.result if state == states.SUCCESS else None,
            "failure": failure.to_dict() if failure is not None and state in _FAILED else None,
            "execution": self.execution.to_dict() if self.execution is not None else None,
            "metadata": metadata,
        }

    def restore(self, record: Mapping[str, Any]) -> bool:
        """Take a saved ``SUCCESS`` record (result, metadata, execution); false otherwise."""
        if record.get("state") != states.SUCCESS:
            return False
        metadata = dict(record.get("metadata") or {})
        history = metadata.pop(RETRY_HISTORY_KEY, None)
        if history is not None and self.history is not None:
            from conductor.retry import History

            self.history = History.from_list(history)
        self.state = states.SUCCESS
        self.result = record.get("result")
        self.metadata.update(metadata)
        execution = record.get("execution")
        if execution:
            self.execution = TaskInfo.from_dict(execution)
            self.uuid = self.execution.task_id
        return True


_FAILED = frozenset((states.FAILURE, states.REVERT_FAILURE))


def extract(result: Any, key: str | None, index: int, owner: str) -> Any:
    """One named output of ``owner``'s result: all of it, by key, or by position."""
    if key is None:
        return result
    if isinstance(result, Mapping):
        try:
            return result[key]
        except KeyError:
            raise NotFound(f"the result of {owner!r} has no output {key!r}") from None
    try:
        return result[index]
    except (IndexError, TypeError, KeyError):
        raise NotFound(
            f"the result of {owner!r} has no output {key!r} (position {index})"
        ) from None


Provider = tuple[AtomDetail, "str | None", int]


class Storage:
    """The values, atom states, results and records of one engine (``engine.storage``)."""

    def __init__(
        self,
        flow_name: str,
        flow_uuid: str,
        store: Mapping[str, Any] | None,
        atoms: Iterable[AtomDetail],
        providers: Mapping[str, Provider],
    ):
        self.flow_name = flow_name
        self.flow_uuid = flow_uuid
        self.flow_state = states.PENDING
        self._values: dict[str, Any] = dict(store or {})
        self._atoms = {a.name: a for a in atoms}
        self._providers = providers
        self._flow_metadata: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def values(self) -> dict[str, Any]:
        """The store (engine-internal: read by argument resolution)."""
        return self._values

    def _atom(self, name: str) -> AtomDetail:
        try:
            return self._atoms[name]
        except KeyError:
            raise NotFound(f"flow {self.flow_name!r} has no atom named {name!r}") from None

    def inject(self, values: Mapping[str, Any]) -> None:
        """Add or replace store values."""
        self._values.update(values)

    def fetch(self, name: str) -> Any:
        """The value named ``name``: the latest atom output of that name, else the store's."""
        provider = self._providers.get(name)
        if provider is not None:
            atom, key, index = provider
            if atom.state == states.SUCCESS:
                return extract(atom.result, key, index, atom.name)
        try:
            return self._values[name]
        except KeyError:
            raise NotFound(f"no value named {name!r} in flow {self.flow_name!r}") from None

    def fetch_all(self) -> dict[str, Any]:
        """Every value available by name (store values and outputs of finished atoms)."""
        result: dict[str, Any] = {}
        for name in (*self._values, *self._providers):
            try:
                result[name] = self.fetch(name)
            except NotFound:
                continue
        return result

    def fetch_outputs(self) -> dict[str, Any]:
        """The values provided by atoms that finished (the flow's outputs, not its inputs)."""
        result: dict[str, Any] = {}
        for name, (atom, key, index) in self._providers.items():
            if atom.state == states.SUCCESS:
                result[name] = extract(atom.result, key, index, atom.name)
        return result

    def get_flow_state(self) -> str:
        """The flow's state."""
        return self.flow_state

    def get_atom_names(self) -> list[str]:
        """Every atom name, in flow order."""
        return list(self._atoms)

    def get_atom_state(self, name: str) -> str:
        """The state of atom ``name``."""
        return self._atom(name).state

    def get_atom_uuid(self, name: str) -> str:
        """The uuid of atom ``name`` in this engine (kept across resumes)."""
        return self._atom(name).uuid

    def get(self, name: str) -> Any:
        """The result of atom ``name`` (its Failure if it failed)."""
        atom = self._atom(name)
        if atom.state == states.FAILURE and atom.failure is not None:
            return atom.failure
        return atom.result

    def get_failures(self) -> dict[str, Failure]:
        """Failures of the atoms currently in ``FAILURE`` or ``REVERT_FAILURE``."""
        out: dict[str, Failure] = {}
        for atom in self._atoms.values():
            if atom.state == states.REVERT_FAILURE and atom.revert_failure is not None:
                out[atom.name] = atom.revert_failure
            elif atom.failure is not None and atom.state in _FAILED:
                out[atom.name] = atom.failure
        return out

    def get_revert_result(self, name: str) -> Any:
        """What atom ``name``'s revert returned (its Failure if it raised)."""
        atom = self._atom(name)
        return atom.revert_failure if atom.revert_failure is not None else atom.revert_result

    def get_atom_inputs(self, name: str) -> dict[str, Any] | None:
        """The arguments atom ``name`` last ran with (``None`` if not run by this engine)."""
        args = self._atom(name).args
        return dict(args) if args is not None else None

    def get_atom_providers(self, name: str) -> list[str]:
        """Names of the atoms whose outputs atom ``name`` reads."""
        return [p.name for p in self._atom(name).parents]

    def get_execution(self, name: str) -> TaskInfo | None:
        """The execution record of atom ``name``'s last execution (``None`` if it never ran)."""
        return self._atom(name).execution

    def get_task_result(self, name: str) -> TaskResult[Any]:
        """Atom ``name``'s result with the execution record of its last run (``NotFound`` if none)."""
        detail = self._atom(name)
        if detail.state != states.SUCCESS or detail.execution is None:
            raise NotFound(f"atom {name!r} has no result (state {detail.state})")
        info = detail.execution.execution
        if info is None:
            raise NotFound(f"atom {name!r} has no execution record")
        return TaskResult(detail.result, info)

    def position(self, name: str) -> tuple[int, int]:
        """``(n, m)``: atom ``name`` is the n-th of the flow's m atoms, in flow order."""
        names = list(self._atoms)
        return names.index(name) + 1, len(names)

    def get_retry_history(self, name: str) -> History:
        """The attempts of retry controller ``name``."""
        history = self._atom(name).history
        if history is None:
            raise NotFound(f"atom {name!r} is not a retry controller")
        return history

    def get_atom_record(self, name: str) -> dict[str, Any]:
        """Atom ``name``'s progress record, as the engine saves it."""
        return self._atom(name).to_record()

    def get_atom_metadata(self, name: str) -> dict[str, Any]:
        """A copy of atom ``name``'s metadata."""
        return dict(self._atom(name).metadata)

    def update_atom_metadata(self, name: str, update: Mapping[str, Any]) -> None:
        """Merge ``update`` into atom ``name``'s metadata (saved with its next record)."""
        atom = self._atom(name)
        with self._lock:
            atom.metadata = {**atom.metadata, **update}

    def get_flow_metadata(self) -> dict[str, Any]:
        """A copy of the flow's metadata (kept in memory only)."""
        return dict(self._flow_metadata)

    def update_flow_metadata(self, update: Mapping[str, Any]) -> None:
        """Merge ``update`` into the flow's metadata."""
        with self._lock:
            self._flow_metadata = {**self._flow_metadata, **update}
