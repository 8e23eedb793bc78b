"""Circuit breakers: stop hammering a remote that keeps failing, then probe it gently.

A :class:`CircuitBreaker` is a small synchronous state machine with an injected
clock, so every transition is testable without sleeping. It *delays* calls while
open instead of failing them: the message waits for the remote rather than burning
its retry attempts on a remote known to be down. :class:`BreakerMiddleware` puts one
in a chain; a :class:`BreakerRegistry` (held by the engine as the ``"breakers"``
service) lets every chain that talks to the same remote share one breaker.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import DeliveryError
from integrator.message import Message
from integrator.types import Duration

log = logging.getLogger("integrator.delivery.breaker")

#: The key of the shared :class:`BreakerRegistry` in ``Context.services``.
SERVICE = "breakers"


class BreakerState(enum.Enum):
    CLOSED = "closed"  # calls flow; consecutive failures are counted
    OPEN = "open"  # calls wait until the cooldown has passed
    HALF_OPEN = "half_open"  # a few trial calls decide between closed and open


#: ``listener(breaker, old_state, new_state)``, called on every transition.
ChangeListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures, for ``cooldown`` seconds.

    Protocol for a caller: ask :meth:`before_call`; when it returns 0, make the call
    and report exactly one of :meth:`record_success`, :meth:`record_failure` or
    :meth:`record_neutral` (an outcome that says nothing about the remote's health,
    or a cancelled call), so that half-open trial slots are always given back.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        half_open_max: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.configure(failure_threshold, cooldown, half_open_max)
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.opened_at: float | None = None
        #: Consecutive failures while closed (reset by a success).
        self.consecutive_failures = 0
        self.total_successes = 0
        self.total_failures = 0
        self.times_opened = 0
        #: Half-open trial calls admitted and not yet reported.
        self.trials_in_flight = 0
        self.on_change: list[ChangeListener] = []
        self._changed: anyio.Event | None = None

    def configure(self, failure_threshold: int, cooldown: float, half_open_max: int) -> None:
        """Change the settings in place (a reload), keeping the current state."""
        if failure_threshold < 1 or half_open_max < 1 or cooldown < 0:
            raise ValueError(
                "a breaker needs failure_threshold >= 1, half_open_max >= 1 and cooldown >= 0"
            )
        self.failure_threshold = failure_threshold
        self.cooldown = float(cooldown)
        self.half_open_max = half_open_max

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    def before_call(self) -> float:
        """0 when a call may proceed now, else the seconds to wait before asking again.

        Waiting is not a failure. In half-open state the call is admitted as one of
        the ``half_open_max`` trials; when all trial slots are taken the answer is the
        cooldown, an upper bound (:meth:`changed` fires as soon as a trial reports).
        """
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            remaining = self.opened_at + self.cooldown - self.clock()
            if remaining > 0:
                return remaining
            self._transition(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self.trials_in_flight >= self.half_open_max:
                return self.cooldown or 0.001
            self.trials_in_flight += 1
        return 0.0

    def record_success(self) -> None:
        self.total_successes += 1
        if self.state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.CLOSED)
        elif self.state is BreakerState.CLOSED:
            self.consecutive_failures = 0
        # a late success of a call started before the breaker opened changes nothing

    def record_failure(self) -> None:
        self.total_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open()
        elif self.state is BreakerState.CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self._open()
        # a late failure while open does not extend the cooldown

    def record_neutral(self) -> None:
        """The call ended without a verdict on the remote: give back its trial slot."""
        if self.state is BreakerState.HALF_OPEN and self.trials_in_flight:
            self.trials_in_flight -= 1
            self._wake()

    def changed(self) -> anyio.Event:
        """An event set at the next transition or freed trial slot (for waiting callers)."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _open(self) -> None:
        self.opened_at = self.clock()
        self.times_opened += 1
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        self.trials_in_flight = 0
        if new is BreakerState.CLOSED:
            self.consecutive_failures = 0
            self.opened_at = None
        log.log(
            logging.WARNING if new is BreakerState.OPEN else logging.INFO,
            "circuit breaker %s: %s -> %s",
            self.name,
            old.value,
            new.value,
        )
        self._wake()
        for listener in list(self.on_change):
            try:
                listener(self, old, new)
            except Exception:  # an observer must never break delivery
                log.exception("circuit breaker %s: on_change listener failed", self.name)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class BreakerRegistry:
    """Breakers by key (``connection:crm``, ``route:orders/http``), created on first use.

    The engine holds one per daemon so that every chain naming the same key shares
    one breaker, and ``integrator status`` can list them. Listeners in
    :attr:`on_change` are attached to every breaker the registry creates.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.on_change: list[ChangeListener] = []
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(
        self,
        key: str,
        *,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        half_open_max: int = 1,
    ) -> CircuitBreaker:
        """The breaker for ``key``; an existing one takes the given settings (last wins)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(key, failure_threshold, cooldown, half_open_max, self.clock)
            breaker.on_change.append(self._notify)
            self._breakers[key] = breaker
        else:
            breaker.configure(failure_threshold, cooldown, half_open_max)
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def states(self) -> dict[str, str]:
        """Key -> state name, for status pages and metrics."""
        return {key: breaker.state.value for key, breaker in self._breakers.items()}

    def _notify(self, breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        for listener in list(self.on_change):
            listener(breaker, old, new)


class BreakerMiddleware(Middleware):
    """Holds messages back while the rest of the chain keeps failing.

    Failures are retriable :class:`~integrator.errors.DeliveryError` and unexpected
    exceptions. A non-retriable ``DeliveryError`` (``Reject`` included) means the
    remote answered and refused this message: the message's fault, not the
    remote's, so it neither trips nor heals the breaker. Every error is re-raised.
    With ``key``, the breaker is shared through the engine's registry (and visible
    in ``integrator status``); without, each instance has its own.
    """

    description = "pause delivery while the rest of the chain keeps failing (circuit breaker)"

    class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        failure_threshold: int = 5
        cooldown: Duration = Duration(30)
        half_open_max: int = 1
        key: str | None = None

        def validate(self) -> None:
            if self.failure_threshold < 1:
                raise ValueError("failure_threshold must be at least 1")
            if self.half_open_max < 1:
                raise ValueError("half_open_max must be at least 1")

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        settings = {
            "failure_threshold": options.failure_threshold,
            "cooldown": float(options.cooldown),
            "half_open_max": options.half_open_max,
        }
        registry = context.services.get(SERVICE)
        if options.key is not None and isinstance(registry, BreakerRegistry):
            self.breaker = registry.get(options.key, **settings)
        else:
            name = options.key or f"route:{context.route}"
            self.breaker = CircuitBreaker(name, **settings)

    async def __call__(self, message: Message, call_next: Next) -> None:
        breaker = self.breaker
        while (delay := breaker.before_call()) > 0:
            with anyio.move_on_after(delay):
                await breaker.changed().wait()
        verdict: bool | None = None  # True success, False failure, None neutral
        try:
            await call_next(message)
            verdict = True
        except DeliveryError as err:
            verdict = False if err.retriable else None
            raise
        except Exception:
            verdict = False
            raise
        finally:
            if verdict is True:
                breaker.record_success()
            elif verdict is False:
                breaker.record_failure()
            else:
                breaker.record_neutral()
