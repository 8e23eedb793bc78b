"""Expressions over a message: plain JMESPath, compiled once, checked at load time.

Expressions see :meth:`integrator.message.Message.to_dict`, so they start with
``body``, ``headers``, ``attributes``, ``id``, ``created_at`` or ``trace_id``::

    body.repository.full_name
    headers."x-github-event" == 'push'        # quote names that hold '-'
    length(body.commits) > `1`                  # `…` is a JSON literal
    lower(body.user.email)

Besides JMESPath's built-in functions there are three of our own: ``lower(s)``,
``upper(s)`` and ``now()`` (seconds since the epoch, a number). Compiling checks
function names and argument counts too, so ``integrator check`` catches a typo in
a function name, not only a syntax error.

Truthiness follows JMESPath, as ``&&`` and ``||`` do: ``false``, ``null``, ``""``,
``[]`` and ``{}`` are false, everything else is true (the number 0 included).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions

from integrator.errors import IntegratorError
from integrator.message import Message
from integrator.transforms.fastpath import compile_fast


class ExpressionError(IntegratorError, ValueError):
    """Raised when an expression cannot be compiled, or fails while being evaluated.

    It is a ``ValueError`` too, so an Options ``validate()`` can let it through and
    the config loader reports it with the key path.
    """

    def __init__(self, expression: str, problem: str) -> None:
        self.expression = expression
        self.problem = problem
        super().__init__(f"invalid expression {expression!r}: {problem}")


class _Functions(jmespath.functions.Functions):
    """Our few additions to JMESPath's function library."""

    @jmespath.functions.signature({"types": ["string"]})
    def _func_lower(self, value: str) -> str:
        return value.lower()

    @jmespath.functions.signature({"types": ["string"]})
    def _func_upper(self, value: str) -> str:
        return value.upper()

    @jmespath.functions.signature()
    def _func_now(self) -> float:
        return time.time()


_FUNCTIONS = _Functions()
_OPTIONS = jmespath.Options(custom_functions=_FUNCTIONS)


class Expression:
    """A compiled JMESPath expression; build it with :func:`compile_expression`."""

    __slots__ = ("_fast", "_on_message", "_parsed", "source")

    def __init__(self, source: str, parsed: Any) -> None:
        self.source = source
        self._parsed = parsed
        self._fast = compile_fast(parsed.parsed, _FUNCTIONS)
        self._on_message = compile_fast(parsed.parsed, _FUNCTIONS, on_message=True)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, data: Message | Mapping[str, Any]) -> Any:
        """The value of the expression for a message (or an already built view of one)."""
        try:
            if isinstance(data, Message):
                if self._on_message is not None:
                    return self._on_message(data)
                data = data.to_dict()
            elif self._fast is not None:
                return self._fast(data)
            return self._parsed.search(data, options=_OPTIONS)
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as err:
            raise ExpressionError(self.source, _one_line(str(err))) from err

    def matches(self, data: Message | Mapping[str, Any]) -> bool:
        """Whether the expression's value is true in JMESPath's sense."""
        return is_truthy(self.evaluate(data))


_SIZED = (str, bytes, list, tuple, dict)


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null and empty strings, arrays and objects are false.

    This judges an expression's final value (``filter``, ``switch``); empty bytes and
    tuples count as empty too, since a body may be bytes. Inside an expression,
    ``&&``, ``||`` and ``!`` keep jmespath's own rule (``fastpath._false``).
    """
    if value is True:
        return True
    if value is None or value is False:
        return False
    if isinstance(value, _SIZED):
        return len(value) > 0
    return True


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Compile ``source`` once (cached), or raise :class:`ExpressionError` saying why."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError(str(source), "an expression cannot be empty")
    try:
        parsed = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as err:
        raise ExpressionError(source, _parse_problem(err)) from err
    _check_functions(source, parsed.parsed)
    return Expression(source, parsed)


def _check_functions(source: str, node: Any) -> None:
    """Refuse unknown functions and wrong argument counts at compile time."""
    if not isinstance(node, dict):
        return
    children = node.get("children", [])
    if node.get("type") == "function_expression":
        name = node["value"]
        spec = _FUNCTIONS.FUNCTION_TABLE.get(name)
        if spec is None:
            known = ", ".join(sorted(_FUNCTIONS.FUNCTION_TABLE))
            raise ExpressionError(source, f"unknown function {name}(); known functions: {known}")
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if variadic and len(children) < len(signature):
            raise ExpressionError(
                source, f"{name}() takes at least {len(signature)} arguments, got {len(children)}"
            )
        if not variadic and len(children) != len(signature):
            plural = "argument" if len(signature) == 1 else "arguments"
            raise ExpressionError(
                source, f"{name}() takes {len(signature)} {plural}, got {len(children)}"
            )
    for child in children:
        _check_functions(source, child)


def _parse_problem(err: jmespath.exceptions.JMESPathError) -> str:
    problem = _one_line(str(err))
    position = getattr(err, "lex_position", None)
    if isinstance(position, int) and "column" not in problem:
        problem += f" at column {position}"
    if getattr(err, "token_value", None) == "-":
        problem += " (quote names that hold '-', as in headers.\"x-github-event\")"
    return problem


def _one_line(text: str) -> str:
    """JMESPath's parse errors repeat the expression and draw a caret on more lines.

    The expression is already in our message, so only the first line is kept.
    """
    head = text.strip().splitlines()[0].rstrip() if text.strip() else "invalid expression"
    for suffix in (", for expression:", ":"):
        head = head.removesuffix(suffix)
    return head
