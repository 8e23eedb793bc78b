"""Bytes on the wire <-> message bodies, the same way for the source and the sinks.

A message body is just bytes: the source guesses (``decode = "auto"``) or is
told what they hold, and the sinks write bodies so that the source reads them back
unchanged: bytes as they are, text as UTF-8, anything else as JSON.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Decode = Literal["auto", "json", "text", "bytes"]

_json_encoder = msgspec.json.Encoder()


class PayloadError(ValueError):
    """Raised when bytes cannot be decoded the way the ``decode`` option demands."""


def decode_body(data: bytes, mode: Decode, content_type: str | None = None) -> Any:
    """Decode ``data`` for a message body.

    ``auto`` follows a known ``content_type`` (JSON, text, octet-stream) and
    otherwise tries JSON, then UTF-8 text, and keeps bytes that are neither;
    ``json`` and ``text`` raise :class:`PayloadError` when the data is not what they
    expect.
    """
    if mode == "auto" and content_type:
        mode = _MODE_OF_TYPE.get(content_type.split(";", 1)[0].strip().lower(), "auto")
        if mode != "auto":
            try:
                return decode_body(data, mode)
            except PayloadError:
                return decode_body(data, "auto")  # the label was wrong: guess instead
    if mode == "bytes":
        return data
    if mode in ("auto", "json"):
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as err:
            if mode == "json":
                raise PayloadError(f"not JSON: {err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if mode == "text":
            raise PayloadError(f"not UTF-8 text: {err}") from err
        return data


_MODE_OF_TYPE: dict[str, Decode] = {
    "application/json": "json",
    "text/plain": "text",
    "application/octet-stream": "bytes",
}


def content_type_of(body: Any) -> str:
    """The content type :func:`encode_body` produces for ``body``."""
    if isinstance(body, bytes | bytearray | memoryview):
        return "application/octet-stream"
    if isinstance(body, str):
        return "text/plain; charset=utf-8"
    return "application/json"


def encode_body(body: Any) -> bytes:
    """Bytes for a body: bytes as is, text as UTF-8, anything else as JSON."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return _json_encoder.encode(body)


def text(value: Any) -> str:
    """A header value as text: strings and bytes as they are, other values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return _json_encoder.encode(value).decode("utf-8")
