"""Helpers for the transform tests: build a middleware as the config loader would, run it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from integrator.components import Context, Middleware, build_chain
from integrator.config import convert
from integrator.message import Message

Build = Callable[..., Middleware]
Run = Callable[..., Awaitable[list[Message]]]


def options_for(cls: type[Middleware], raw: dict[str, Any]) -> Any:
    """Convert and validate raw (TOML-like) options exactly as config.py does."""
    options = convert(raw, cls.Options)
    check = getattr(options, "validate", None)
    if callable(check):
        check()
    return options


@pytest.fixture
def build() -> Build:
    def make(cls: type[Middleware], context: Context | None = None, **raw: Any) -> Middleware:
        return cls(options_for(cls, raw), context or Context(route="test"))

    return make


@pytest.fixture
def run() -> Run:
    """Send messages through middleware to a terminal that collects what comes out."""

    async def go(*layers: Middleware, message: Message) -> list[Message]:
        out: list[Message] = []

        async def terminal(m: Message) -> None:
            out.append(m)

        await build_chain(list(layers), terminal)(message)
        return out

    return go
