"""The simplest middleware: ``pass`` (does nothing), ``drop`` (drops all) and ``log``."""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.hookspecs import hookimpl
from integrator.message import Message


class PassMiddleware(Middleware):
    description = "hand the message on unchanged"


class DropMiddleware(Middleware):
    description = "drop every message (a route that only observes, or a disabled branch)"

    async def __call__(self, message: Message, call_next: Next) -> None:
        return None


class LogOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: Also log the body (truncated to ``max_body`` characters).
    body: bool = False
    max_body: int = 500


class LogMiddleware(Middleware):
    Options = LogOptions
    description = "log each message passing by, then hand it on"
    options: LogOptions

    def __init__(self, options: LogOptions, context: Context) -> None:
        super().__init__(options, context)
        self.level = logging.getLevelNamesMapping()[options.level.upper()]

    async def __call__(self, message: Message, call_next: Next) -> None:
        logger = self.context.logger
        if logger.isEnabledFor(self.level):
            text = f"message {message.id}"
            if self.options.body:
                body = msgspec.json.encode(
                    message.body if not isinstance(message.body, bytes) else repr(message.body)
                ).decode()
                text += f" body={body[: self.options.max_body]}"
            logger.log(
                self.level, text, extra={"route": self.context.route, "message_id": message.id}
            )
        await call_next(message)


@hookimpl
def integrator_middleware(register: Any) -> None:
    register("pass", PassMiddleware)
    register("drop", DropMiddleware)
    register("log", LogMiddleware)
