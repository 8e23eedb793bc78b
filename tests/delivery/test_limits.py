"""Rate and concurrency limits: shared by key across chains, waits counted."""

from __future__ import annotations

import anyio
import pytest

from integrator.components import Context, Middleware, build_chain
from integrator.config import convert
from integrator.delivery.breaker import BreakerMiddleware
from integrator.delivery.limits import (
    ConcurrencyLimitMiddleware,
    LimiterRegistry,
    RateLimitMiddleware,
)
from integrator.message import Message
from integrator.plugins import build_registry, get_plugin_manager


def context(registry: LimiterRegistry | None, route: str = "orders") -> Context:
    return Context(route=route, services={"limiters": registry} if registry else {})


def rate_limit(registry: LimiterRegistry | None, route: str = "orders", **options):
    opts = convert(options, RateLimitMiddleware.Options)
    return RateLimitMiddleware(opts, context(registry, route))


def concurrency(registry: LimiterRegistry | None, route: str = "orders", **options):
    opts = convert(options, ConcurrencyLimitMiddleware.Options)
    return ConcurrencyLimitMiddleware(opts, context(registry, route))


async def count_passing(chains: list[Middleware], per_chain: int, window: float) -> int:
    """Send ``per_chain`` messages down each chain at once; count those through in ``window``."""
    passed = 0

    async def terminal(message: Message) -> None:
        nonlocal passed
        passed += 1

    async with anyio.create_task_group() as tg:
        for layer in chains:
            chain = build_chain([layer], terminal)
            for n in range(per_chain):
                tg.start_soon(chain, Message(body=n))
        await anyio.sleep(window)
        tg.cancel_scope.cancel()
    return passed


# -- rate limits ----------------------------------------------------------------------------


async def test_two_chains_with_the_same_key_share_one_rate_limit():
    registry = LimiterRegistry()
    a = rate_limit(registry, "orders", requests=5, per="1s", key="connection:crm")
    b = rate_limit(registry, "refunds", requests=5, per="1s", key="connection:crm")
    passed = await count_passing([a, b], per_chain=10, window=0.3)
    # a burst of 5, then one more every 200 ms; two separate limits would pass 10+
    assert 5 <= passed <= 8
    assert a.limiter is b.limiter


async def test_chains_without_a_key_each_have_their_own_limit():
    registry = LimiterRegistry()
    a = rate_limit(registry, "orders", requests=5, per="1s")
    b = rate_limit(registry, "refunds", requests=5, per="1s")
    passed = await count_passing([a, b], per_chain=10, window=0.3)
    assert 10 <= passed <= 16


async def test_different_keys_do_not_share():
    registry = LimiterRegistry()
    a = rate_limit(registry, requests=5, per="1s", key="connection:crm")
    b = rate_limit(registry, requests=5, per="1s", key="connection:erp")
    assert a.limiter is not b.limiter


async def test_waits_are_counted_on_the_registry():
    registry = LimiterRegistry()
    layer = rate_limit(registry, requests=5, per="1s", key="connection:crm")
    await count_passing([layer], per_chain=7, window=0.5)
    stats = registry.stats["connection:crm"]
    assert stats.waits >= 1
    assert stats.seconds >= 0.1
    assert registry.total == stats


async def test_calls_within_the_limit_do_not_count_as_waits():
    registry = LimiterRegistry()
    layer = rate_limit(registry, requests=5, per="1s", key="connection:crm")
    assert await count_passing([layer], per_chain=3, window=0.05) == 3
    assert registry.total.waits == 0


async def test_fractional_rates_allow_one_request_per_period():
    layer = rate_limit(None, requests=0.5, per="100ms")  # one per 200 ms
    assert await count_passing([layer], per_chain=5, window=0.3) == 2


def test_a_redefined_key_takes_the_new_rate(caplog):
    registry = LimiterRegistry()
    first = rate_limit(registry, requests=5, per="1s", key="k")
    rate_limit(registry, requests=10, per="1s", key="k")
    assert first.limiter.max_rate == 10
    assert "rate limit 'k' redefined" in caplog.text


@pytest.mark.parametrize("options", [{"requests": 0}, {"requests": 1, "per": 0}])
def test_rate_limit_options_reject_nonsense(options):
    with pytest.raises(ValueError):
        convert(options, RateLimitMiddleware.Options).validate()


# -- concurrency ----------------------------------------------------------------------------


async def run_in_flight(chains: list[Middleware], per_chain: int) -> int:
    """Push messages through every chain at once; return the most seen in flight together."""
    in_flight = high_water = 0

    async def terminal(message: Message) -> None:
        nonlocal in_flight, high_water
        in_flight += 1
        high_water = max(high_water, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1

    async with anyio.create_task_group() as tg:
        for layer in chains:
            chain = build_chain([layer], terminal)
            for n in range(per_chain):
                tg.start_soon(chain, Message(body=n))
    return high_water


async def test_concurrency_max_is_respected():
    assert await run_in_flight([concurrency(None, max=3)], per_chain=12) == 3


async def test_concurrency_limit_is_shared_by_key():
    registry = LimiterRegistry()
    a = concurrency(registry, "orders", max=2, key="connection:crm")
    b = concurrency(registry, "refunds", max=2, key="connection:crm")
    assert await run_in_flight([a, b], per_chain=6) == 2
    assert registry.stats["connection:crm"].waits > 0


async def test_concurrency_limits_without_a_key_are_separate():
    registry = LimiterRegistry()
    a = concurrency(registry, "orders", max=2)
    b = concurrency(registry, "refunds", max=2)
    assert await run_in_flight([a, b], per_chain=6) == 4


async def test_one_task_may_pass_two_chains_sharing_a_key():
    registry = LimiterRegistry()
    outer = concurrency(registry, max=2, key="k")
    inner = concurrency(registry, max=2, key="k")
    seen = []

    async def terminal(message: Message) -> None:
        seen.append(message.body)

    await build_chain([outer, inner], terminal)(Message(body="x"))
    assert seen == ["x"]


async def test_a_failing_call_gives_its_token_back():
    layer = concurrency(None, max=1)

    async def boom(message: Message) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await build_chain([layer], boom)(Message(body=1))
    assert layer.limiter.available_tokens == 1


def test_resizing_a_shared_concurrency_limit():
    registry = LimiterRegistry()
    first = concurrency(registry, max=2, key="k")
    concurrency(registry, max=5, key="k")
    assert first.limiter.total_tokens == 5


# -- the plugin -----------------------------------------------------------------------------


def test_the_builtin_plugin_registers_the_three_middleware():
    pm, registry = get_plugin_manager(builtins=False, entrypoints=False)
    import integrator.delivery.limits as plugin

    pm.register(plugin, name="integrator.delivery.limits")
    registry = build_registry(pm, registry)
    assert registry.get("middleware", "rate_limit").component is RateLimitMiddleware
    assert registry.get("middleware", "concurrency").component is ConcurrencyLimitMiddleware
    assert registry.get("middleware", "breaker").component is BreakerMiddleware
