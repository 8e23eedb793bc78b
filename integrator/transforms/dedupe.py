"""``dedupe``: drop a message whose key was already seen within a window.

The route's own ``dedupe_window`` drops repeats of a message *id* at intake; this
middleware dedupes by any expression (an order number, a payload hash) and can
share its memory between routes through ``scope``. The memory is the durable
store's (:meth:`integrator.delivery.store.Store.remember`), so it survives restarts.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import DeliveryError, Reject, StoreError
from integrator.message import Message
from integrator.transforms.expressions import ExpressionError, compile_expression
from integrator.types import Duration

#: Keys longer than this are stored as their SHA-256 (a whole body may be a key).
MAX_KEY_TEXT = 200
_ENCODER = msgspec.json.Encoder(order="sorted")


class DedupeOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A JMESPath expression: messages with equal values are duplicates.
    key: str = "id"
    #: How long a key is remembered, counted from the first message that had it.
    window: Duration
    #: Routes naming the same scope share one memory; by default the route's name.
    scope: str | None = None

    def validate(self) -> None:
        try:
            compile_expression(self.key)
        except ExpressionError as err:
            raise ValueError(f"key: {err}") from err
        if self.window <= 0:
            raise ValueError("window: must be longer than zero, e.g. '10m'")
        if self.scope is not None and not self.scope.strip():
            raise ValueError("scope: cannot be empty")


class Remembers(Protocol):
    """What dedupe needs of the store."""

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool: ...


class MemorySeen:
    """:meth:`Store.remember` in memory, for a chain run without a daemon (route tests)."""

    SWEEP_EVERY = 60.0

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[float, str]] = {}
        self._swept = time.time()

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        now = time.time()
        if now - self._swept > self.SWEEP_EVERY:
            self._swept = now
            self._seen = {k: v for k, v in self._seen.items() if v[0] >= now - window}
        found = self._seen.get((scope, key))
        if found is not None and found[0] >= now - window:
            return bool(owner) and found[1] == owner
        self._seen[(scope, key)] = (now, owner)
        return True


def key_text(value: Any) -> str:
    """A value as the text stored for it: JSON (so ``1`` and ``"1"`` differ), hashed if long."""
    text = _ENCODER.encode(value).decode()
    if len(text) > MAX_KEY_TEXT:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def stored_identity(message: Message) -> str:
    """What tells the same stored message, run through the chain again, from a new copy.

    A retry or a DLQ replay decodes the very message that was committed, so its id
    *and* creation time are the same; a source that receives a message again (a
    webhook sent twice) makes a new one, with a new creation time.
    """
    return f"{message.id}@{message.created_at!r}"


class DedupeMiddleware(Middleware):
    """Pass a message on only if its key was not seen in the scope within the window.

    A duplicate is dropped (done, not an error; counted as dropped). A key that is
    null (the field is missing) is no key: the message passes, with a debug log. The
    same stored message running the chain again (a retry after a later layer failed,
    a DLQ replay) is not its own duplicate: the store remembers which message a key
    came with (:func:`stored_identity`). An expression failing on a message rejects
    it; a store that cannot be written makes the message wait for a retry.
    """

    Options = DedupeOptions
    description = "drop messages whose key was seen within a window"
    options: DedupeOptions

    def __init__(self, options: DedupeOptions, context: Context) -> None:
        super().__init__(options, context)
        self.key = compile_expression(options.key)
        self.window = float(options.window)
        # "dedupe:" keeps these keys apart from the route's own dedupe_window ids.
        self.scope = f"dedupe:{options.scope or context.route}"
        store = context.services.get("store")
        self.memory: Remembers = store if store is not None else MemorySeen()

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            value = self.key.evaluate(message)
        except ExpressionError as err:
            raise Reject(f"dedupe: key: {err}") from err
        if value is None:
            self.context.logger.debug(
                "dedupe: message %s has no key (%s is null): passed on", message.id, self.key.source
            )
            await call_next(message)
            return
        try:
            new = await self.memory.remember(
                self.scope, key_text(value), self.window, owner=stored_identity(message)
            )
        except StoreError as err:
            raise DeliveryError(f"dedupe: {err}") from err
        if not new:
            self.context.logger.debug(
                "dedupe: message %s dropped: its key was seen in %s within %gs",
                message.id,
                self.scope,
                self.window,
            )
            return
        await call_next(message)
