"""``convert``: change the body's format, e.g. CSV bytes to records, or data to XML.

``from`` says what format the body is in and decodes it into data; ``to`` encodes
data into that format and sets the ``content-type`` header to match. Give one or
both::

    { type = "convert", from = "csv" }                  # CSV bytes -> list of records
    { type = "convert", to = "xml" }                    # data -> XML bytes
    { type = "convert", from = "json", to = "msgpack" } # transcode
    { type = "convert", from = { format = "csv", delimiter = ";" }, to = "json" }

A format is a name or a table with ``format`` and that codec's options. Built in:
``json``, ``msgpack``, ``csv``, ``xml``, ``form``, ``text`` and ``bytes``; plugins
add more through the ``integrator_codecs`` hook, and the daemon lends them to
this middleware as the ``"codecs"`` service (see :func:`codecs_from_registry`).

With only ``from``, the body becomes data and the ``content-type`` header is
removed, since the body is no longer in that format. A body that is already data
passes ``from = "json"`` (or ``"msgpack"``) unchanged. Without ``from``, the body
is taken as the data to encode (a string is a string), and bytes are refused
except by ``to = "bytes"``. Anything that cannot be decoded or encoded rejects
the message, with the reason saying where (a line, a record, a field).
"""

from __future__ import annotations

import functools
import importlib
from collections import ChainMap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.config import dec_hook
from integrator.errors import ConfigError, PluginError, Reject
from integrator.message import Message
from integrator.transforms.codec import Codec, CodecError
from integrator.transforms.paths import describe_kind

if TYPE_CHECKING:
    from integrator.plugins import Registered, Registry


@functools.cache
def builtin_codecs() -> dict[str, type[Codec]]:
    """The codecs every daemon has, by name (the references the built-in plugin
    registers): imported the first time a format is looked up without a registry."""
    from integrator.transforms.plugin import CODECS

    codecs: dict[str, type[Codec]] = {}
    for name, reference in CODECS.items():
        module, _, attribute = reference.partition(":")
        codecs[name] = getattr(importlib.import_module(module), attribute)
    return codecs


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_CODECS":  # what builtin_codecs() returns, by its former name
        return builtin_codecs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FormatSpec = str | dict[str, Any]


class RegisteredCodecs(Mapping[str, type[Codec]]):
    """The codecs plugins registered, by name; each is imported when first looked up."""

    def __init__(self, entries: Mapping[str, Registered]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> type[Codec]:
        codec: type[Codec] = self._entries[name].component
        return codec

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries  # without importing the codec, as Mapping's would

    def __len__(self) -> int:
        return len(self._entries)


def codecs_from_registry(registry: Registry) -> Mapping[str, type[Codec]]:
    """The codecs plugins registered, as the ``"codecs"`` service expects them."""
    return RegisteredCodecs(registry.components["codec"])


def make_codec(spec: FormatSpec, codecs: Mapping[str, type[Codec]], option: str) -> Codec:
    """Build the codec a ``from``/``to`` value names; ValueError if it cannot."""
    if isinstance(spec, str):
        name, values = spec, {}
    else:
        values = dict(spec)
        name = values.pop("format", None)
        if not isinstance(name, str):
            raise ValueError(
                f"{option}: a format table needs 'format', e.g. {{ format = \"csv\" }}"
            )
    try:
        cls = codecs.get(name)
    except PluginError as err:  # registered by reference, and that cannot be imported
        raise ValueError(f"{option}: {err}") from err
    if cls is None:
        known = ", ".join(sorted(codecs))
        raise ValueError(f"{option}: unknown format {name!r}; known formats: {known}")
    try:
        options = msgspec.convert(values, cls.Options, strict=True, dec_hook=dec_hook)
    except msgspec.ValidationError as err:
        raise ValueError(f"{option}: {name} options: {err}") from err
    check = getattr(options, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise ValueError(f"{option}: {name} options: {err}") from err
    return cls(options)


def _format_name(spec: FormatSpec) -> Any:
    return spec if isinstance(spec, str) else spec.get("format")


class ConvertOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The format the body is in: a name, or ``{ format = "csv", delimiter = ";" }``.
    from_: FormatSpec | None = msgspec.field(default=None, name="from")
    #: The format to write the body in.
    to: FormatSpec | None = None

    def validate(self) -> None:
        if self.from_ is None and self.to is None:
            raise ValueError("give 'from', 'to' or both")
        for option, spec in (("from", self.from_), ("to", self.to)):
            if spec is None:
                continue
            # Built-in formats are checked now; a plugin's only when the route is built,
            # since options cannot see which plugins are installed.
            name = _format_name(spec)
            if not isinstance(name, str) or name in builtin_codecs():
                make_codec(spec, builtin_codecs(), option)


class ConvertMiddleware(Middleware):
    """Decode the body from one format and/or encode it into another."""

    Options = ConvertOptions
    description = "change the body's format: json, msgpack, csv, xml, form, text, bytes"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        # Looked up by name: a plugin's codec is imported only if this middleware names it.
        codecs = ChainMap(context.services.get("codecs", {}), builtin_codecs())
        try:
            self.decoder = make_codec(options.from_, codecs, "from") if options.from_ else None
            self.encoder = make_codec(options.to, codecs, "to") if options.to else None
        except ValueError as err:
            raise ConfigError([f"route {context.route!r}: convert: {err}"]) from err

    async def __call__(self, message: Message, call_next: Next) -> None:
        value = self._decode(message.body)
        headers = dict(message.headers)
        if self.encoder is None:
            headers.pop("content-type", None)
            await call_next(message.evolve(body=value, headers=headers))
            return
        if isinstance(value, bytes | bytearray | memoryview) and not self.encoder.binary_input:
            raise Reject(
                f"convert: the body is bytes, not data; set 'from' to the format it is in "
                f"before writing it as {self.encoder.name}"
            )
        try:
            data = self.encoder.encode(value)
        except CodecError as err:
            raise Reject(f"convert: cannot write the body as {self.encoder.name}: {err}") from err
        headers["content-type"] = self.encoder.content_type
        await call_next(message.evolve(body=data, headers=headers))

    def _decode(self, body: Any) -> Any:
        decoder = self.decoder
        if decoder is None:
            return body
        if isinstance(body, bytes | bytearray | memoryview):
            data = bytes(body)
        elif isinstance(body, str):
            try:
                data = body.encode("utf-8")
            except UnicodeEncodeError as err:
                raise Reject(f"convert: the body is not valid text: {err.reason}") from err
        elif decoder.json_model:
            return body
        else:
            raise Reject(
                f"convert: the body is already data ({describe_kind(body)}), "
                f"not {decoder.name} text"
            )
        try:
            return decoder.decode(data)
        except CodecError as err:
            raise Reject(f"convert: cannot read the body as {decoder.name}: {err}") from err
