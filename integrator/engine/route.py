"""One route at run time: its source, the middleware chain worker, and a worker per sink.

::

    source ──submit──> inbox ──chain worker──> one delivery per sink ──sink worker──> sink

Each stage reads its work from the store, so what is in flight at a crash is simply
picked up again at the next start.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
import msgspec

from integrator.components import Context, Middleware, Sink, Source, build_chain
from integrator.config import ComponentSpec, RouteConfig
from integrator.delivery.retry import RetryPolicy
from integrator.delivery.store import Delivery, InboxItem
from integrator.engine.handoff import Handoff
from integrator.engine.health import State
from integrator.engine.services import Services
from integrator.engine.supervisor import supervise
from integrator.engine.wakeup import Wakeup
from integrator.errors import DeliveryError, UnstorableOutput
from integrator.message import Message

log = logging.getLogger("integrator.route")
_json = msgspec.json.Encoder()

#: A message attribute naming the sinks that should get it (set by ``switch``);
#: absent, every sink of the route does.
TARGETS = "integrator.sinks"

BATCH = 256
IDLE_POLL = 2.0  # seconds between store reads when idle (another process may replay the DLQ)


def describe(err: BaseException) -> str:
    """A one-line reason for logs, the DLQ and `status` (middleware name their own
    reasons, e.g. "map: cannot set body.x")."""
    return err.reason if isinstance(err, DeliveryError) else f"{type(err).__name__}: {err}"


class RouteIntake:
    """The :class:`~integrator.components.Intake` a route's source submits to."""

    def __init__(self, runtime: RouteRuntime) -> None:
        self._runtime = runtime
        self._services = runtime.services
        window = runtime.config.dedupe_window
        self._dedupe = None if window is None else float(window)

    async def submit(
        self, messages: Sequence[Message], *, json_bodies: Sequence[bytes | None] | None = None
    ) -> list[bool]:
        if not messages:
            return []
        runtime = self._runtime
        accepted = await self._services.store.enqueue(
            runtime.name, messages, dedupe_window=self._dedupe, json_bodies=json_bodies
        )
        stats = runtime.stats
        new = sum(accepted)
        stats.received += new
        stats.duplicates += len(accepted) - new
        runtime.chain_wakeup.set()
        return accepted

    @property
    def accepting(self) -> bool:
        return self._services.backpressure.accepting

    async def wait_accepting(self) -> None:
        await self._services.backpressure.wait_accepting()

    async def load_checkpoint(self, key: str) -> Any:
        return await self._services.store.get_state(f"checkpoint:{self._runtime.name}:{key}")

    async def save_checkpoint(self, key: str, value: Any) -> None:
        await self._services.store.set_state(f"checkpoint:{self._runtime.name}:{key}", value)


