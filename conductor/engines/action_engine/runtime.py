"""Per-atom runtime state and the execution of one atom.

The compiler turns every atom into an :class:`AtomRuntime`: its storage
detail plus everything needed to run it without further lookups (argument
bindings, graph edges, callables, converters).  :func:`execute_atom` runs one
atom's ``execute`` and returns an outcome tuple; it is the only code that
runs on pool threads, and it never touches engine state other than reading
the results of atoms that finished before it was submitted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from conductor import states
from conductor.atom import ArgSpec, Atom
from conductor.context import reset_task, set_task
from conductor.converters import ConverterRegister
from conductor.exceptions import NotFound, ResultNotSerializable, TaskTimeout
from conductor.failure import Failure
from conductor.records import (
    HOSTNAME,
    ExceptionInfo,
    ExecutionInfo,
    TaskInfo,
    TaskResult,
    merge_execution,
)
from conductor.storage import AtomDetail, extract

# A binding is (param, kind, ref, name, key, index, optional): ``name`` is the
# storage name read; for ATOM, ``key``/``index`` pick the output of ``ref``.
CONST = 0  # ref: the injected value
STORE = 1  # ref: unused (the store is read by name)
ATOM = 2  # ref: the providing AtomRuntime

Binding = tuple[str, int, Any, str, "str | None", int, bool]
#: ``(atom, ok, result or Failure, record)``; ``ok`` is ``None`` when the atom was not started.
Outcome = tuple["AtomRuntime", "bool | None", Any, TaskInfo]

_now = time.time

_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uuid() -> str:
    """A random (version 4) UUID string naming a flow or an atom in one engine.

    An identifier, not a secret: drawn from :mod:`random` (seeded from the OS,
    reseeded in a forked child), about five times cheaper than
    ``str(uuid.uuid4())``, which reads the OS's random source each time and
    costs several microseconds per atom of every job.
    """
    h = "%032x" % ((random.getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Decider:
    """A graph-flow link condition: once ``sources`` are done, keep or skip ``targets``."""

    __slots__ = ("function", "sources", "targets", "decided")

    def __init__(self, function: Callable[[Mapping[str, Any]], bool]):
        self.function = function
        self.sources: tuple[AtomRuntime, ...] = ()
        self.targets: tuple[AtomRuntime, ...] = ()
        self.decided = False


class AtomRuntime(AtomDetail):
    """An atom compiled for one engine: storage detail plus execution plan."""

    __slots__ = (
        "index",
        "atom",
        "is_retry",
        "name_key",
        "uuid_key",
        "exec_fn",
        "revert_fn",
        "exec_spec",
        "exec_bindings",
        "all_bindings",
        "preds",
        "succs",
        "waiting",
        "scope",
        "members",
        "deciders",
        "pre_converters",
        "post_converters",
        "policy",
        "retry_state",
        "timeout",
        "attempt",
        "provides",
        "provides_single",
    )

    def __init__(self, index: int, atom: Atom, uuid: str, scope: AtomRuntime | None):
        super().__init__(atom.name, uuid, atom.kind)
        self.index = index
        self.atom = atom
        self.is_retry = atom.kind == "retry"
        self.name_key = f"{atom.kind}_name"
        self.uuid_key = f"{atom.kind}_uuid"
        self.exec_fn, self.revert_fn = atom.engine_callables()  # type: ignore[attr-defined]
        self.exec_spec: ArgSpec = atom.arg_spec("execute")
        self.exec_bindings: tuple[Binding, ...] = ()
        self.all_bindings: tuple[Binding, ...] = ()
        self.preds: list[AtomRuntime] = []
        self.succs: list[AtomRuntime] = []
        self.waiting = 0
        self.scope = scope
        self.members: tuple[AtomRuntime, ...] = ()
        self.deciders: tuple[Decider, ...] = ()
        register: ConverterRegister | None = getattr(atom, "converters", None)
        self.pre_converters = register if register and register.get_visit_order(True) else None
        self.post_converters = register if register and register.get_visit_order(False) else None
        self.policy = getattr(atom, "retry_policy", None)
        self.retry_state: Any = None
        self.timeout: float | None = getattr(atom, "timeout", None)
        self.attempt = 0
        self.provides = atom.provides
        self.provides_single = atom.provides_single
        if self.is_retry:
            from conductor.retry import History

            self.history = History()

    def reset(self) -> None:
        """Forget a run's results (before a retry controller runs its subflow again)."""
        self.result = None
        self.failure = None
        self.revert_result = None
        self.revert_failure = None
        self.args = None
        self.retry_state = None
        if self.is_retry:
            from conductor.retry import History

            self.history = History()

    def __repr__(self) -> str:
        return f"<AtomRuntime {self.name!r} {self.state}>"


def resolve(
    rt: AtomRuntime, values: Mapping[str, Any], bindings: tuple[Binding, ...]
) -> dict[str, Any]:
    """The arguments of ``rt`` from the store and the results of earlier atoms."""
    kwargs: dict[str, Any] = {}
    for param, kind, ref, name, key, index, optional in bindings:
        if kind == ATOM:
            if ref.state == states.SUCCESS:
                kwargs[param] = extract(ref.result, key, index, ref.name)
            elif name in values:
                kwargs[param] = values[name]
            elif not optional:
                raise NotFound(
                    f"{rt.kind} {rt.name!r} needs {name!r} from {ref.name!r}, "
                    f"which is {ref.state} and provided nothing"
                )
        elif kind == STORE:
            if name in values:
                kwargs[param] = values[name]
            elif not optional:
                raise NotFound(f"{rt.kind} {rt.name!r} needs {name!r}, which is not in the store")
        else:
            kwargs[param] = ref
    return kwargs


