"""An :class:`~integrator.components.Intake` that a test steers and reads.

A source's one guarantee is *acknowledge after commit*: the broker, the queue or
the cursor moves only once :meth:`Intake.submit` has returned. The engine's real
intake commits too quickly to watch that moment, and cannot be told to fail. A
test runs the source against a :class:`RecordingIntake` instead, which can hold a
commit open, fail it like a full disk, refuse intake like a store above its
high-water mark, and records what was offered, committed and checkpointed::

    intake = RecordingIntake()
    intake.gate = anyio.Event()             # the next commit hangs until gate.set()
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        ...publish one message...
        await intake.submitting.wait()
        assert broker_still_holds_it()      # not acknowledged before the commit
        intake.gate.set()
        await intake.wait_committed(1)
        tg.cancel_scope.cancel()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from integrator.message import Message, same_data

#: Called with each batch as its submit begins (before the gate and the failure).
SubmitHook = Callable[[Sequence[Message]], Awaitable[None]]


class RecordingIntake:
    """An intake whose commits the test controls; everything it saw is kept.

    Set :attr:`gate` to an unset event to hold commits, :attr:`fail` to an exception
    (usually :class:`~integrator.errors.StoreError`) to refuse them, and call
    :meth:`pause` / :meth:`resume` for backpressure. ``on_submit`` runs as each
    submit begins: the moment to look at the broker while the commit is pending.
    """

    def __init__(
        self,
        *,
        checkpoints: dict[str, Any] | None = None,
        on_submit: SubmitHook | None = None,
    ) -> None:
        #: Messages committed, in order.
        self.committed: list[Message] = []
        #: Every message submitted, committed or not.
        self.offered: list[Message] = []
        #: The JSON text handed over with each offered message (``json_bodies``), or None.
        self.offered_json: list[bytes | None] = []
        #: Set once a submit has begun.
        self.submitting = anyio.Event()
        #: While set to an unset event, submits wait for it before committing.
        self.gate: anyio.Event | None = None
        #: While set, submits raise it instead of committing.
        self.fail: BaseException | None = None
        #: Set while intake is accepted; unset means backpressure.
        self.open = anyio.Event()
        self.open.set()
        #: Checkpoints by key: ``load_checkpoint`` reads them, ``save_checkpoint`` writes.
        self.checkpoints: dict[str, Any] = dict(checkpoints or {})
        #: Every ``save_checkpoint(key, value)`` call, in order.
        self.saved: list[tuple[str, Any]] = []
        self.on_submit = on_submit
        self._committed_more = anyio.Event()

    def pause(self) -> None:
        """Refuse intake (``accepting`` is False, ``wait_accepting`` blocks)."""
        if self.open.is_set():
            self.open = anyio.Event()

    def resume(self) -> None:
        """Accept intake again, waking the sources waiting for it."""
        self.open.set()

    async def wait_committed(self, count: int = 1, timeout: float = 10.0) -> list[Message]:
        """Wait until at least ``count`` messages are committed; return them all.

        Raises :class:`AssertionError` when they are not there after ``timeout`` s.
        """
        with anyio.move_on_after(timeout):
            while len(self.committed) < count:
                await self._committed_more.wait()
            return list(self.committed)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {count} committed messages"
            f" ({len(self.committed)} so far)"
        )

    # The Intake protocol.

    async def submit(
        self, messages: Sequence[Message], *, json_bodies: Sequence[bytes | None] | None = None
    ) -> list[bool]:
        if json_bodies is not None:
            _check_json_bodies(messages, json_bodies)
        self.offered.extend(messages)
        self.offered_json.extend(json_bodies if json_bodies is not None else [None] * len(messages))
        self.submitting.set()
        if self.on_submit is not None:
            await self.on_submit(messages)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.committed.extend(messages)
        woken, self._committed_more = self._committed_more, anyio.Event()
        woken.set()
        return [True] * len(messages)

    @property
    def accepting(self) -> bool:
        return self.open.is_set()

    async def wait_accepting(self) -> None:
        await self.open.wait()

    async def load_checkpoint(self, key: str) -> Any:
        return self.checkpoints.get(key)

    async def save_checkpoint(self, key: str, value: Any) -> None:
        self.saved.append((key, value))
        self.checkpoints[key] = value


def _check_json_bodies(messages: Sequence[Message], json_bodies: Sequence[bytes | None]) -> None:
    """The contract of ``submit(json_bodies=…)``: one per message, each the body's JSON text."""
    if len(json_bodies) != len(messages):
        raise AssertionError(f"submit: {len(json_bodies)} json_bodies for {len(messages)} messages")
    for position, (message, text) in enumerate(zip(messages, json_bodies, strict=True)):
        if text is not None and not same_data(msgspec.json.decode(text), message.body):
            raise AssertionError(
                f"submit: json_bodies[{position}] does not decode to message {message.id}'s body"
            )
