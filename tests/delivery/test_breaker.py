"""Circuit breaker: every transition with a fake clock, then the middleware in a chain."""

from __future__ import annotations

import anyio
import pytest

from integrator.components import Context, build_chain
from integrator.config import convert
from integrator.delivery.breaker import (
    BreakerMiddleware,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)
from integrator.errors import DeliveryError, Reject
from integrator.message import Message


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **settings) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "cooldown": 10.0, **settings}
    return CircuitBreaker("crm", clock=clock, **settings)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.before_call() == 0
        breaker.record_failure()


def open_and_wait_out(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, breaker.failure_threshold)
    clock.advance(breaker.cooldown)


# -- the state machine ----------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_lets_calls_through(clock):
    breaker = make(clock)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.before_call() == 0


def test_failures_below_the_threshold_keep_it_closed(clock):
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_a_success_resets_the_consecutive_failures(clock):
    breaker = make(clock)
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_threshold_consecutive_failures_open_it(clock):
    breaker = make(clock)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.now
    assert breaker.times_opened == 1
    assert breaker.total_failures == 3


def test_open_breaker_says_how_long_to_wait(clock):
    breaker = make(clock)
    fail(breaker, 3)
    assert breaker.before_call() == 10
    clock.advance(4)
    assert breaker.before_call() == pytest.approx(6)
    assert breaker.state is BreakerState.OPEN


def test_waiting_is_not_counted_as_a_failure(clock):
    breaker = make(clock)
    fail(breaker, 3)
    for _ in range(5):
        breaker.before_call()
    assert breaker.total_failures == 3
    assert breaker.opened_at == clock.now  # the cooldown was not extended


def test_after_the_cooldown_one_trial_is_admitted(clock):
    breaker = make(clock)
    open_and_wait_out(breaker, clock)
    assert breaker.before_call() == 0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.trials_in_flight == 1
    assert breaker.before_call() > 0  # a second caller waits for the trial's verdict


def test_half_open_admits_half_open_max_trials(clock):
    breaker = make(clock, half_open_max=2)
    open_and_wait_out(breaker, clock)
    assert [breaker.before_call() == 0 for _ in range(3)] == [True, True, False]


def test_a_successful_trial_closes_it(clock):
    breaker = make(clock)
    open_and_wait_out(breaker, clock)
    assert breaker.before_call() == 0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_at is None
    assert breaker.before_call() == 0
    fail(breaker, 2)  # the count started afresh
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_trial_reopens_it_for_a_full_cooldown(clock):
    breaker = make(clock)
    open_and_wait_out(breaker, clock)
    assert breaker.before_call() == 0
    clock.advance(1)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.now
    assert breaker.before_call() == 10
    assert breaker.times_opened == 2


def test_a_neutral_trial_frees_its_slot_without_deciding(clock):
    breaker = make(clock)
    open_and_wait_out(breaker, clock)
    assert breaker.before_call() == 0
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.before_call() == 0


def test_late_outcomes_while_open_change_nothing(clock):
    breaker = make(clock)
    fail(breaker, 3)
    opened_at = breaker.opened_at
    clock.advance(5)
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == opened_at


def test_listeners_see_every_transition(clock):
    breaker = make(clock)
    seen = []
    breaker.on_change.append(lambda b, old, new: seen.append((b.name, old.value, new.value)))
    open_and_wait_out(breaker, clock)
    breaker.before_call()
    breaker.record_success()
    assert seen == [
        ("crm", "closed", "open"),
        ("crm", "open", "half_open"),
        ("crm", "half_open", "closed"),
    ]


def test_a_failing_listener_does_not_break_the_breaker(clock, caplog):
    breaker = make(clock)
    breaker.on_change.append(lambda *args: 1 / 0)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    assert "listener failed" in caplog.text


# -- the registry ---------------------------------------------------------------------------


def test_registry_shares_one_breaker_per_key(clock):
    registry = BreakerRegistry(clock=clock)
    first = registry.get("connection:crm", failure_threshold=2)
    assert registry.get("connection:crm", failure_threshold=2) is first
    assert registry.get("connection:erp") is not first
    assert registry.states() == {"connection:crm": "closed", "connection:erp": "closed"}


def test_registry_applies_new_settings_and_keeps_the_state(clock):
    registry = BreakerRegistry(clock=clock)
    breaker = registry.get("k", failure_threshold=1, cooldown=10)
    fail(breaker, 1)
    again = registry.get("k", failure_threshold=1, cooldown=60)
    assert again is breaker and breaker.state is BreakerState.OPEN
    assert breaker.before_call() == 60