def _check_outputs(rt: AtomRuntime, result: Any) -> None:
    names = rt.provides
    if isinstance(result, Mapping):
        absent = [n for n in names if n not in result]
        if absent:
            raise NotFound(
                f"{rt.kind} {rt.name!r} declares outputs {names!r} but its result lacks "
                f"{', '.join(map(repr, absent))}"
            )
        return
    if (
        isinstance(result, str | bytes)
        or not hasattr(result, "__len__")
        or len(result) != len(names)
    ):
        raise TypeError(
            f"{rt.kind} {rt.name!r} declares outputs {names!r}: its result must be a mapping with "
            f"those keys or a sequence of {len(names)} values, got {type(result).__name__}"
        )


def _post_convert(rt: AtomRuntime, kwargs: dict[str, Any], result: Any) -> Any:
    register = rt.post_converters
    assert register is not None
    names = rt.provides
    if rt.provides_single:
        outputs = {names[0]: result}
    elif names:
        outputs = {n: extract(result, n, i, rt.name) for i, n in enumerate(names)}
    else:
        outputs = {}
    bag = register.apply({**kwargs, **outputs}, False, rt.name)
    if rt.provides_single:
        return bag[names[0]]
    if names:
        return {n: bag[n] for n in names}
    return result


_JSON = json.JSONEncoder(allow_nan=False)
_PLAIN = frozenset((type(None), str, int, bool))


def _check_json(rt: AtomRuntime, result: Any) -> None:
    if type(result) in _PLAIN:
        return
    try:
        _JSON.encode(result)
    except (TypeError, ValueError) as err:
        raise ResultNotSerializable(
            f"{rt.kind} {rt.name!r} returned a result that cannot be saved as JSON "
            f"({type(err).__name__}: {err}); job progress only holds JSON values"
        ) from err


def call_with_timeout(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float, name: str
) -> Any:
    """Run ``fn`` on a helper thread; raise :class:`TaskTimeout` (abandoning it) after ``timeout``."""
    import contextvars

    box: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, fn(*args, **kwargs)))
        except BaseException as err:  # handed back to the engine thread below
            box.append((False, err))
        finally:
            done.set()

    ctx = contextvars.copy_context()
    thread = threading.Thread(
        target=ctx.run, args=(target,), name=f"conductor-task-{name}", daemon=True
    )
    thread.start()
    if not done.wait(timeout):
        raise TaskTimeout(f"task {name!r} did not finish within its {timeout:g} s timeout")
    ok, value = box[0]
    if ok:
        return value
    raise value


def execute_atom(
    rt: AtomRuntime,
    values: Mapping[str, Any],
    submit_time: float,
    json_only: bool,
    may_start: Callable[[str], bool] | None = None,
) -> Outcome:
    """Run ``rt``'s execute with its execution record; never raises an ``Exception``.

    ``may_start(name)`` is asked right before ``execute``: when it says no,
    nothing runs and the outcome's ``ok`` is ``None``.  A task returning a
    :class:`~conductor.records.TaskResult` gives its value as the result and
    its own execution record.
    """
    start = _now()
    info = ExecutionInfo(HOSTNAME, start, input_transform_start_time=start)
    record = TaskInfo(
        rt.uuid,
        rt.name,
        [p.uuid for p in rt.parents],
        submit_time,
        execution=info,
        attempt=rt.attempt,
    )
    try:
        kwargs = resolve(rt, values, rt.exec_bindings)
        if rt.pre_converters is not None:
            kwargs = rt.exec_spec.select(rt.pre_converters.apply(kwargs, True, rt.name))
        rt.args = kwargs
        if may_start is not None and not may_start(rt.name):
            return rt, None, None, record
        info.input_transform_end_time = info.task_start_time = _now()
        task_token = set_task(rt.name)
        try:
            if rt.is_retry:
                result = rt.exec_fn(rt.history, **kwargs)
            elif rt.timeout is not None:
                result = call_with_timeout(rt.exec_fn, (), kwargs, rt.timeout, rt.name)
            else:
                result = rt.exec_fn(**kwargs)
        finally:
            reset_task(task_token)
        info.task_end_time = info.result_transform_start_time = _now()
        reported = None
        if isinstance(result, TaskResult):
            reported, result = result.info, result.value
        if rt.post_converters is not None:
            result = _post_convert(rt, kwargs, result)
        if rt.provides and not rt.provides_single:
            _check_outputs(rt, result)
        if json_only:
            _check_json(rt, result)
        info.result_transform_end_time = info.execution_end_time = _now()
        if reported is not None:
            record.execution = merge_execution(info, reported)
        record.success = True
        return rt, True, result, record
    except Exception as err:
        info.execution_end_time = _now()
        failure = Failure.from_exception(err)
        record.success = False
        record.exception = ExceptionInfo(
            failure.exception_type_name, failure.exception_str, failure.traceback_str
        )
        return rt, False, failure, record
