"""The alert manager: evaluate the rules every few seconds, send what changed.

Rate limiting lives here, per rule and subject (a breaker, a route, an auth): one
alert once a condition has held for ``for``, the same again at most every
``repeat`` while it holds, and one "resolved" notice when it clears, so an outage
sends one alert rather than one per failed message. Firing alerts are kept in the
store, so a restart neither repeats them early nor forgets to resolve them.

Alerts go through any sink, built from ``[alerts] sink`` for each alert (alerts are
rare; a fresh sink picks up a reloaded config). A failed send is retried a few
times with backoff, then logged; nothing here can stop the daemon.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from integrator.alerts.conditions import Conditions, Finding, Snapshot
from integrator.components import Context, Sink
from integrator.config import AlertRule, AlertsConfig
from integrator.errors import DeliveryError, IntegratorError
from integrator.message import Message
from integrator.types import REDACTOR

if TYPE_CHECKING:
    from integrator.engine.daemon import Daemon

log = logging.getLogger("integrator.alerts")

#: The key of the manager in ``services.shared``.
SERVICE = "alerts"
#: Where firing alerts are remembered across restarts (``Store.set_state``).
STATE_KEY = "alerts:firing"
#: Alerts waiting for the sender; beyond this, new ones are logged and dropped.
QUEUE_SIZE = 100
#: The longest one delivery attempt may take (a sink without its own timeout).
ATTEMPT_TIMEOUT = 60.0


class Alert(msgspec.Struct, kw_only=True):
    """A condition under watch: pending until it has held for ``for``, then firing."""

    rule: str
    when: str
    subject: str
    route: str | None
    #: When the condition began (or was first seen).
    since: float
    summary: str = ""
    details: dict[str, Any] = {}
    firing: bool = False
    sent_at: float = 0.0
    #: Firing notices sent so far (1 for the first, more for repeats).
    notices: int = 0
    #: Loaded from the store at start: resolved only once the daemon has settled.
    restored: bool = False


class AlertManager:
    """Runs in the daemon's task group; one per daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.conditions = Conditions(daemon)
        #: ``"rule|subject"`` -> its alert (pending or firing).
        self.alerts: dict[str, Alert] = {}
        self.started_at = time.time()
        #: Alert messages the sink took, and those given up on.
        self.delivered = 0
        self.undelivered = 0
        self._send: MemoryObjectSendStream[Message] | None = None

    @property
    def config(self) -> AlertsConfig:
        return self.daemon.config.alerts

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self._restore()
        send, receive = anyio.create_memory_object_stream[Message](QUEUE_SIZE)
        async with send, anyio.create_task_group() as tg:
            self._send = send
            tg.start_soon(self._sender, receive)
            task_status.started()
            while True:
                await self.evaluate()
                await anyio.sleep(float(self.config.interval))

    # -- evaluation ---------------------------------------------------------------------------

    async def evaluate(self) -> None:
        """One round: compare every rule with the daemon's state; never raises."""
        if self.daemon._stop.is_set():  # stopping routes look healthy: say nothing
            return
        try:
            await self._evaluate(time.time())
        except Exception as err:
            log.error(
                "evaluating the alert rules failed: %s: %s",
                type(err).__name__,
                REDACTOR.redact(str(err)),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )

    async def _evaluate(self, now: float) -> None:
        rules = {rule.name: rule for rule in self.config.rules}
        if not rules and not self.alerts:
            return
        self.conditions.begin()
        snapshot = Snapshot(self.daemon)
        seen: set[str] = set()
        changed = False
        for rule in rules.values():
            for finding in await self.conditions.findings(rule, snapshot):
                key = f"{rule.name}|{finding.subject}"
                seen.add(key)
                changed |= self._holds(rule, key, finding, now)
        for key, alert in list(self.alerts.items()):
            if key not in seen and self._may_clear(alert, rules.get(alert.rule), now):
                del self.alerts[key]
                if alert.firing:
                    log.info("alert %s resolved: %s", alert.rule, alert.summary)
                    self._queue(alert, "resolved", now)
                    changed = True
        if changed:
            await self._save()

    def _holds(self, rule: AlertRule, key: str, finding: Finding, now: float) -> bool:
        """The condition holds: fire or repeat when due. Returns whether a notice went out."""
        alert = self.alerts.get(key)
        if alert is None:
            since = now if finding.since is None else min(now, finding.since)
            alert = self.alerts[key] = Alert(
                rule=rule.name, when=rule.when, subject=finding.subject, route=None, since=since
            )
        alert.route = finding.route
        alert.summary = REDACTOR.redact(finding.summary)
        alert.details = _scrub(finding.details)
        alert.restored = False
        if not alert.firing:
            if now - alert.since < float(rule.for_):
                return False
            alert.firing = True
            log.warning("alert %s firing: %s", rule.name, alert.summary)
        elif not rule.repeat or now - alert.sent_at < float(rule.repeat):
            return False
        alert.sent_at = now
        alert.notices += 1
        self._queue(alert, "firing", now)
        return True

    def _may_clear(self, alert: Alert, rule: AlertRule | None, now: float) -> bool:
        """Whether an alert whose condition no longer holds may be dropped (and resolved).

        An alert remembered from before a restart waits until the daemon has run for
        the rule's ``for`` (two evaluations at least): the routes need a moment to
        show again what was wrong.
        """
        if not alert.restored or rule is None:
            return True
        settle = max(float(rule.for_), 2 * float(self.config.interval))
        return now - self.started_at >= settle

    # -- the alert messages -------------------------------------------------------------------

    def _queue(self, alert: Alert, state: str, now: float) -> None:
        lasted = now - alert.since
        details = dict(alert.details)
        if state == "resolved":
            text = f"RESOLVED: {alert.summary} (after {_span(lasted)})"
            details.update(resolved_at=now, duration=round(lasted, 3))
        else:
            still = f" (for {_span(lasted)} now)" if alert.notices > 1 else ""
            text = f"FIRING: {alert.summary}{still}"
            details["notice"] = alert.notices
        message = Message(
            body={
                "alert": alert.rule,
                "state": state,
                "when": alert.when,
                "route": alert.route,
                "summary": alert.summary,
                "since": alert.since,
                "details": details,
                "text": f"[integrator] {text}",
            },
            attributes={"integrator.alert": alert.rule},
        )
        try:
            if self._send is None:
                raise anyio.WouldBlock
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.undelivered += 1
            log.error("alert queue full: not sending %s %s: %s", alert.rule, state, alert.summary)

    async def _sender(self, receive: anyio.abc.ObjectReceiveStream[Message]) -> None:
        async with receive:
            async for message in receive:
                await self.deliver(message)

    async def deliver(self, message: Message) -> bool:
        """Send one alert through the configured sink, retrying; False if it never went."""
        config = self.config
        delay = float(config.backoff)
        what = f"alert {message.body['alert']} ({message.body['state']})"
        for attempt in range(1, config.attempts + 1):
            try:
                with anyio.fail_after(ATTEMPT_TIMEOUT):
                    await self._deliver_once(message)
            except DeliveryError as err:
                reason, retriable = err.reason, err.retriable
            except TimeoutError:
                reason, retriable = f"no answer within {ATTEMPT_TIMEOUT:g}s", True
            except Exception as err:  # a sink's own failure: never the daemon's
                reason, retriable = f"{type(err).__name__}: {err}", True
            else:
                self.delivered += 1
                return True
            reason = REDACTOR.redact(reason)
            if not retriable or attempt == config.attempts:
                self.undelivered += 1
                log.error("%s could not be sent (attempt %d): %s", what, attempt, reason)
                return False
            log.warning("%s: attempt %d failed: %s; retry in %.1fs", what, attempt, reason, delay)
            await anyio.sleep(delay)
            delay *= 2
        return False

    async def _deliver_once(self, message: Message) -> None:
        spec = self.daemon.config.alert_sink
        services = self.daemon.services
        if spec is None or services is None:
            raise DeliveryError("no [alerts] sink is configured", retriable=False)
        registered = self.daemon.registry.get("sink", spec.type)
        if registered is None:
            raise DeliveryError(f"unknown sink type {spec.type!r}", retriable=False)
        context = Context(
            route="alerts",
            config=self.daemon.config,
            logger=log,
            services={"store": services.store, **services.shared},
        )
        sink: Sink = registered.component(spec.options, context)
        try:
            await sink.open()
            await sink.deliver(message)
        finally:
            with anyio.CancelScope(shield=True):
                await sink.close()

    # -- remembering firing alerts --------------------------------------------------------------

    async def _save(self) -> None:
        services = self.daemon.services
        if services is None:
            return
        firing = [msgspec.to_builtins(a) for a in self.alerts.values() if a.firing]
        try:
            await services.store.set_state(STATE_KEY, firing)
        except IntegratorError as err:
            log.error("cannot remember the firing alerts in the store: %s", err)

    async def _restore(self) -> None:
        services = self.daemon.services
        if services is None:
            return
        try:
            saved = await services.store.get_state(STATE_KEY)
            alerts = msgspec.convert(saved or [], list[Alert])
        except (IntegratorError, msgspec.ValidationError) as err:
            log.error("cannot read the alerts that were firing before the restart: %s", err)
            return
        for alert in alerts:
            alert.restored = True
            self.alerts[f"{alert.rule}|{alert.subject}"] = alert


async def start_alerts(daemon: Daemon, tg: anyio.abc.TaskGroup) -> AlertManager:
    """Start the alert manager in ``tg`` (always: a reload may add rules)."""
    assert daemon.services is not None
    manager = AlertManager(daemon)
    daemon.services.shared[SERVICE] = manager
    await tg.start(manager.run)
    return manager


def _scrub(value: Any) -> Any:
    """A copy of ``value`` with every known secret replaced by ``***``."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _span(seconds: float) -> str:
    """``42s``, ``5m10s``, ``3h02m``: how long, for people."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
