"""Bytes on the wire <-> message bodies, the same way for every connector.

Brokers (AMQP, MQTT, Redis, NATS…) carry bytes, while a :class:`~integrator.Message`
body is any JSON-shaped value, text or bytes. A source decodes what it receives with
:func:`decode_body` (guessing with ``decode = "auto"`` or told what the bytes hold),
and a sink writes with :func:`encode_body` so that a source reads the body back
unchanged: bytes as they are, text as UTF-8, anything else as JSON. Sharing one
implementation means a body survives a trip through any pair of connectors.

A source exposes the choice as an option typed :data:`Decode`::

    class MySourceOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        decode: Decode = "auto"

    try:
        body = decode_body(raw, options.decode, content_type)
    except PayloadError as err:
        body = raw  # keep the bytes, and say why in an attribute
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from integrator.errors import IntegratorError

__all__ = [
    "Decode",
    "PayloadError",
    "content_type_of",
    "decode_body",
    "decode_body_with_json",
    "encode_body",
    "header_text",
]

#: How a source turns bytes into a body: ``auto`` guesses (content type, else JSON,
#: else UTF-8 text, else bytes); ``json`` and ``text`` insist; ``bytes`` keeps them.
Decode = Literal["auto", "json", "text", "bytes"]

_json_encoder = msgspec.json.Encoder()

_MODE_OF_TYPE: dict[str, Decode] = {
    "application/json": "json",
    "text/plain": "text",
    "application/octet-stream": "bytes",
}


class PayloadError(IntegratorError, ValueError):
    """Raised when bytes cannot be decoded the way the ``decode`` option demands."""


def decode_body(data: bytes, mode: Decode, content_type: str | None = None) -> Any:
    """Decode ``data`` for a message body.

    ``auto`` follows a known ``content_type`` (JSON, text, octet-stream) and
    otherwise tries JSON, then UTF-8 text, and keeps bytes that are neither; a
    content type that turns out wrong falls back to guessing. ``json`` and ``text``
    raise :class:`PayloadError` when the data is not what they expect.
    """
    return _decode(data, mode, content_type)[0]


def decode_body_with_json(
    data: bytes, mode: Decode, content_type: str | None = None
) -> tuple[Any, bytes | None]:
    """:func:`decode_body`, and ``data`` itself when the body was decoded from it as JSON
    (``None`` otherwise): pass it on as ``intake.submit(…, json_bodies=[…])`` and the
    store keeps that text instead of encoding the body a second time."""
    body, from_json = _decode(data, mode, content_type)
    return body, data if from_json else None


def _decode(data: bytes, mode: Decode, content_type: str | None) -> tuple[Any, bool]:
    """The body, and whether it was decoded as JSON."""
    if mode == "auto" and content_type:
        mode = _MODE_OF_TYPE.get(content_type.split(";", 1)[0].strip().lower(), "auto")
        if mode != "auto":
            try:
                return _decode(data, mode, None)
            except PayloadError:
                return _decode(data, "auto", None)  # the label was wrong: guess instead
    if mode == "bytes":
        return data, False
    if mode in ("auto", "json"):
        try:
            return msgspec.json.decode(data), True
        except msgspec.DecodeError as err:
            if mode == "json":
                raise PayloadError(f"not JSON: {err}") from err
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError as err:
        if mode == "text":
            raise PayloadError(f"not UTF-8 text: {err}") from err
        return data, False


def encode_body(body: Any) -> bytes:
    """Bytes for a body: bytes as they are, text as UTF-8, anything else as JSON.

    Raises :class:`TypeError` or :class:`msgspec.EncodeError` for a value JSON
    cannot hold; a sink reports that as a non-retriable delivery error.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return _json_encoder.encode(body)


def content_type_of(body: Any) -> str:
    """The content type of what :func:`encode_body` produces for ``body``, for
    protocols that carry one (so ``decode = "auto"`` at the other end needs no guess)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return "application/octet-stream"
    if isinstance(body, str):
        return "text/plain; charset=utf-8"
    return "application/json"


def header_text(value: Any) -> str:
    """A header value as text (message headers are ``dict[str, str]``, broker headers
    are not): strings as they are, bytes as UTF-8 (invalid bytes replaced), anything
    else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return _json_encoder.encode(value).decode("utf-8")
