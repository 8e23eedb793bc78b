"""``stdout`` sink: one JSON line per message on standard output (demos, debugging, pipes)."""

from __future__ import annotations

import sys
from typing import Any, Literal

import msgspec

from integrator.components import Sink
from integrator.hookspecs import hookimpl
from integrator.message import Message

_encoder = msgspec.json.Encoder()


class StdoutOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: "message" writes id, body, headers and attributes; "body" writes the body alone.
    format: Literal["message", "body"] = "message"


def render(message: Message, fmt: str) -> bytes:
    """The JSON line a message becomes in the stdout and file sinks."""
    if fmt == "body":
        body = message.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        return _encoder.encode(body) + b"\n"
    data = message.to_dict()
    if isinstance(data["body"], bytes):
        data["body"] = data["body"].decode("utf-8", "replace")
    return _encoder.encode(data) + b"\n"


class StdoutSink(Sink):
    Options = StdoutOptions
    description = "print each message as a JSON line"
    options: StdoutOptions

    async def deliver(self, message: Message) -> None:
        stream = sys.stdout.buffer
        stream.write(render(message, self.options.format))
        stream.flush()


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("stdout", StdoutSink)
