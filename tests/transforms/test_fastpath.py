"""The compiled fast path agrees with JMESPath's own interpreter."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
]

JSON = st.recursive(
    st.none()
    | st.booleans()
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
@settings(max_examples=60, deadline=None, database=None)
@given(view=VIEWS)
def test_fast_path_matches_the_interpreter(source: str, view: Any) -> None:
    assert compiled(source, view) == interpreted(source, view)


@pytest.mark.parametrize(
    "source", ["body.list[*].b", "body.list[?a > `1`]", "sort_by(body.list, &a)", "body.list[]"]
)
def test_projections_keep_the_interpreter(source: str) -> None:
    assert compile_fast(jmespath.compile(source).parsed, _FUNCTIONS) is None
    assert compile_expression(source).evaluate({"body": {"list": [{"a": 2, "b": 1}]}}) is not None
