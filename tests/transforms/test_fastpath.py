"""The compiled fast path agrees with JMESPath's own interpreter."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrator.message import Message
from integrator.transforms.expressions import _FUNCTIONS, _OPTIONS, compile_expression
from integrator.transforms.fastpath import compile_fast

EXPRESSIONS = [
    "body",
    "body.a",
    "body.a.b",
    "body.list[0]",
    "body.list[-1].b",
    "headers.\"x-event\" == 'push'",
    "body.a == `1`",
    "body.a != body.b",
    "body.a > `2`",
    "body.a <= body.b",
    "body.a && body.b",
    "body.a || body.b",
    "!body.a",
    "body.a || 'default'",
    "length(body.list)",
    "lower(body.s)",
    "body | a",
    "[body.a, body.b]",
    '{x: body.a, y: headers."x-event"}',
    "@",
    "body.a == `true`",
    "body.a == `0`",
    "body.a == `1.0`",
    "body.a == `2`",
    "body.a == `null`",
    "body.a == `[1]`",
    "body.a == 'x'",
    "'x' == body.a",
    "body.a != 'x'",
    "`2` != body.a",
    "body.a > `1`",
    "body.a < 'b'",
    "body.list[0][1]",
    "body.a.not_null(@, 'x')",
    "body.a.length(@)",
    "body.a.[b, s]",
    "!`0`",
    "!body.list",
]

JSON = st.recursive(
    st.none()
    | st.sampled_from([0, 1, 0.0, 1.0, True, False])  # where JMESPath's == is not Python's
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abs"), inner, max_size=3)
    ),
    max_leaves=8,
)
VIEWS = st.fixed_dictionaries(
    {
        "body": st.one_of(
            JSON,
            st.fixed_dictionaries(
                {"a": JSON, "b": JSON, "s": st.text(max_size=3), "list": st.lists(JSON, max_size=3)}
            ),
        ),
        "headers": st.dictionaries(
            st.sampled_from(["x-event", "y"]), st.sampled_from(["push", "pull"])
        ),
    }
)


ON_MESSAGES = [
    *EXPRESSIONS,
    "id",
    "trace_id == ''",
    "created_at > `0`",
    "attributes.a",
    "nothing",
    "@",
    "@.body.a",
    "keys(@)",
    "[id, body.a]",
    "{i: id}",
    "[0]",
    "id.a",
]
MESSAGES = st.builds(
    Message,
    body=VIEWS.map(lambda view: view["body"]),
    headers=VIEWS.map(lambda view: view["headers"]),
    attributes=st.dictionaries(st.sampled_from("ab"), JSON, max_size=2),
    id=st.text(max_size=2),
    created_at=st.floats(0, 2e9),
    trace_id=st.text(max_size=1),
)


def interpreted(source: str, view: Any) -> tuple[str, Any]:
    try:
        return "ok", jmespath.search(source, view, options=_OPTIONS)
    except (jmespath.exceptions.JMESPathError, TypeError) as err:
        return "error", type(err).__name__


def compiled(source: str, view: Any) -> tuple[str, Any]:
    fast = compile_fast(jmespath.compile(source).parsed, _FUNCTIONS)
    assert fast is not None, f"{source} should take the fast path"
    try:
        return "ok", fast(view)
    except (jmespath.exceptions.JMESPathError, TypeError) as err:
        return "error", type(err).__name__


@pytest.mark.parametrize("source", EXPRESSIONS)
@settings(max_examples=50, deadline=None, database=None)
@given(view=VIEWS)
def test_fast_path_matches_the_interpreter(source: str, view: Any) -> None:
    assert compiled(source, view) == interpreted(source, view)


def compiled_on_message(source: str, message: Message) -> tuple[str, Any]:
    fast = compile_fast(jmespath.compile(source).parsed, _FUNCTIONS, on_message=True)
    assert fast is not None, f"{source} should take the fast path"
    try:
        return "ok", fast(message)
    except (jmespath.exceptions.JMESPathError, TypeError) as err:
        return "error", type(err).__name__


@pytest.mark.parametrize("source", ON_MESSAGES)
@settings(max_examples=30, deadline=None, database=None)
@given(message=MESSAGES)
def test_fast_path_on_a_message_matches_the_interpreter_on_its_view(
    source: str, message: Message
) -> None:
    assert compiled_on_message(source, message) == interpreted(source, message.to_dict())


@pytest.mark.parametrize(
    "source", ["body.list[*].b", "body.list[?a > `1`]", "sort_by(body.list, &a)", "body.list[]"]
)
def test_projections_keep_the_interpreter(source: str) -> None:
    assert compile_fast(jmespath.compile(source).parsed, _FUNCTIONS) is None
    assert compile_expression(source).evaluate({"body": {"list": [{"a": 2, "b": 1}]}}) is not None


@pytest.mark.parametrize(
    ("source", "a"),
    [("body.a == `1`", True), ("body.a == `true`", 1), ("body.a == `0.0`", False),
     ("`false` == body.a", 0)],
)  # fmt: skip
def test_zero_and_one_never_equal_a_boolean(source: str, a: Any) -> None:
    assert compiled(source, {"body": {"a": a}}) == ("ok", False)


@pytest.mark.parametrize(("source", "a"), [("body.a == `2`", 2.0), ("body.a == 'x'", "x")])
def test_other_literals_compare_as_python_does(source: str, a: Any) -> None:
    assert compiled(source, {"body": {"a": a}}) == ("ok", True)


def test_a_function_after_a_missing_field_still_runs() -> None:
    assert compiled("body.missing.not_null(@, 'x')", {"body": {}}) == ("ok", "x")


def test_a_chain_of_indexes_compiles() -> None:
    assert compiled("body.list[1][0]", {"body": {"list": [[1], [2]]}}) == ("ok", 2)


@pytest.mark.parametrize("key", sorted(Message().to_dict()))
def test_every_key_of_the_view_is_a_field_at_the_root_of_a_message(key: str) -> None:
    message = Message(body={"a": 1}, headers={"h": "v"}, attributes={"t": 1}, trace_id="t")
    assert compiled_on_message(key, message) == ("ok", message.to_dict()[key])


def test_a_name_outside_the_view_is_null_on_a_message() -> None:
    assert compiled_on_message("nothing", Message(body={"nothing": 1})) == ("ok", None)


def test_the_current_node_at_the_root_of_a_message_is_its_view() -> None:
    message = Message(body=[1])
    assert compiled_on_message("@", message) == ("ok", message.to_dict())