class RouteRuntime:
    """Builds a route's components from its config and runs them under supervision."""

    def __init__(self, config: RouteConfig, services: Services) -> None:
        self.config = config
        self.name = config.name
        self.services = services
        self.stats = services.route_stats(self.name)
        self.chain_wakeup = Wakeup()
        self.draining = False
        self.paused = False
        self._resumed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._source_scope: anyio.CancelScope | None = None
        self._finished = anyio.Event()
        self.source: Source = self._build(config.source, "source")
        self.middleware: list[Middleware] = [
            self._build(spec, "middleware") for spec in config.middleware
        ]
        self.policy = RetryPolicy.from_config(config.retry)
        self.sinks = [SinkWorker(self, spec) for spec in config.sinks]
        self._outputs: list[Message] = []

    def context(self) -> Context:
        return Context(
            route=self.name,
            config=self.services.config,
            logger=logging.getLogger(f"integrator.route.{self.name}"),
            services={"store": self.services.store, **self.services.shared},
        )

    def _build(self, spec: ComponentSpec, kind: str) -> Any:
        registered = self.services.registry.get(kind, spec.type)
        assert registered is not None, f"config validated {kind} {spec.type!r}"
        return registered.component(spec.options, self.context())

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or drained; ``started`` once every component has started."""
        health = self.services.health
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    await tg.start(
                        partial(supervise, keep_going=self._running),
                        self._chain_worker,
                        health.component(f"{self.name}/chain"),
                    )
                    for worker in self.sinks:
                        await tg.start(
                            partial(supervise, keep_going=self._running),
                            worker.run,
                            health.component(f"{self.name}/sink:{worker.name}"),
                        )
                    await tg.start(
                        partial(supervise, keep_going=self._running),
                        self._run_source,
                        health.component(f"{self.name}/source"),
                    )
                    log.info(
                        "route %s started: %s -> %d middleware -> %s",
                        self.name,
                        self.config.source.type,
                        len(self.middleware),
                        ", ".join(w.name for w in self.sinks),
                    )
                    task_status.started()
        finally:
            for key, component in health.components.items():
                if key.startswith(f"{self.name}/"):
                    component.set(State.STOPPED)
            self._finished.set()

    @property
    def finished(self) -> bool:
        """Whether the route's task group has ended (stopped, or died)."""
        return self._finished.is_set()

    def _running(self) -> bool:
        """Whether a crashed component should be restarted (not once we drain)."""
        return not self.draining

    async def _run_source(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        while not self.draining:
            if self.paused:
                task_status.started()
                await self._resumed.wait()
                continue
            with anyio.CancelScope() as self._source_scope:
                await self.source.run(RouteIntake(self), task_status=task_status)
                return
            # cancelled by pause(): loop and wait for resume()

    def pause(self) -> None:
        """Stop taking new messages (the source stops); queued work keeps flowing."""
        if not self.paused:
            self.paused = True
            self._resumed = anyio.Event()
            if self._source_scope is not None:
                self._source_scope.cancel()
            log.info("route %s paused", self.name)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._resumed.set()
            log.info("route %s resumed", self.name)

    async def stop(self, timeout: float) -> None:
        """Stop intake, let in-flight work finish within ``timeout``, then cancel the rest."""
        self.draining = True
        self._resumed.set()
        if self._source_scope is not None:
            self._source_scope.cancel()
        self.chain_wakeup.set()
        for worker in self.sinks:
            worker.wakeup.set()
        with anyio.move_on_after(timeout) as waited:
            await self._finished.wait()
        if waited.cancelled_caught:
            log.warning("route %s: in-flight work did not finish within %.0fs", self.name, timeout)
        if self._scope is not None:
            self._scope.cancel()
        await self._finished.wait()

    # -- the middleware chain stage ---------------------------------------------------------------

    async def _collect(self, message: Message) -> None:
        self._outputs.append(message)

    async def _chain_worker(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        store = self.services.store
        opened: list[Middleware] = []
        try:
            for layer in self.middleware:
                await layer.open()
                opened.append(layer)
            chain = build_chain(self.middleware, self._collect)
            retries = [
                (item.next_at, item.seq, item) for item in await store.inbox_retries(self.name)
            ]
            heapq.heapify(retries)
            cursor = 0
            task_status.started()
            while not self.draining:
                self.chain_wakeup.clear()
                now = time.time()
                batch: list[InboxItem] = []
                while retries and retries[0][0] <= now and len(batch) < BATCH:
                    batch.append(heapq.heappop(retries)[2])
                fresh = await store.inbox_after(self.name, cursor, BATCH)
                if fresh:
                    cursor = fresh[-1].seq
                    batch.extend(fresh)
                if batch:
                    for item in await self._process(batch, chain):
                        heapq.heappush(retries, (item.next_at, item.seq, item))
                    continue
                wait = retries[0][0] - now if retries else IDLE_POLL
                await self.chain_wakeup.wait(min(wait, IDLE_POLL))
        finally:
            with anyio.CancelScope(shield=True):
                for layer in reversed(opened):
                    await _quietly(layer.close(), f"route {self.name}: closing middleware")

    async def _process(self, batch: list[InboxItem], chain: Any) -> list[InboxItem]:
        """Run the chain on each item; commit the outcomes of the batch together."""
        done: list[tuple[InboxItem, dict[str, list[Message]]]] = []
        retry: list[InboxItem] = []
        for item in batch:
            self._outputs = []
            try:
                await chain(item.message)
            except DeliveryError as err:
                if await self._chain_failed(item, err, err.retriable, err.retry_after):
                    retry.append(item)
                continue
            except Exception as err:  # a transform failing on one message: DLQ, keep flowing
                await self._chain_failed(item, err, False, None)
                continue
            outputs = self._outputs
            self.stats.processed += 1
            if outputs:
                done.append((item, self._by_sink(outputs)))
            else:
                self.stats.dropped += 1
                done.append((item, {}))
        done = await self._route_done(done)
        if done:
            fed = {name for _, outputs in done for name in outputs}
            for worker in self.sinks:
                if worker.name in fed:
                    worker.wakeup.set()
        return retry

    async def _route_done(
        self, done: list[tuple[InboxItem, dict[str, list[Message]]]]
    ) -> list[tuple[InboxItem, dict[str, list[Message]]]]:
        """Commit the batch's outcomes; an item whose output cannot be stored goes to the
        DLQ instead (the store writes nothing of a call that fails, so the rest go again).
        Returns what was committed."""
        while done:
            try:
                await self.services.store.route_done(done)
                return done
            except UnstorableOutput as err:
                rest = [entry for entry in done if entry[0].seq != err.item.seq]
                if len(rest) == len(done):  # it names no item of this batch: a store bug
                    raise
                done = rest
                await self._chain_failed(err.item, err, False, None)
        return done

    def _by_sink(self, outputs: list[Message]) -> dict[str, list[Message]]:
        """Which sink gets which output: all of them, unless the chain chose (``switch``)."""
        chosen: dict[str, list[Message]] = {worker.name: [] for worker in self.sinks}
        for message in outputs:
            targets = message.attributes.get(TARGETS)
            if targets is None:
                for messages in chosen.values():
                    messages.append(message)
                continue
            for name in targets:
                if name in chosen:
                    chosen[name].append(message)
                else:
                    log.warning(
                        "route %s: message %s names unknown sink %r; known: %s",
                        self.name,
                        message.id,
                        name,
                        ", ".join(chosen),
                    )
        return {name: messages for name, messages in chosen.items() if messages}

    async def _chain_failed(
        self, item: InboxItem, err: BaseException, retriable: bool, retry_after: float | None
    ) -> bool:
        reason = describe(err)
        now = time.time()
        attempts = item.attempts + 1
        first = item.first_attempt_at or now
        if self.policy.should_retry(attempts, first, now, retriable):
            delay = self.policy.next_delay(attempts, retry_after=retry_after)
            await self.services.store.inbox_reschedule(item, now + delay, reason)
            log.warning(
                "route %s: message %s failed in the chain (attempt %d): %s; retry in %.1fs",
                self.name,
                item.message.id,
                attempts,
                reason,
                delay,
                extra={"route": self.name, "message_id": item.message.id},
            )
            return True
        entry = await self.services.store.dead_letter(item, reason)
        self.stats.dead += 1
        log.error(
            "route %s: message %s dead-lettered after %d attempt(s): %s",
            self.name,
            item.message.id,
            attempts,
            reason,
            extra={"route": self.name, "message_id": item.message.id},
        )
        await self.services.announce_dead_letter(entry)
        return False


class SinkWorker:
    """Delivers one sink's records with retries; ``concurrency`` deliveries at a time."""

    def __init__(self, route: RouteRuntime, spec: ComponentSpec) -> None:
        self.route = route
        self.spec = spec
        self.name = spec.name
        self.wakeup = Wakeup()
        self.stats = route.stats.sink(self.name)
        self.policy = RetryPolicy.from_config(spec.retry or route.config.retry)
        self.concurrency = max(1, spec.concurrency)
        registered = route.services.registry.get("sink", spec.type)
        assert registered is not None
        self.sink: Sink = registered.component(spec.options, route.context())
        self.middleware: list[Middleware] = [route._build(m, "middleware") for m in spec.middleware]
        self.fallback = spec.fallback
        self.breaker: Any = None
        if spec.breaker is not None:
            # The ``breaker`` shorthand is the breaker middleware, outermost, keyed by sink.
            from integrator.delivery.breaker import BreakerMiddleware

            options = BreakerMiddleware.Options(
                failure_threshold=spec.breaker.failure_threshold,
                cooldown=spec.breaker.cooldown,
                half_open_max=spec.breaker.half_open_max,
                key=f"sink:{route.name}/{self.name}",
            )
            breaker_layer = BreakerMiddleware(options, route.context())
            self.breaker = breaker_layer.breaker
            self.middleware.insert(0, breaker_layer)
        self._retries: list[tuple[float, int, Delivery]] = []
        self._acks: list[Delivery] = []
        self._ack_wakeup = Wakeup()
        self._delivering = True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        store = self.route.services.store
        opened: list[Middleware | Sink] = []
        try:
            await self.sink.open()
            opened.append(self.sink)
            for layer in self.middleware:
                await layer.open()
                opened.append(layer)
            chain = build_chain(self.middleware, self.sink.deliver)
            self._retries = [
                (d.next_at, d.seq, d)
                for d in await store.delivery_retries(self.route.name, self.name)
            ]
            heapq.heapify(self._retries)
            queue = Handoff[Delivery](self.concurrency)
            consume = self._batcher if self.spec.batch is not None else self._deliverer
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._ack_writer)
                async with anyio.create_task_group() as tg:
                    for _ in range(self.concurrency):
                        tg.start_soon(consume, queue, chain)
                    task_status.started()
                    try:
                        await self._feed(queue)
                    finally:
                        queue.close()
                self._delivering = False
                self._ack_wakeup.set()
        finally:
            with anyio.CancelScope(shield=True):
                if self._acks:  # cancelled before the writer caught up: record them now
                    acks, self._acks = self._acks, []
                    await _quietly(store.delivered_many(acks), "recording deliveries")
                for component in reversed(opened):
                    await _quietly(
                        component.close(), f"route {self.route.name}: closing {self.name}"
                    )

    async def _ack_writer(self) -> None:
        """Record delivered messages in groups, so a delivery slot never waits for a
        commit (a crash before the record is written means a duplicate, not a loss)."""
        store = self.route.services.store
        while True:
            self._ack_wakeup.clear()
            if self._acks:
                acks, self._acks = self._acks, []
                await store.delivered_many(acks)
                continue
            if not self._delivering:
                return
            await self._ack_wakeup.wait(IDLE_POLL)

    def _acknowledge(self, deliveries: list[Delivery]) -> None:
        now = time.time()
        self._acks.extend(deliveries)
        self._ack_wakeup.set()
        self.stats.delivered += len(deliveries)
        self.stats.last_success_at = now
        for delivery in deliveries:
            self.stats.latency.observe(now - delivery.message.created_at)

    async def _feed(self, queue: Handoff[Delivery]) -> None:
        store = self.route.services.store
        cursor = 0
        while not self.route.draining:
            self.wakeup.clear()
            now = time.time()
            sent = 0
            while self._retries and self._retries[0][0] <= now:
                await queue.put(heapq.heappop(self._retries)[2])
                sent += 1
            fresh = await store.deliveries_after(self.route.name, self.name, cursor, BATCH)
            for delivery in fresh:
                await queue.put(delivery)
            if fresh:
                cursor = fresh[-1].seq
                continue
            if sent:
                continue
            wait = self._retries[0][0] - now if self._retries else IDLE_POLL
            await self.wakeup.wait(min(wait, IDLE_POLL))

    async def _deliverer(self, queue: Handoff[Delivery], chain: Any) -> None:
        while True:
            try:
                delivery = await queue.get()
            except anyio.EndOfStream:
                return
            await self._deliver(delivery, chain)

    async def _batcher(self, queue: Handoff[Delivery], chain: Any) -> None:
        """Group deliveries (``batch`` on the sink) and deliver each group in one call."""
        batch = self.spec.batch
        assert batch is not None
        while True:
            try:
                first = await queue.get()
            except anyio.EndOfStream:
                return
            group, size = [first], _body_size(first.message)
            deadline = time.monotonic() + float(batch.max_wait)
            while len(group) < batch.max_count and size < batch.max_bytes:
                with anyio.move_on_after(deadline - time.monotonic()):
                    try:
                        item = await queue.get()
                    except anyio.EndOfStream:
                        break
                    group.append(item)
                    size += _body_size(item.message)
                    continue
                break  # max_wait reached: send what we have
            await self._deliver_batch(group, chain)

    async def _deliver_batch(self, group: list[Delivery], chain: Any) -> None:
        """One message whose body is the array of bodies; its outcome is every member's."""
        ids = [d.message.id for d in group]
        message = Message(
            id=batch_id(ids),
            body=[d.message.body for d in group],
            headers=group[0].message.headers,
            attributes={"batch_ids": ids, "batch_size": len(group)},
            created_at=min(d.message.created_at for d in group),
        )
        try:
            await chain(message)
        except DeliveryError as err:
            failure: tuple[str, bool, float | None] = (
                describe(err),
                err.retriable,
                err.retry_after,
            )
        except Exception as err:
            failure = (describe(err), True, None)
        else:
            self._acknowledge(group)
            return
        # One delay for the whole group, so its members come back together and are
        # batched again as the same batch (same id), rather than jittered apart.
        attempts = max(d.attempts for d in group) + 1
        delay = self.policy.next_delay(attempts, retry_after=failure[2])
        async with anyio.create_task_group() as tg:
            for delivery in group:
                tg.start_soon(self._failed, delivery, *failure, delay)

    async def _deliver(self, delivery: Delivery, chain: Any) -> None:
        if self.fallback and self.breaker is not None and self.breaker.state.value == "open":
            await self._hand_over(delivery, "circuit breaker open")
            return
        try:
            await chain(delivery.message)
        except DeliveryError as err:
            await self._failed(delivery, describe(err), err.retriable, err.retry_after)
        except Exception as err:  # an unexpected sink error may be transient: retry it
            await self._failed(delivery, describe(err), True, None)
        else:
            self._acknowledge([delivery])

    async def _failed(
        self,
        delivery: Delivery,
        reason: str,
        retriable: bool,
        retry_after: float | None,
        delay: float | None = None,
    ) -> None:
        """Reschedule a failed delivery (after ``delay``, or the policy's backoff), hand it
        to the fallback, or dead-letter it."""
        store = self.route.services.store
        now = time.time()
        attempts = delivery.attempts + 1
        first = delivery.first_attempt_at or now
        self.stats.last_error, self.stats.last_error_at = reason, now
        if self.policy.should_retry(attempts, first, now, retriable):
            if delay is None:
                delay = self.policy.next_delay(attempts, retry_after=retry_after)
            await store.reschedule(delivery, now + delay, reason)
            heapq.heappush(self._retries, (delivery.next_at, delivery.seq, delivery))
            self.stats.failed += 1
            self.wakeup.set()
            log.warning(
                "route %s: sink %s failed for message %s (attempt %d): %s; retry in %.1fs",
                self.route.name,
                self.name,
                delivery.message.id,
                attempts,
                reason,
                delay,
                extra={
                    "route": self.route.name,
                    "sink": self.name,
                    "message_id": delivery.message.id,
                },
            )
            return
        if self.fallback:
            await self._hand_over(delivery, reason)
            return
        entry = await store.dead_letter(delivery, reason)
        self.stats.dead += 1
        log.error(
            "route %s: sink %s: message %s dead-lettered after %d attempt(s): %s",
            self.route.name,
            self.name,
            delivery.message.id,
            attempts,
            reason,
            extra={"route": self.route.name, "sink": self.name, "message_id": delivery.message.id},
        )
        await self.route.services.announce_dead_letter(entry)

    async def _hand_over(self, delivery: Delivery, reason: str) -> None:
        """Give a delivery to this sink's fallback instead of failing it."""
        assert self.fallback is not None
        await self.route.services.store.reroute(delivery, self.fallback, reason)
        self.stats.rerouted += 1
        log.warning(
            "route %s: sink %s hands message %s to fallback %s: %s",
            self.route.name,
            self.name,
            delivery.message.id,
            self.fallback,
            reason,
            extra={"route": self.route.name, "sink": self.name, "message_id": delivery.message.id},
        )
        for worker in self.route.sinks:
            if worker.name == self.fallback:
                worker.wakeup.set()


def batch_id(ids: list[str]) -> str:
    """A batch's id, stable for the same members: sinks can dedupe a retried batch."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return f"batch-{digest}-{len(ids)}"


def _body_size(message: Message) -> int:
    body = message.body
    if isinstance(body, bytes | str):
        return len(body)
    return len(_json.encode(body))


async def _quietly(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception as err:
        log.error("%s failed: %s: %s", what, type(err).__name__, err)
