"""The parallel engine: real concurrency, bounded workers, same results as the serial engine."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conductor import engines
from conductor.patterns import graph_flow, linear_flow, unordered_flow
from conductor.task import Task, task


class Meet(Task):
    """Waits at a shared barrier: only passes if ``parties`` tasks run at the same time."""

    def __init__(self, name, barrier, **kwargs):
        super().__init__(name=name, **kwargs)
        self.barrier = barrier

    def execute(self):
        self.barrier.wait(timeout=10)
        return threading.get_ident()


def test_independent_tasks_run_concurrently():
    barrier = threading.Barrier(3)
    flow = unordered_flow.Flow("u").add(*(Meet(f"m{i}", barrier) for i in range(3)))
    eng = engines.load(flow, engine="parallel", max_workers=3)
    eng.run()  # a BrokenBarrierError (timeout) would fail the flow
    threads = {eng.storage.get(f"m{i}") for i in range(3)}
    assert len(threads) == 3
    assert threading.get_ident() not in threads


def test_max_workers_bounds_concurrency():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    ready = threading.Barrier(2)

    class Count(Task):
        def execute(self):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            ready.wait(timeout=10)  # pairs must meet: proves 2 at once
            with lock:
                state["now"] -= 1

    flow = unordered_flow.Flow("u").add(*(Count(name=f"c{i}") for i in range(6)))
    engines.load(flow, engine="parallel", max_workers=2).run()
    assert state["peak"] == 2


def test_an_external_executor_is_used_and_left_open():
    with ThreadPoolExecutor(2, thread_name_prefix="mine") as pool:

        @task(provides="where")
        def where():
            return threading.current_thread().name

        eng = engines.load(linear_flow.Flow("f").add(where), engine="parallel", executor=pool)
        eng.run()
        assert eng.storage.fetch("where").startswith("mine")
        assert pool.submit(lambda: 1).result() == 1


def _diamond():
    @task(provides="a")
    def start(x):
        return x + 1

    @task(provides="b")
    def left(a):
        return a * 2

    @task(provides="c")
    def right(a):
        return a * 3

    @task(provides=("total", "parts"))
    def join(b, c):
        return {"total": b + c, "parts": [b, c]}

    return graph_flow.Flow("diamond").add(join, right, left, start)


def _nested():
    @task(provides="n")
    def seed(x):
        return x

    def adder(i):
        return task(lambda n: n + i, name=f"add{i}", provides=f"v{i}")

    return linear_flow.Flow("nested").add(
        seed, unordered_flow.Flow("fan").add(*(adder(i) for i in range(8)))
    )


@pytest.mark.parametrize("make", [_diamond, _nested])
def test_results_match_the_serial_engine(make):
    serial = engines.run(make(), {"x": 4}, engine="serial")
    parallel = engines.run(make(), {"x": 4}, engine="parallel", max_workers=4)
    assert parallel == serial
    assert len(serial) > 3
