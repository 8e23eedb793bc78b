"""``xml``: XML documents to and from plain objects, in the shape xmltodict made familiar.

The document ``<order id="7"><item>a</item><item>b</item><note>hi</note></order>``
is the object ``{"order": {"@id": "7", "item": ["a", "b"], "note": "hi"}}``:

* the document is an object with one key, the root element's name;
* an element with neither attributes nor children is its text, or null if empty;
* otherwise it is an object: attributes as ``@name``, children by name, and its
  text (if any) as ``#text``;
* a child that appears more than once is an array of its values, in order;
* text is stripped of surrounding white space; names keep their prefixes
  (``soap:Envelope``), and ``xmlns`` declarations are ordinary ``@xmlns…`` attributes.

Decoded values are always strings; the order between children of different names
is not kept. Encoding writes the same shape back (numbers and booleans as text);
data that is not one such object is wrapped in ``<root>``, and an array in
``<root><item>…</item>…</root>`` (both names are options).

Parsing goes through defusedxml: entity declarations (the "billion laughs" attack)
and external references are refused, and documents over ``max_size`` bytes or
nested deeper than ``max_depth`` are rejected before they cost much.
"""

from __future__ import annotations

import re
import xml.sax
import xml.sax.handler
from typing import TYPE_CHECKING, Any

import msgspec

from integrator.transforms.codec import Codec, CodecError, scalar_text
from integrator.transforms.paths import describe_kind
from integrator.types import Size

if TYPE_CHECKING:  # imported on first decode: a daemon that never reads XML never loads it
    import defusedxml

_NAME = re.compile(r"^[^\W\d][\w.\-]*(?::[^\W\d][\w.\-]*)?$")
_INVALID_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\r": "&#13;",
        "\n": "&#10;",
        "\t": "&#9;",
    }
)


class XmlOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Larger documents are refused without being parsed.
    max_size: Size = Size(10 * 1024 * 1024)
    #: Deeper nesting is refused (while parsing, and while writing).
    max_depth: int = 100
    #: The element that wraps data which is not a one-key object.
    root: str = "root"
    #: The element each entry of a top-level array is written as.
    item: str = "item"

    def validate(self) -> None:
        if self.max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        for option in ("root", "item"):
            name = getattr(self, option)
            if not _NAME.match(name):
                raise ValueError(f"{option}: {name!r} is not an XML element name")


class XmlCodec(Codec):
    """XML to and from objects (``@attribute``, ``#text``, repeated children as arrays)."""

    name = "xml"
    content_type = "application/xml"
    Options = XmlOptions

    def decode(self, data: bytes) -> Any:
        if len(data) > self.options.max_size:
            raise CodecError(
                f"invalid XML: the document has {len(data)} bytes, "
                f"more than max_size ({self.options.max_size})"
            )
        import defusedxml
        import defusedxml.sax

        builder = _Builder(self.options.max_depth)
        try:
            defusedxml.sax.parseString(
                data, builder, forbid_dtd=False, forbid_entities=True, forbid_external=True
            )
        except defusedxml.DefusedXmlException as err:
            raise CodecError(f"refused XML: {_refusal(err)}") from err
        except xml.sax.SAXParseException as err:
            column = (err.getColumnNumber() or 0) + 1  # expat counts from 0
            raise CodecError(
                f"invalid XML: line {err.getLineNumber()}, column {column}: {err.getMessage()}"
            ) from err
        except xml.sax.SAXException as err:
            raise CodecError(f"invalid XML: {err.getMessage()}") from err
        if builder.document is None:
            raise CodecError("invalid XML: no root element")
        return builder.document

    def encode(self, value: Any) -> bytes:
        name, content = self._root(value)
        out: list[str] = ['<?xml version="1.0" encoding="utf-8"?>\n']
        _write(out, name, content, 1, self.options.max_depth)
        try:
            return "".join(out).encode("utf-8")
        except UnicodeEncodeError as err:
            raise CodecError(f"XML cannot be written as UTF-8: {err.reason}") from err

    def _root(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, dict) and len(value) == 1:
            ((name, content),) = value.items()
            if isinstance(name, str) and name[:1] not in "@#" and not isinstance(content, list):
                return name, content
        if isinstance(value, list):
            return self.options.root, {self.options.item: value}
        return self.options.root, value


