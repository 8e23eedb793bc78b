"""Compile the common JMESPath shapes to plain Python closures.

JMESPath's reference interpreter walks its syntax tree for every evaluation, which
costs tens of microseconds per expression: most of a filter/map chain's time. Field
paths, indexes, literals, comparisons, ``&&``/``||``/``!``, pipes, multi-selects and
function calls cover nearly every expression operators write; those become nested
closures evaluated at the speed of a few dict lookups. Anything else (projections,
flatten, filters, ``&expr`` references) returns ``None`` and keeps the interpreter.
Semantics are the interpreter's own: the comparison helpers are imported from it,
and a property test checks both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jmespath import visitor

Compiled = Callable[[Any], Any]

# Private helpers of the interpreter, reused on purpose: same semantics, by construction.
_COMPARE = visitor.TreeInterpreter.COMPARATOR_FUNC
_EQUALITY = getattr(visitor.TreeInterpreter, "_EQUALITY_OPS")  # noqa: B009
_is_comparable = getattr(visitor, "_is_comparable")  # noqa: B009


def _false(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def compile_fast(node: Any, functions: Any) -> Compiled | None:
    """A closure computing ``node`` over a value, or None when the shape is not covered."""
    try:
        return _compile(node, functions)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _compile(node: dict[str, Any], functions: Any) -> Compiled:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]

        def field(value: Any) -> Any:
            return value.get(name) if isinstance(value, dict) else None

        return field
    if kind == "subexpression":
        parts = [_compile(child, functions) for child in children]

        def subexpression(value: Any) -> Any:
            for part in parts:
                value = part(value)
                if value is None:
                    return None
            return value

        return subexpression
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind == "current":
        return lambda value: value
    if kind == "index_expression":
        left, right = (_compile(child, functions) for child in children)
        return lambda value: right(left(value))
    if kind == "index":
        position = node["value"]

        def index(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[position]
            except IndexError:
                return None

        return index
    if kind == "comparator":
        return _comparator(node["value"], *(_compile(c, functions) for c in children))
    if kind == "and_expression":
        left, right = (_compile(child, functions) for child in children)

        def conjunction(value: Any) -> Any:
            first = left(value)
            return first if _false(first) else right(value)

        return conjunction
    if kind == "or_expression":
        left, right = (_compile(child, functions) for child in children)

        def disjunction(value: Any) -> Any:
            first = left(value)
            return right(value) if _false(first) else first

        return disjunction
    if kind == "not_expression":
        (inner,) = (_compile(child, functions) for child in children)
        return lambda value: _false(inner(value))
    if kind == "pipe":
        left, right = (_compile(child, functions) for child in children)
        return lambda value: right(left(value))
    if kind == "multi_select_list":
        items = [_compile(child, functions) for child in children]
        return lambda value: None if value is None else [item(value) for item in items]
    if kind == "multi_select_dict":
        pairs = [(pair["value"], _compile(pair["children"][0], functions)) for pair in children]
        return lambda value: None if value is None else {k: f(value) for k, f in pairs}
    if kind == "function_expression":
        name = node["value"]
        arguments = [_compile(child, functions) for child in children]
        call = functions.call_function
        return lambda value: call(name, [argument(value) for argument in arguments])
    raise _Unsupported(kind)


def _comparator(op: str, left: Compiled, right: Compiled) -> Compiled:
    compare = _COMPARE[op]
    if op in _EQUALITY:
        return lambda value: compare(left(value), right(value))

    def ordering(value: Any) -> Any:
        a, b = left(value), right(value)
        if not (_is_comparable(a) and _is_comparable(b)):
            return None
        return compare(a, b)

    return ordering
