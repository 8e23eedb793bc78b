"""Expressions: plain JMESPath over message.to_dict(), checked when compiled."""

from __future__ import annotations

import time

import pytest

from integrator.message import Message
from integrator.transforms.expressions import ExpressionError, compile_expression, is_truthy

PUSH = Message(
    body={"repository": {"full_name": "a/b"}, "commits": [1, 2, 3], "user": {"name": "Ada"}},
    headers={"x-github-event": "push"},
    attributes={"path": "/hooks/github"},
    id="m-1",
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("body.repository.full_name", "a/b"),
        ("headers.\"x-github-event\" == 'push'", True),
        ("length(body.commits)", 3),
        ("attributes.path", "/hooks/github"),
        ("id", "m-1"),
        ("body.missing.deeper", None),
        ("lower(body.user.name)", "ada"),
        ("upper(body.user.name)", "ADA"),
    ],
)
def test_evaluates_against_the_message_view(source: str, expected: object) -> None:
    assert compile_expression(source).evaluate(PUSH) == expected


def test_now_is_the_current_epoch_time() -> None:
    before = time.time()
    value = compile_expression("now()").evaluate(PUSH)
    assert before <= value <= time.time()


def test_a_syntax_error_reports_jmespath_parse_error() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("body.")
    assert "'body.'" in str(caught.value)
    assert "Parse error at column 5" in str(caught.value)


def test_an_unknown_function_fails_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match=r"unknown function lowr\(\)"):
        compile_expression("lowr(body.user.name)")


def test_a_wrong_argument_count_fails_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match=r"lower\(\) takes 1 argument, got 2"):
        compile_expression("lower(body.a, body.b)")


def test_an_empty_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="cannot be empty"):
        compile_expression("  ")


def test_expression_errors_are_value_errors_for_the_config_loader() -> None:
    with pytest.raises(ValueError):
        compile_expression("a[")


def test_a_type_error_at_evaluation_is_an_expression_error() -> None:
    expression = compile_expression("length(body.repository.missing)")
    with pytest.raises(ExpressionError, match="invalid type"):
        expression.evaluate(PUSH)


@pytest.mark.parametrize(
    ("value", "truthy"),
    [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True),
     (True, True), ("x", True), ([0], True), ({"a": None}, True)],
)  # fmt: skip
def test_truthiness_follows_jmespath(value: object, truthy: bool) -> None:
    assert is_truthy(value) is truthy


def test_evaluating_a_message_reads_its_fields_without_building_its_view(monkeypatch) -> None:
    def no_view(self: Message) -> dict[str, object]:
        raise AssertionError("to_dict() was called")

    monkeypatch.setattr(Message, "to_dict", no_view)
    assert compile_expression("headers.\"x-github-event\" == 'push'").evaluate(PUSH) is True


def test_an_expression_outside_the_fast_path_sees_the_message_view() -> None:
    assert compile_expression("body.commits[?@ > `1`]").evaluate(PUSH) == [2, 3]
