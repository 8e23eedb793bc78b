"""The three kinds of route component a plugin can provide, and what the engine gives them.

A component class declares its options as a msgspec Struct in ``Options`` (a typo in
a user's config is then a load-time error naming the key) and is built once per use
with those options and a :class:`Context`. Async work lives on the instances; the
plugin hooks that register the classes stay synchronous.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import anyio
import msgspec

from integrator.message import Message

if TYPE_CHECKING:
    from integrator.config import Config


class NoOptions(msgspec.Struct, forbid_unknown_fields=True):
    """Options of a component that takes none."""


@dataclass
class Context:
    """What the engine lends a component: where it runs and the shared services.

    ``services`` is filled by the daemon with shared objects keyed by name
    (``"store"``, ``"http"``, connection registries…) so that later features can
    add services without changing every constructor.
    """

    route: str
    config: Config | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("integrator"))
    services: dict[str, Any] = field(default_factory=dict)


class Component:
    """Common base: options Struct and construction."""

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    #: A one-line description shown by ``integrator plugins``.
    description: ClassVar[str] = ""

    def __init__(self, options: Any, context: Context) -> None:
        self.options = options
        self.context = context


class Intake(Protocol):
    """How a source hands messages to the engine.

    ``submit`` returns only once the messages are committed to the durable store:
    acknowledge upstream (answer 2xx, ack the queue, advance a cursor) after it
    returns, never before. It raises :class:`~integrator.errors.StoreError` when the
    store cannot take them, in which case nothing must be acknowledged.
    """

    async def submit(
        self, messages: Sequence[Message], *, json_bodies: Sequence[bytes | None] | None = None
    ) -> list[bool]:
        """Returns, per message, whether it was new (False: a repeat within the dedupe window).

        ``json_bodies`` is optional: per message, the JSON text its body was decoded
        from, or None. A source that decoded JSON it received may pass the text, which
        the store then keeps as is instead of encoding the body again; the body must be
        exactly what decoding that text gives (unchanged since).
        """
        ...

    async def wait_accepting(self) -> None:
        """Block while the store is above its high-water mark (backpressure)."""
        ...

    @property
    def accepting(self) -> bool: ...

    async def load_checkpoint(self, key: str) -> Any: ...

    async def save_checkpoint(self, key: str, value: Any) -> None: ...


class Source(Component):
    """Produces messages: a listener, a poller, a queue consumer, a timer."""

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Produce messages until cancelled.

        Call ``task_status.started()`` once the source is ready (bound, connected,
        subscribed), so that READY means every route really is. Returning ends the
        source for good; raising makes the supervisor restart it with backoff.
        """
        raise NotImplementedError


Next = Callable[[Message], Awaitable[None]]


class Middleware(Component):
    """One link of the onion chain.

    ``__call__`` receives a message and ``call_next``, the rest of the chain. It may
    change the message and pass it on, drop it (not call ``call_next``), split it
    (call ``call_next`` several times), or observe the outcome (wrap the call in
    ``try``). Raise :class:`~integrator.errors.Reject` to send the message to the DLQ
    with a reason, or :class:`~integrator.errors.DeliveryError` to have it retried.
    """

    async def __call__(self, message: Message, call_next: Next) -> None:
        await call_next(message)

    async def open(self) -> None:
        """Acquire resources (connections, caches) before the first message."""

    async def close(self) -> None:
        """Release what :meth:`open` acquired; called on shutdown and reload."""


class Sink(Component):
    """Delivers messages somewhere.

    ``deliver`` raises :class:`~integrator.errors.DeliveryError` on failure, with
    ``retriable`` telling the retry policy whether to try again. The engine calls it
    at least once per message; ``message.id`` is stable, so a sink that can pass an
    idempotency key should.
    """

    async def open(self) -> None:
        """Connect before the first delivery."""

    async def deliver(self, message: Message) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Flush and disconnect; called on shutdown and reload."""


def build_chain(middleware: Sequence[Middleware], terminal: Next) -> Next:
    """Compose middleware around ``terminal`` so the first in the list runs first."""
    handler = terminal
    for layer in reversed(middleware):
        handler = _bind(layer.__call__, handler)
    return handler


def _bind(call: Callable[[Message, Next], Awaitable[None]], call_next: Next) -> Next:
    """One layer bound to the rest of the chain.

    A plain function (not ``async``) returning the layer's own coroutine, so a layer
    costs one coroutine frame, not two; and it calls the bound ``__call__`` method,
    which skips the slot lookup that calling the instance goes through.
    """

    def link(message: Message) -> Awaitable[None]:
        return call(message, call_next)

    return link
