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

    __slots__ = ("_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = Template(source)

    def __repr__(self) -> str:
        return f"UrlTemplate({self.source!r})"

    @property
    def static(self) -> str | None:
        """The URL or path itself when it has no holes."""
        return self._template.static

    def render(self, message: Message) -> str:
        if self._template.single_hole:  # a whole URL from the message, as it is
            return self._template.render(message)
        return self._template.render(message, escape=lambda value: quote(value, safe=""))


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


__all__ = ["TemplateError", "TextTemplate", "UrlTemplate"]
