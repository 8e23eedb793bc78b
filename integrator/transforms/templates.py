"""String templates: text with ``${expression}`` holes, as in ``"Push to ${body.repo}"``.

Each hole holds a JMESPath expression (see :mod:`integrator.transforms.expressions`),
compiled when the config is loaded. Its value is written as text: a string as it
is, null as nothing, anything else as JSON (``2``, ``true``, ``["a","b"]``).
``$${`` writes a literal ``${``. Braces and quotes inside a hole are understood,
so ``${ {a: body.a} }`` and ``${join('}', body.xs)}`` work.

Note that the config loader itself turns ``$${`` into ``${`` before a template is
seen, so a literal ``${`` in a TOML file is written ``$$${``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from integrator.errors import IntegratorError
from integrator.message import Message
from integrator.transforms.expressions import Expression, compile_expression


class TemplateError(IntegratorError, ValueError):
    """Raised when a template is malformed (an unclosed ``${``, a bad expression)."""


class Template:
    """A parsed template: literal text and compiled expressions, in order."""

    __slots__ = ("_parts", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: list[str | Expression] = _parse(source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    @property
    def expressions(self) -> list[Expression]:
        return [part for part in self._parts if isinstance(part, Expression)]

    @property
    def static(self) -> str | None:
        """The text itself when the template has no holes (it renders the same always)."""
        if all(isinstance(part, str) for part in self._parts):
            return "".join(part for part in self._parts if isinstance(part, str))
        return None

    @property
    def single_hole(self) -> bool:
        """Whether the template is one ``${…}`` and nothing else."""
        return len(self._parts) == 1 and isinstance(self._parts[0], Expression)

    def render(
        self, data: Message | Mapping[str, Any], escape: Callable[[str], str] | None = None
    ) -> str:
        """The text, with each hole's value passed through ``escape`` when given
        (percent-encoding for URLs); literal text is never escaped."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                # A message is handed over as it is: most expressions read its fields
                # directly, without building its to_dict() view.
                value = render_value(part.evaluate(data))
                out.append(escape(value) if escape is not None else value)
        return "".join(out)


def render_value(value: Any) -> str:
    """How a value appears inside text: strings bare, null empty, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _parse(source: str) -> list[str | Expression]:
    parts: list[str | Expression] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        if source.startswith("$${", i):
            literal.append("${")
            i += 3
        elif source.startswith("${", i):
            end = _closing_brace(source, i + 2)
            text = source[i + 2 : end].strip()
            if not text:
                raise TemplateError(f"template {source!r}: empty ${{}} at character {i + 1}")
            if literal:
                parts.append("".join(literal))
                literal = []
            try:
                parts.append(compile_expression(text))
            except ValueError as err:
                raise TemplateError(f"template {source!r}: {err}") from err
            i = end + 1
        else:
            literal.append(source[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _closing_brace(source: str, start: int) -> int:
    """Index of the ``}`` that closes a hole, skipping nested braces and quoted text."""
    depth = 0
    quote: str | None = None
    i = start
    while i < len(source):
        char = source[i]
        if quote is not None:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError(f"template {source!r}: '${{' at character {start - 1} is never closed")
