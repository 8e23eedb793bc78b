"""The durable store's interface: what the engine needs, whatever the backend.

The engine never acknowledges a source's message before :meth:`Store.enqueue`
returns; from then on the message lives in the store until every sink of its
route has delivered it or dead-lettered it. Backends register themselves through
the ``integrator_store_backends`` hook; SQLite (``integrator.delivery.sqlite``) is
the default.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from integrator.message import Message


class InboxItem(msgspec.Struct):
    """A committed message waiting for its route's middleware chain."""

    seq: int
    route: str
    message: Message
    attempts: int = 0
    next_at: float = 0.0
    first_error: str = ""
    first_attempt_at: float = 0.0


class Delivery(msgspec.Struct):
    """One message for one sink: each sink of a route gets its own."""

    seq: int
    route: str
    sink: str
    message: Message
    attempts: int = 0
    next_at: float = 0.0
    first_error: str = ""
    last_error: str = ""
    first_attempt_at: float = 0.0


class DeadLetter(msgspec.Struct):
    """A message that will not be delivered without an operator's help.

    ``sink`` is empty when the message failed in the route's middleware chain
    (before any sink got it); a replay then sends it through the chain again.
    """

    id: int
    route: str
    sink: str
    message: Message
    attempts: int
    first_error: str
    last_error: str
    first_attempt_at: float
    failed_at: float


class AuditEntry(msgspec.Struct):
    """One line of the audit trail: when, who, what, and the details of it."""

    id: int
    at: float
    actor: str
    action: str
    details: dict[str, Any]


class Store(abc.ABC):
    """A durable inbox, per-sink outbox, dead-letter queue and key-value checkpoints.

    Writes may be batched into one transaction (group commit) but each awaited call
    returns only after its own data is durable.
    """

    Options: ClassVar[type[msgspec.Struct]]

    @abc.abstractmethod
    def __init__(self, options: Any, state_dir: Path) -> None: ...

    async def open(self) -> None:
        """Create or open the store; raise StoreError naming the path if that fails."""

    async def close(self) -> None:
        """Flush and close; safe to call twice."""

    # -- intake ------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(
        self,
        route: str,
        messages: Sequence[Message],
        *,
        dedupe_window: float | None = None,
        json_bodies: Sequence[bytes | None] | None = None,
    ) -> list[bool]:
        """Commit messages to a route's inbox; return, per message, whether it was new.

        With ``dedupe_window``, a message whose id was accepted for this route within
        that many seconds is not stored again (``False`` at its position).
        ``json_bodies``, when given, holds per message the JSON text its body was decoded
        from (or None): a store may keep that text instead of encoding the body again.
        """

    def helper_pid(self) -> int | None:
        """A process of the store's own that runs now (the SQLite store's writer
        process), whose CPU and memory the metrics report; None when there is none."""
        return None

    @abc.abstractmethod
    def pending(self) -> int:
        """How many inbox items and deliveries wait in the store (for backpressure).

        Synchronous and cheap: it is checked before every intake.
        """

    # -- route stage ---------------------------------------------------------------------

    @abc.abstractmethod
    async def inbox_after(self, route: str, after: int, limit: int) -> list[InboxItem]:
        """Fresh inbox items of a route (never attempted) with seq > ``after``, in order."""

    @abc.abstractmethod
    async def inbox_retries(self, route: str) -> list[InboxItem]:
        """Inbox items of a route that failed before and wait for their next attempt."""

    @abc.abstractmethod
    async def route_done(self, done: Sequence[tuple[InboxItem, dict[str, list[Message]]]]) -> None:
        """Atomically remove inbox items and create one delivery per sink and output.

        Takes a batch so a route worker commits a whole fetched batch at once. Raises
        :class:`~integrator.errors.UnstorableOutput` naming the item when one of its
        outputs cannot be encoded; nothing of the call is written then.
        """

    @abc.abstractmethod
    async def inbox_reschedule(self, item: InboxItem, next_at: float, error: str) -> None:
        """Record a failed route-stage attempt and when to try again."""

    # -- sink stage ----------------------------------------------------------------------

    @abc.abstractmethod
    async def deliveries_after(
        self, route: str, sink: str, after: int, limit: int
    ) -> list[Delivery]:
        """Fresh deliveries of a sink with seq > ``after``, in order."""

    @abc.abstractmethod
    async def delivery_retries(self, route: str, sink: str) -> list[Delivery]:
        """Deliveries of a sink that failed before and wait for their next attempt."""

    @abc.abstractmethod
    async def delivered(self, delivery: Delivery) -> None:
        """The sink took the message: forget the delivery."""

    async def delivered_many(self, deliveries: Sequence[Delivery]) -> None:
        """Forget several delivered records at once (one write where the backend can)."""
        for delivery in deliveries:
            await self.delivered(delivery)

    @abc.abstractmethod
    async def reschedule(self, delivery: Delivery, next_at: float, error: str) -> None:
        """Record a failed attempt and when to try again."""

    @abc.abstractmethod
    async def reroute(self, delivery: Delivery, sink: str, error: str) -> None:
        """Hand a delivery over to another sink of its route (a fallback), attempts reset.

        ``error`` is kept as the first error so the fallback's DLQ entry tells the story.
        """

    # -- dead letters ----------------------------------------------------------------------

    @abc.abstractmethod
    async def dead_letter(self, item: InboxItem | Delivery, error: str) -> DeadLetter:
        """Move an inbox item or a delivery to the DLQ with the reason."""

    @abc.abstractmethod
    async def dlq_list(
        self, *, route: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[DeadLetter]: ...

    @abc.abstractmethod
    async def dlq_get(self, entry_id: int) -> DeadLetter | None: ...

    @abc.abstractmethod
    async def dlq_count(self, route: str | None = None) -> int: ...

    @abc.abstractmethod
    async def dlq_replay(self, entry_ids: Sequence[int]) -> int:
        """Put dead letters back into delivery (attempts reset); return how many."""

    @abc.abstractmethod
    async def dlq_purge(
        self, entry_ids: Sequence[int] | None = None, route: str | None = None
    ) -> int:
        """Delete dead letters (all of them when neither ids nor route is given)."""

    @abc.abstractmethod
    async def dlq_ids(self, route: str | None = None) -> list[int]: ...

    # -- audit trail --------------------------------------------------------------------------

    @abc.abstractmethod
    async def audit(self, action: str, actor: str, details: dict[str, Any]) -> None:
        """Record who did what (reloads, admin actions, DLQ replays and purges)."""

    @abc.abstractmethod
    async def audit_list(
        self, *, since: float | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The newest audit entries first."""

    # -- checkpoints and other state -------------------------------------------------------

    @abc.abstractmethod
    async def get_state(self, key: str) -> Any:
        """A value saved by :meth:`set_state` (poll cursors, OAuth2 tokens…), or None."""

    @abc.abstractmethod
    async def set_state(self, key: str, value: Any) -> None: ...

    @abc.abstractmethod
    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        """Record ``key`` in ``scope``; False when it was already recorded within ``window`` s.

        The ``dedupe`` middleware's memory, so it survives restarts. The window counts
        from the first time the key was recorded (repeats do not extend it). A key
        recorded by the same non-empty ``owner`` (a message id) counts as new, so a
        message that runs the chain again (a retry, a DLQ replay) is not taken for its
        own duplicate. ``scope`` must not be a route name (those hold the route's
        ``dedupe_window`` ids): the middleware uses ``dedupe:NAME``.
        """

    @abc.abstractmethod
    async def depths(self) -> dict[tuple[str, str], int]:
        """Waiting work per (route, sink); sink ``""`` is the route's inbox."""
