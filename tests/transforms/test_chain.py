"""build_chain: the onion of middleware around a terminal handler."""

from __future__ import annotations

from types import TracebackType

import pytest

from integrator.components import Context, Middleware, Next, build_chain
from integrator.message import Message

CONTEXT = Context(route="test")


class Record(Middleware):
    """Notes when the message enters and when the rest of the chain has returned."""

    def __init__(self, name: str, seen: list[str]) -> None:
        super().__init__(None, CONTEXT)
        self.name = name
        self.seen = seen

    async def __call__(self, message: Message, call_next: Next) -> None:
        self.seen.append(f"{self.name} in")
        await call_next(message)
        self.seen.append(f"{self.name} out")


class Twice(Middleware):
    async def __call__(self, message: Message, call_next: Next) -> None:
        await call_next(message.evolve(body=1))
        await call_next(message.evolve(body=2))


class Boom(Middleware):
    async def __call__(self, message: Message, call_next: Next) -> None:
        raise RuntimeError("boom")


class Observe(Middleware):
    """Catches what the rest of the chain raised, as a middleware observing outcomes does."""

    caught: BaseException | None = None

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            await call_next(message)
        except RuntimeError as err:
            self.caught = err
            raise


async def test_the_first_middleware_runs_first_and_wraps_the_rest() -> None:
    seen: list[str] = []

    async def terminal(message: Message) -> None:
        seen.append("terminal")

    await build_chain([Record("a", seen), Record("b", seen)], terminal)(Message())
    assert seen == ["a in", "b in", "terminal", "b out", "a out"]


async def test_a_middleware_may_call_the_rest_of_the_chain_several_times() -> None:
    bodies: list[object] = []

    async def terminal(message: Message) -> None:
        bodies.append(message.body)

    await build_chain([Twice(None, CONTEXT)], terminal)(Message())
    assert bodies == [1, 2]


async def test_an_error_deeper_in_the_chain_reaches_the_outer_layers() -> None:
    observe = Observe(None, CONTEXT)

    async def terminal(message: Message) -> None:
        raise AssertionError("not reached")

    with pytest.raises(RuntimeError, match="boom"):
        await build_chain([observe, Boom(None, CONTEXT)], terminal)(Message())
    assert isinstance(observe.caught, RuntimeError)


async def test_a_traceback_goes_from_layer_to_layer() -> None:
    async def terminal(message: Message) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError) as caught:
        await build_chain([Observe(None, CONTEXT)], terminal)(Message())
    assert _frames(caught.value.__traceback__)[1:] == ["Observe.__call__", "terminal"]


def _frames(tb: TracebackType | None) -> list[str]:
    names = []
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        prefix = f"{type(owner).__name__}." if isinstance(owner, Middleware) else ""
        names.append(prefix + frame.f_code.co_name)
        tb = tb.tb_next
    return names
