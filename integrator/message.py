"""The Message envelope that flows from a source, through middleware, to sinks."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec

_random = random.Random()  # seeded from os.urandom
_VARIANT = 0b10 << 62
_NOT_VARIANT = ~(0b11 << 62)
_VERSION = 0x7 << 76


def new_id() -> str:
    """A time-ordered unique id in the UUIDv7 layout, for messages whose source has none.

    Built from 48 bits of milliseconds and 74 random bits with integer arithmetic
    (``uuid.UUID`` costs several microseconds per id on the ingest path).
    """
    ms = time.time_ns() // 1_000_000
    # 76 random bits, two of them overwritten by the variant (10); unique, not secret:
    # ids are not credentials. The version (7) goes in the four bits above them.
    rand = (_random.getrandbits(76) & _NOT_VARIANT) | _VARIANT
    text = ((ms << 80) | _VERSION | rand).to_bytes(16, "big").hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One unit of work.

    ``id`` is stable across retries and restarts (taken from the source when it has
    one: a webhook id, a queue message id), so sinks can dedupe by it. ``headers``
    are transport headers or properties (HTTP headers lower-cased, AMQP properties,
    Redis stream fields…); ``attributes`` is free-form metadata that sources and
    middleware attach (HTTP method and path, topic, poll page…).
    """

    body: Any = None
    headers: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    id: str = msgspec.field(default_factory=new_id)
    created_at: float = msgspec.field(default_factory=time.time)
    trace_id: str = ""

    def evolve(self, **changes: Any) -> Message:
        """A copy with some fields replaced, keeping id and trace unless told otherwise."""
        return msgspec.structs.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The plain-data view that expressions (filter, map) and route tests see."""
        return {
            "id": self.id,
            "body": self.body,
            "headers": self.headers,
            "attributes": self.attributes,
            "created_at": self.created_at,
            "trace_id": self.trace_id,
        }


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode
#: A message stored with the JSON text of its body (see ``encode``): a MessagePack array.
_Received = tuple[bytes, dict[str, str], dict[str, Any], str, float, str]
_received_decoder = msgspec.msgpack.Decoder(_Received)
_ARRAY_OF_SIX = 0x96  # a Message itself is a MessagePack map (0x80-0x8f)


def encode(message: Message, json_body: bytes | None = None) -> bytes:
    """Serialise for the durable store (MessagePack: compact and fast).

    ``json_body`` is the JSON text the body was decoded from, when the source still
    has it: stored as received, it spares encoding the body a second time (the larger
    part of the work for a webhook), and ``decode`` decodes it again. A body holding an
    integer MessagePack cannot (beyond 64 bits, which JSON senders may send) is stored
    as JSON text too.
    """
    if json_body is None:
        try:
            return _encoder.encode(message)
        except OverflowError:
            # Only when JSON gives the body back exactly: it would turn bytes into
            # base64 text, a datetime into a string, NaN into null.
            json_body = _json_encode(message.body)
            if not same_data(_json_decode(json_body), message.body):
                raise
    m = message
    return _encoder.encode((json_body, m.headers, m.attributes, m.id, m.created_at, m.trace_id))


def same_data(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``True``, ``1`` and ``1.0`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_data(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_data, a, b))
    return bool(a == b)


def decode(data: bytes) -> Message:
    if data[0] != _ARRAY_OF_SIX:
        return _decoder.decode(data)
    body, headers, attributes, id, created_at, trace_id = _received_decoder.decode(data)
    return Message(
        body=_json_decode(body),
        headers=headers,
        attributes=attributes,
        id=id,
        created_at=created_at,
        trace_id=trace_id,
    )
