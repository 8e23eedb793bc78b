"""Request templates: a URL, path, header or parameter built from the message.

The holes are those of :mod:`integrator.transforms.templates` (``${expression}``,
JMESPath over the message), rendered the same way. What differs is escaping:

- in a URL or a path each hole's value is percent-encoded, so
  ``/customers/${body.id}`` stays one path segment whatever the id holds; a
  template that is a single hole (``${attributes.callback_url}``) gives a whole URL;
- a header value may not contain a line break (that would smuggle a header).
"""

from __future__ import annotations

from urllib.parse import quote

from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.templates import Template, TemplateError


class UrlTemplate:
    """A URL or path whose holes are percent-encoded."""

    __slots__ = ("_parts", "_whole", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        Template(source)  # the same grammar and errors as every other template
        self._parts: list[str | Template] = _split(source)
        self._whole = len(self._parts) == 1 and isinstance(self._parts[0], Template)

    def __repr__(self) -> str:
        return f"UrlTemplate({self.source!r})"

    def render(self, message: Message) -> str:
        if self._whole:
            return self._parts[0].render(message) if isinstance(self._parts[0], Template) else ""
        view = message.to_dict()
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(quote(part.render(view), safe=""))
        return "".join(out)


class TextTemplate:
    """A header value or query parameter: plain text, no line breaks."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = Template(source)

    def __repr__(self) -> str:
        return f"TextTemplate({self.source!r})"

    def render(self, message: Message, what: str) -> str:
        text = self._template.render(message)
        if "\r" in text or "\n" in text:
            raise Reject(f"{what} would contain a line break")
        return text


def _split(source: str) -> list[str | Template]:
    """Cut a template into literal text and one single-hole Template per hole."""
    parts: list[str | Template] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        if source.startswith("$${", i):
            literal.append("$${")  # kept escaped: the literal text is rendered by Template too
            i += 3
        elif source.startswith("${", i):
            end = _closing_brace(source, i + 2)
            if literal:
                parts.append(_literal("".join(literal)))
                literal = []
            parts.append(Template(source[i : end + 1]))
            i = end + 1
        else:
            literal.append(source[i])
            i += 1
    if literal:
        parts.append(_literal("".join(literal)))
    return parts


def _literal(text: str) -> str:
    return Template(text).render({}) if "$${" in text else text


def _closing_brace(source: str, start: int) -> int:
    """Index of the ``}`` closing a hole, skipping nested braces and quoted text."""
    depth = 0
    quote_char: str | None = None
    i = start
    while i < len(source):
        char = source[i]
        if quote_char is not None:
            if char == "\\":
                i += 2
                continue
            if char == quote_char:
                quote_char = None
        elif char in "'\"`":
            quote_char = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError(f"template {source!r}: '${{' is never closed")


__all__ = ["TemplateError", "TextTemplate", "UrlTemplate"]