def _refusal(err: defusedxml.DefusedXmlException) -> str:
    import defusedxml

    if isinstance(err, defusedxml.EntitiesForbidden):
        return f"entity declarations are not allowed (they enable entity expansion attacks): {err}"
    if isinstance(err, defusedxml.ExternalReferenceForbidden):
        return f"external references are not allowed: {err}"
    if isinstance(err, defusedxml.DTDForbidden):
        return f"document type declarations are not allowed: {err}"
    return str(err)


class _Builder(xml.sax.handler.ContentHandler):
    """Builds the object shape while SAX parses, so depth is checked as it grows."""

    def __init__(self, max_depth: int) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.stack: list[tuple[str, dict[str, Any], list[str]]] = []
        self.document: dict[str, Any] | None = None

    def startElement(self, name: str, attrs: Any) -> None:
        if len(self.stack) >= self.max_depth:
            raise CodecError(f"invalid XML: nested deeper than max_depth ({self.max_depth})")
        node = {f"@{key}": value for key, value in attrs.items()}
        self.stack.append((name, node, []))

    def characters(self, content: str) -> None:
        if self.stack:
            self.stack[-1][2].append(content)

    def endElement(self, name: str) -> None:
        name, node, chunks = self.stack.pop()
        text = "".join(chunks).strip()
        value: Any
        if node:
            if text:
                node["#text"] = text
            value = node
        else:
            value = text or None
        if not self.stack:
            self.document = {name: value}
            return
        parent = self.stack[-1][1]
        if name not in parent:
            parent[name] = value
        elif isinstance(parent[name], list):
            parent[name].append(value)
        else:
            parent[name] = [parent[name], value]


def _checked_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise CodecError(f"{name!r} is not a valid XML {what} name")
    return name


def _checked_text(value: Any, where: str) -> str:
    text = scalar_text(value)
    if text is None:
        raise CodecError(f"{where} cannot hold {describe_kind(value)}")
    bad = _INVALID_CHAR.search(text)
    if bad:
        raise CodecError(f"{where}: character U+{ord(bad[0]):04X} cannot appear in XML")
    return text


def _write(out: list[str], name: str, value: Any, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise CodecError(f"cannot write XML nested deeper than max_depth ({max_depth})")
    _checked_name(name, "element")
    if value is None:
        out.append(f"<{name}/>")
        return
    if not isinstance(value, dict):
        text = _checked_text(value, f"element <{name}>")
        out.append(f"<{name}>{text.translate(_TEXT_ESCAPES)}</{name}>")
        return
    attributes: list[str] = []
    text = ""
    children: list[tuple[str, Any]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise CodecError(f"element <{name}> has a non-string key {key!r}")
        if key == "#text":
            if item is not None:
                text = _checked_text(item, f"the text of <{name}>").translate(_TEXT_ESCAPES)
        elif key.startswith("@"):
            attribute = _checked_name(key[1:], "attribute")
            if item is not None:
                shown = _checked_text(item, f"attribute {attribute} of <{name}>")
                attributes.append(f' {attribute}="{shown.translate(_ATTRIBUTE_ESCAPES)}"')
        elif isinstance(item, list):
            for entry in item:
                if isinstance(entry, list):
                    raise CodecError(f"<{key}> in <{name}> holds an array inside an array")
                children.append((key, entry))
        else:
            children.append((key, item))
    start = f"<{name}{''.join(attributes)}"
    if not text and not children:
        out.append(start + "/>")
        return
    out.append(start + ">" + text)
    for child, item in children:
        _write(out, child, item, depth + 1, max_depth)
    out.append(f"</{name}>")
