"""Compile the common JMESPath shapes to plain Python closures.

JMESPath's reference interpreter walks its syntax tree for every evaluation, which
costs tens of microseconds per expression: most of a filter/map chain's time. Field
paths, indexes, literals, comparisons, ``&&``/``||``/``!``, pipes, multi-selects and
function calls cover nearly every expression operators write; those become nested
closures evaluated at the speed of a few dict lookups. Anything else (projections,
flatten, filters, slices, ``&expr`` references) returns ``None`` and keeps the
interpreter. Semantics are the interpreter's own: the comparison helpers are imported
from it, and property tests check both agree.

With ``on_message=True`` the closure takes a :class:`~integrator.message.Message`
instead of its :meth:`~integrator.message.Message.to_dict` view: a field at the root
(``body``, ``headers``…) is read off the message, so no view is built per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from jmespath import visitor

from integrator.message import Message

Compiled = Callable[[Any], Any]

# Private helpers of the interpreter, reused on purpose: same semantics, by construction.
_COMPARE = visitor.TreeInterpreter.COMPARATOR_FUNC
_EQUALITY = getattr(visitor.TreeInterpreter, "_EQUALITY_OPS")  # noqa: B009
_is_comparable = getattr(visitor, "_is_comparable")  # noqa: B009
_is_actual_number = getattr(visitor, "_is_actual_number")  # noqa: B009

#: The keys of ``Message.to_dict()``, read as attributes when the root is a message.
MESSAGE_FIELDS = frozenset(Message().to_dict())
#: Types whose truthiness and comparability are decided without the interpreter's helpers.
_SIZED = (str, list, dict)
_ORDERED = (int, float, str)


def _false(value: Any) -> bool:
    """The interpreter's ``_is_false``: null, false and empty strings, arrays, objects."""
    if value is None or value is False:
        return True
    if value.__class__ in _SIZED:
        return not value
    return value == "" or value == [] or value == {}


def _comparable(value: Any) -> bool:
    return value.__class__ in _ORDERED or _is_comparable(value)


def compile_fast(node: Any, functions: Any, *, on_message: bool = False) -> Compiled | None:
    """A closure computing ``node``, or None when the shape is not covered.

    The closure takes the view (a dict), or with ``on_message`` the Message itself.
    """
    try:
        return _compile(node, functions, on_message)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _compile(node: dict[str, Any], functions: Any, root: bool) -> Compiled:
    """``root``: the closure's argument is the Message, not a JSON value."""
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        return _path((node["value"],), root)
    if kind in ("subexpression", "index_expression", "pipe"):
        return _chain(children, functions, root)
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind in ("current", "identity"):
        return Message.to_dict if root else _identity
    if kind == "index":
        return _none if root else _index(node["value"])
    if kind == "comparator":
        left, right = (_compile(child, functions, root) for child in children)
        return _comparator(node["value"], left, right, children)
    if kind == "and_expression":
        left, right = (_compile(child, functions, root) for child in children)

        def conjunction(value: Any) -> Any:
            first = left(value)
            return first if _false(first) else right(value)

        return conjunction
    if kind == "or_expression":
        left, right = (_compile(child, functions, root) for child in children)

        def disjunction(value: Any) -> Any:
            first = left(value)
            return right(value) if _false(first) else first

        return disjunction
    if kind == "not_expression":
        (inner,) = (_compile(child, functions, root) for child in children)

        def negation(value: Any) -> bool:
            result = inner(value)
            return False if _is_actual_number(result) else not result  # !0 is false too

        return negation
    if kind == "multi_select_list":
        items = [_compile(child, functions, root) for child in children]
        return lambda value: None if value is None else [item(value) for item in items]
    if kind == "multi_select_dict":
        pairs = [
            (pair["value"], _compile(pair["children"][0], functions, root)) for pair in children
        ]
        return lambda value: None if value is None else {k: f(value) for k, f in pairs}
    if kind == "function_expression":
        name = node["value"]
        arguments = [_compile(child, functions, root) for child in children]
        call = functions.call_function
        return lambda value: call(name, [argument(value) for argument in arguments])
    raise _Unsupported(kind)


def _identity(value: Any) -> Any:
    return value


def _none(value: Any) -> None:
    return None


def _chain(children: list[dict[str, Any]], functions: Any, root: bool) -> Compiled:
    """Children applied in turn, each to the previous one's value.

    A chain of plain field names becomes one loop over dicts. The interpreter does not
    stop at null (``not_null(@, 'x')`` after a missing field still runs), so neither
    does a chain that holds anything but fields.
    """
    if all(child["type"] == "field" for child in children):
        return _path(tuple(child["value"] for child in children), root)
    steps = [_compile(child, functions, root and i == 0) for i, child in enumerate(children)]

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _path(names: tuple[str, ...], root: bool) -> Compiled:
    """``a.b.c``: each name looked up in an object; anything else gives null."""
    first, rest = names[0], names[1:]
    if root and first not in MESSAGE_FIELDS:
        return _none
    if root:
        # The first name is a Message attribute; the rest walk the data it holds.
        start = attrgetter(first)
        if not rest:
            return start
        within = _path(rest, False)
        return lambda message: within(start(message))
    if not rest:
        return lambda value: value.get(first) if isinstance(value, dict) else None

    def path(value: Any) -> Any:
        for name in names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return path


def _index(position: int) -> Compiled:
    def index(value: Any) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return index


def _comparator(
    op: str, left: Compiled, right: Compiled, children: list[dict[str, Any]]
) -> Compiled:
    compare = _COMPARE[op]
    if op in _EQUALITY:
        literal_right = children[1]["type"] == "literal"
        literal = children[1 if literal_right else 0]
        if literal["type"] == "literal" and _plain_equality(literal["value"]):
            return _literal_equality(op == "eq", left if literal_right else right, literal["value"])
        return lambda value: compare(left(value), right(value))

    def ordering(value: Any) -> Any:
        a, b = left(value), right(value)
        if not (_comparable(a) and _comparable(b)):
            return None
        return compare(a, b)

    return ordering


def _literal_equality(equal: bool, operand: Compiled, constant: Any) -> Compiled:
    """``x == 'push'``: Python's ``==`` once the literal rules out JMESPath's special case."""
    if equal:
        return lambda value: operand(value) == constant
    return lambda value: operand(value) != constant


def _plain_equality(literal: Any) -> bool:
    """Whether JMESPath's ``==`` against ``literal`` is Python's ``==``.

    The interpreter treats 0 and 1 as unequal to false and true (Python does not);
    that is its only departure, and it only arises with a boolean or a 0/1 operand.
    """
    if isinstance(literal, bool):
        return False
    return not (_is_actual_number(literal) and literal in (0, 1))
