"""The notification and listener examples of the reference document, run as documented."""

from __future__ import annotations

from conductor import engines, task
from conductor.listeners import printing
from conductor.patterns import linear_flow
from conductor.types.notifier import ANY

from .helpers import mask


class CatTalk(task.Task):
    def execute(self, meow):
        print(meow)
        return "cat"


class DogTalk(task.Task):
    def execute(self, woof):
        print(woof)
        return "dog"


def test_flow_notifications(capsys):
    def flow_transition(state, details):
        print("Flow '%s' transition to state %s" % (details["flow_name"], state))  # noqa: UP031 (as documented)

    flo = linear_flow.Flow("cat-dog").add(CatTalk(), DogTalk(provides="dog"))
    eng = engines.load(flo, store={"meow": "meow", "woof": "woof"})
    eng.notifier.register(ANY, flow_transition)
    eng.run()

    assert capsys.readouterr().out == (
        "Flow 'cat-dog' transition to state RUNNING\n"
        "meow\n"
        "woof\n"
        "Flow 'cat-dog' transition to state SUCCESS\n"
    )


def test_task_notifications(capsys):
    def task_transition(state, details):
        print("Task '%s' transition to state %s" % (details["task_name"], state))  # noqa: UP031 (as documented)

    flo = linear_flow.Flow("cat-dog")
    print(repr(flo.add(CatTalk(), DogTalk(provides="dog"))))
    eng = engines.load(flo, store={"meow": "meow", "woof": "woof"})
    eng.atom_notifier.register(ANY, task_transition)
    eng.run()

    assert mask(capsys.readouterr().out) == (
        "<conductor.patterns.linear_flow.Flow object at ...>\n"
        "Task 'CatTalk' transition to state RUNNING\n"
        "meow\n"
        "Task 'CatTalk' transition to state SUCCESS\n"
        "Task 'DogTalk' transition to state RUNNING\n"
        "woof\n"
        "Task 'DogTalk' transition to state SUCCESS\n"
    )


def test_printing_listener(capsys):
    flo = linear_flow.Flow("cat-dog").add(CatTalk(), DogTalk(provides="dog"))
    eng = engines.load(flo, store={"meow": "meow", "woof": "woof"})
    with printing.PrintingListener(eng):
        eng.run()

    engine = "<conductor.engines.action_engine.engine.SerialActionEngine object at ...>"
    assert mask(capsys.readouterr().out) == (
        f"{engine} has moved flow 'cat-dog' (...) into state 'RUNNING' from state 'PENDING'\n"
        f"{engine} has moved task 'CatTalk' (...) into state 'RUNNING' from state 'PENDING'\n"
        "meow\n"
        f"{engine} has moved task 'CatTalk' (...) into state 'SUCCESS' from state 'RUNNING' "
        "with result 'cat' (failure=False)\n"
        f"{engine} has moved task 'DogTalk' (...) into state 'RUNNING' from state 'PENDING'\n"
        "woof\n"
        f"{engine} has moved task 'DogTalk' (...) into state 'SUCCESS' from state 'RUNNING' "
        "with result 'dog' (failure=False)\n"
        f"{engine} has moved flow 'cat-dog' (...) into state 'SUCCESS' from state 'RUNNING'\n"
    )
    assert eng.storage.fetch("dog") == "dog"


def test_listener_constants_match_the_reference():
    from conductor.listeners import base

    assert base.FINISH_STATES == ("FAILURE", "SUCCESS", "REVERTED", "REVERT_FAILURE")
    assert base.DEFAULT_LISTEN_FOR == ("*",)