def test_registry_listeners_hear_every_breaker(clock):
    registry = BreakerRegistry(clock=clock)
    seen = []
    registry.on_change.append(lambda b, old, new: seen.append((b.name, new.value)))
    fail(registry.get("a", failure_threshold=1), 1)
    fail(registry.get("b", failure_threshold=1), 1)
    assert seen == [("a", "open"), ("b", "open")]


# -- the middleware -------------------------------------------------------------------------


def middleware(registry: BreakerRegistry | None = None, **options) -> BreakerMiddleware:
    services = {"breakers": registry} if registry is not None else {}
    opts = convert(options, BreakerMiddleware.Options)
    return BreakerMiddleware(opts, Context(route="orders", services=services))


async def call(layer: BreakerMiddleware, outcome: BaseException | None = None) -> None:
    async def terminal(message: Message) -> None:
        if outcome is not None:
            raise outcome

    await build_chain([layer], terminal)(Message(body=1))


async def test_retriable_delivery_errors_and_crashes_trip_the_breaker():
    layer = middleware(failure_threshold=2, cooldown="1h")
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("HTTP 503", retriable=True))
    with pytest.raises(ConnectionResetError):
        await call(layer, ConnectionResetError())
    assert layer.breaker.state is BreakerState.OPEN


async def test_rejects_and_final_refusals_are_not_the_remotes_fault():
    layer = middleware(failure_threshold=1)
    with pytest.raises(Reject):
        await call(layer, Reject("invalid order"))
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("HTTP 422", retriable=False))
    assert layer.breaker.state is BreakerState.CLOSED
    assert layer.breaker.total_failures == 0


async def test_a_reject_during_a_trial_gives_the_slot_back():
    layer = middleware(failure_threshold=1, cooldown="10ms")
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("down"))
    await anyio.sleep(0.02)
    with pytest.raises(Reject):
        await call(layer, Reject("bad message"))
    assert layer.breaker.state is BreakerState.HALF_OPEN
    await call(layer)  # admitted at once: the slot was given back
    assert layer.breaker.state is BreakerState.CLOSED


async def test_an_open_breaker_holds_the_call_until_the_cooldown_ends():
    layer = middleware(failure_threshold=1, cooldown="200ms")
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("down"))
    started = anyio.current_time()
    await call(layer)  # waits, then runs as the half-open trial, and succeeds
    assert anyio.current_time() - started >= 0.15
    assert layer.breaker.state is BreakerState.CLOSED


async def test_callers_queued_behind_a_trial_proceed_once_it_succeeds():
    layer = middleware(failure_threshold=1, cooldown="50ms")
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("down"))
    release = anyio.Event()
    finished: list[str] = []

    async def slow_trial(message: Message) -> None:
        await release.wait()

    async def trial() -> None:
        await build_chain([layer], slow_trial)(Message(body="trial"))
        finished.append("trial")

    async def follower() -> None:
        await call(layer)
        finished.append("follower")

    async with anyio.create_task_group() as tg:
        tg.start_soon(trial)
        await anyio.sleep(0.1)  # the trial is in flight
        tg.start_soon(follower)
        await anyio.sleep(0.05)
        assert finished == []  # the follower waits for the trial's verdict
        release.set()
    assert finished == ["trial", "follower"]


async def test_a_cancelled_trial_gives_its_slot_back():
    layer = middleware(failure_threshold=1, cooldown="10ms")
    with pytest.raises(DeliveryError):
        await call(layer, DeliveryError("down"))
    await anyio.sleep(0.02)

    async def hang(message: Message) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05):
        await build_chain([layer], hang)(Message(body=1))
    assert layer.breaker.trials_in_flight == 0
    with anyio.fail_after(1):
        await call(layer)


async def test_middlewares_with_the_same_key_share_the_engines_breaker():
    registry = BreakerRegistry()
    first = middleware(registry, key="connection:crm", failure_threshold=1, cooldown="1h")
    second = middleware(registry, key="connection:crm", failure_threshold=1, cooldown="1h")
    with pytest.raises(DeliveryError):
        await call(first, DeliveryError("down"))
    assert second.breaker is first.breaker
    assert registry.states() == {"connection:crm": "open"}


async def test_without_a_registry_each_middleware_has_its_own_breaker():
    first = middleware(key="connection:crm", failure_threshold=1)
    second = middleware(key="connection:crm", failure_threshold=1)
    assert first.breaker is not second.breaker


def test_options_reject_nonsense():
    with pytest.raises(ValueError, match="failure_threshold"):
        convert({"failure_threshold": 0}, BreakerMiddleware.Options).validate()
