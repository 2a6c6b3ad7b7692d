"""Argument converters: ordering, registration errors, and running around tasks."""

from __future__ import annotations

import pytest

from conductor import engines
from conductor.converters import (
    ArgumentConversionException,
    CircularDependencyException,
    ConverterRegister,
    MissingConverterDependencyError,
    NameDuplicationException,
    SingleArgDecorator,
)
from conductor.exceptions import ConverterRegistrationException, ExecutionFailure
from conductor.patterns import linear_flow
from conductor.task import Task, task


def test_converters_run_in_dependency_order():
    register = ConverterRegister()
    calls = []

    @register.register("second")
    def third(values):
        calls.append("third")
        return {"n": values["n"] * 10}

    @register.register("first")
    def second(values):
        calls.append("second")
        return {"n": values["n"] + 1}

    @register.register
    def first(values):
        calls.append("first")

    @register.register(False)
    def after(values):
        return {"n": -values["n"]}

    assert register.get_visit_order() == ["first", "second", "third"]
    assert register.get_visit_order(pre_task=False) == ["after"]
    assert register.convert(n=1, other="kept") == {"n": 20, "other": "kept"}
    assert calls == ["first", "second", "third"]
    assert register.convert(pre_task=False, n=3) == {"n": -3}
    assert len(register) == 4 and "first" in register


def test_registration_errors_are_specific():
    register = ConverterRegister()

    @register.register
    def conv(values):
        return None

    with pytest.raises(NameDuplicationException, match="'conv'"):
        register.register(conv)

    def selfish(values):
        return None

    with pytest.raises(CircularDependencyException, match="depends on itself"):
        register.register(selfish, "selfish")

    def a(values):
        return None

    def b(values):
        return None

    register.register(a, "b")  # b is not registered yet: fine for now
    with pytest.raises(MissingConverterDependencyError, match="'a' needs 'b'"):
        register.get_visit_order()
    with pytest.raises(CircularDependencyException, match="a -> b -> a|b -> a -> b"):
        register.register(b, "a")
    assert "b" not in register
    with pytest.raises(ConverterRegistrationException, match="at most one function"):
        register.register(a, b)
    assert issubclass(MissingConverterDependencyError, ConverterRegistrationException)


def test_single_arg_decorator_converts_present_arguments_only():
    register = ConverterRegister()

    @register.register
    @SingleArgDecorator("message", "title")
    def yell_loud(value):
        return value.upper()

    assert register.convert(message="hi", other="x") == {"message": "HI", "other": "x"}
    assert yell_loud.__name__ == "yell_loud"
    with pytest.raises(ConverterRegistrationException):
        SingleArgDecorator()


def test_converters_registered_for_a_task_run_around_it(engine_name):
    @task(provides="cake")
    def bake(message, layers):
        return f"{message} x{layers}"

    @ConverterRegister.register_for_task(bake)
    @SingleArgDecorator("message")
    def yell_loud(value):
        return value.upper()

    @ConverterRegister.register_for_task(bake, True, "yell_loud")
    def punctuate(values):
        return {"message": values["message"] + "!", "ignored_extra": 1}

    @ConverterRegister.register_for_task(bake, False)
    def box(values):
        return {"cake": f"[{values['cake']}]"}

    eng = engines.load(
        linear_flow.Flow("f").add(bake), {"message": "happy", "layers": 2}, engine=engine_name
    )
    eng.run()
    assert eng.storage.fetch("cake") == "[HAPPY! x2]"
    assert eng.storage.get_atom_inputs("bake") == {"message": "HAPPY!", "layers": 2}
    record = eng.storage.get_execution("bake").execution
    assert record.input_transform_start_time <= record.input_transform_end_time
    assert bake("plain", 1) == "plain x1"  # a direct call skips converters


def test_class_converters_do_not_leak_to_the_base():
    class Base(Task):
        def execute(self, v):
            return v

    class Child(Base):
        pass

    @ConverterRegister.register_for_task(Child)
    @SingleArgDecorator("v")
    def plus_one(value):
        return value + 1

    assert Base.converters is None
    assert engines.run(linear_flow.Flow("f").add(Child(provides="out")), {"v": 1})["out"] == 2
    assert engines.run(linear_flow.Flow("f").add(Base(provides="out")), {"v": 1})["out"] == 1


def test_a_failing_converter_fails_its_task_by_name():
    @task
    def use(n):
        return n

    @ConverterRegister.register_for_task(use)
    @SingleArgDecorator("n")
    def to_int(value):
        return int(value)

    with pytest.raises(ExecutionFailure) as info:
        engines.run(linear_flow.Flow("f").add(use), {"n": "seven"})
    cause = info.value.__cause__
    assert isinstance(cause, ArgumentConversionException)
    assert cause.converter == "to_int" and cause.task_name == "use"
    assert "converter 'to_int' of task 'use' failed: ValueError" in str(info.value)


def test_missing_converter_dependencies_fail_at_load():
    @task
    def use(n):
        return n

    ConverterRegister.register_for_task(use, True, "nowhere")(lambda values: None)
    with pytest.raises(MissingConverterDependencyError, match="needs 'nowhere'"):
        engines.load(linear_flow.Flow("f").add(use), {"n": 1})
