"""The small codecs: ``json``, ``msgpack``, ``text``, ``bytes`` and ``form``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec

from integrator.transforms.codec import Codec, CodecError, scalar_text
from integrator.transforms.paths import describe_kind


class _MsgspecCodec(Codec):
    """A format msgspec reads and writes: JSON's data model, errors in the format's name."""

    json_model = True
    #: msgspec's module for the format, and the format's name in error messages.
    module: Any
    label: str

    def decode(self, data: bytes) -> Any:
        try:
            return self.module.decode(data)
        except msgspec.DecodeError as err:
            raise CodecError(f"invalid {self.label}: {err}") from err

    def encode(self, value: Any) -> bytes:
        try:
            encoded: bytes = self.module.encode(value)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as err:
            raise CodecError(f"cannot write {self.label}: {err}") from err
        return encoded


class JsonCodec(_MsgspecCodec):
    """JSON (RFC 8259), UTF-8."""

    name = "json"
    content_type = "application/json"
    module = msgspec.json
    label = "JSON"


class MsgpackCodec(_MsgspecCodec):
    """MessagePack: JSON's data model in a compact binary form."""

    name = "msgpack"
    content_type = "application/msgpack"
    module = msgspec.msgpack
    label = "MessagePack"


class TextCodec(Codec):
    """UTF-8 text: bytes become a string, and a string becomes bytes."""

    name = "text"
    content_type = "text/plain; charset=utf-8"

    def decode(self, data: bytes) -> Any:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CodecError(f"invalid UTF-8 at byte {err.start}") from err

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise CodecError(f"text needs a string, found {describe_kind(value)}")
        return _utf8(value)


class BytesCodec(Codec):
    """Raw bytes, passed through; a string is written as UTF-8."""

    name = "bytes"
    content_type = "application/octet-stream"
    binary_input = True

    def decode(self, data: bytes) -> Any:
        return bytes(data)

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return _utf8(value)
        raise CodecError(f"bytes needs bytes or a string, found {describe_kind(value)}")


class FormOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Refuse bodies with more fields than this (a cheap guard against abuse).
    max_fields: int = 1000


class FormCodec(Codec):
    """HTML form encoding (``a=1&b=x+y``) to and from an object of strings.

    A name that appears more than once becomes an array of its values, in order;
    an array is written as the name repeated. Values are always strings when
    decoded (``true`` and ``2`` included).
    """

    name = "form"
    content_type = "application/x-www-form-urlencoded"
    Options = FormOptions

    def decode(self, data: bytes) -> Any:
        try:
            text = data.decode("utf-8")
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=self.options.max_fields,
            )
        except UnicodeDecodeError as err:
            raise CodecError(f"invalid form data: not UTF-8 ({err.reason})") from err
        except ValueError as err:  # more fields than max_num_fields
            raise CodecError(f"invalid form data: {err}") from err
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key not in out:
                out[key] = value
            elif isinstance(out[key], list):
                out[key].append(value)
            else:
                out[key] = [out[key], value]
        return out

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, dict):
            raise CodecError(f"form data must be an object, found {describe_kind(value)}")
        pairs: list[tuple[str, str]] = []
        for key, item in value.items():
            for single in item if isinstance(item, list) else [item]:
                if single is None:
                    continue
                text = scalar_text(single)
                if text is None:
                    raise CodecError(f"form field {key!r} cannot hold {describe_kind(single)}")
                pairs.append((str(key), text))
        return _utf8(urlencode(pairs))


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise CodecError(f"text cannot be written as UTF-8 at character {err.start}") from err
