"""The codec interface: how ``convert`` (and sinks) turn bytes into data and back.

A codec is a small class with a ``name`` (what config says), the ``content_type``
it produces, ``decode(bytes) -> data`` and ``encode(data) -> bytes``. It may
declare an ``Options`` Struct: ``convert`` then accepts ``{ format = "csv",
delimiter = ";" }`` wherever it accepts ``"csv"``. Plugins add codecs through the
``integrator_codecs`` hook::

    class YamlCodec(Codec):
        name = "yaml"
        content_type = "application/yaml"

        def decode(self, data: bytes) -> Any: ...
        def encode(self, value: Any) -> bytes: ...

    @hookimpl
    def integrator_codecs(register):
        register("yaml", YamlCodec)

Bad input raises :class:`CodecError`, whose text says what and where (a line, a
record, a path) without quoting secrets or whole bodies.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from integrator.errors import IntegratorError


class CodecError(IntegratorError, ValueError):
    """Raised when data cannot be decoded from, or encoded to, a codec's format."""


class NoCodecOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of a codec that takes none."""


class Codec:
    """Base class of every codec; subclasses set ``name`` and ``content_type``."""

    name: ClassVar[str] = ""
    content_type: ClassVar[str] = "application/octet-stream"
    Options: ClassVar[type[msgspec.Struct]] = NoCodecOptions
    #: Whether ``encode`` takes raw bytes as its input (``bytes`` does; ``json`` does not).
    binary_input: ClassVar[bool] = False
    #: Whether the format carries exactly JSON's data model (``json``, ``msgpack``): a
    #: body that is already data then counts as decoded, since sources that parse
    #: JSON themselves hand it over that way.
    json_model: ClassVar[bool] = False

    def __init__(self, options: Any = None) -> None:
        self.options: Any = options if options is not None else self.Options()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def decode(self, data: bytes) -> Any:
        """Parse ``data`` into plain values (dicts, lists, strings, numbers…)."""
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:
        """Write plain values in this format."""
        raise NotImplementedError


def scalar_text(value: Any) -> str | None:
    """How a scalar is written in a text format (CSV cell, form field, XML text).

    Strings stay as they are, booleans are ``true``/``false``, numbers are JSON
    numbers; ``None`` is returned for anything that is not a scalar.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return msgspec.json.encode(value).decode()
    return None
