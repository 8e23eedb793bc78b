"""Running one case: the route's middleware chain on the input, sinks captured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio

from integrator.components import Context, Middleware, Next, build_chain
from integrator.config import ComponentSpec, Config
from integrator.errors import DeliveryError
from integrator.message import Message
from integrator.plugins import Registry
from integrator.routetest.cases import RouteCase
from integrator.routetest.offline import NotAvailableInTests, offline_services

log = logging.getLogger("integrator.test")


@dataclass
class Outcome:
    """What happened to a case's input: deliveries per sink, or the one failure."""

    deliveries: dict[str, list[Message]]
    dlq: str | None = None
    retry: str | None = None
    broken: str | None = None


async def run_case(case: RouteCase, config: Config, registry: Registry) -> Outcome:
    """Run the route's chain (and each sink's own middleware) on the case's input."""
    from integrator.engine.route import TARGETS

    route = config.routes[case.route]
    services = offline_services(config, registry)
    outcome = Outcome(deliveries={sink.name: [] for sink in route.sinks})
    logger = logging.getLogger(f"integrator.test.{route.name}")

    def build(spec: ComponentSpec) -> Middleware:
        registered = registry.get("middleware", spec.type)
        assert registered is not None, f"config validated middleware {spec.type!r}"
        context = Context(route=route.name, config=config, logger=logger, services=dict(services))
        layer: Middleware = registered.component(spec.options, context)
        return layer

    opened: list[Middleware] = []
    try:
        try:
            layers = [build(spec) for spec in route.middleware]
            per_sink = {
                sink.name: [build(spec) for spec in sink.middleware] for sink in route.sinks
            }
            for layer in [*layers, *(m for chain in per_sink.values() for m in chain)]:
                await layer.open()
                opened.append(layer)
        except Exception as err:
            why = str(err) if isinstance(err, NotAvailableInTests) else _describe(err)
            outcome.broken = f"the route's middleware cannot start: {why}"
            return outcome
        outputs: list[Message] = []
        chain = build_chain(layers, _capture(outputs))
        sinks = {
            name: build_chain(m, _capture(outcome.deliveries[name])) for name, m in per_sink.items()
        }
        for message in case.inputs:
            outputs.clear()
            if not await _attempt(outcome, chain, message, ""):
                return outcome
            for output in outputs:
                targets = output.attributes.get(TARGETS)
                names = list(sinks) if targets is None else _names(targets)
                for name in names:
                    if name not in sinks:
                        outcome.deliveries.setdefault(f"unknown sink {name!r}", []).append(output)
                    elif not await _attempt(outcome, sinks[name], output, f"sink {name}: "):
                        return outcome
        return outcome
    finally:
        with anyio.CancelScope(shield=True):
            for layer in reversed(opened):
                try:
                    await layer.close()
                except Exception as err:
                    log.warning("route %s: closing middleware failed: %s", route.name, err)


def _capture(into: list[Message]) -> Next:
    async def capture(message: Message) -> None:
        into.append(message)

    return capture


def _names(targets: Any) -> list[str]:
    return [targets] if isinstance(targets, str) else [str(name) for name in targets]


async def _attempt(outcome: Outcome, handler: Next, message: Message, where: str) -> bool:
    """Run one step; on failure record it in ``outcome`` and answer False."""
    try:
        await handler(message)
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, NotAvailableInTests):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            outcome.broken = f"{where}{cause}"
        elif isinstance(err, DeliveryError) and err.retriable:
            outcome.retry = where + _describe(err)
        else:  # the engine dead-letters a Reject and any unexpected error alike
            outcome.dlq = where + _describe(err)
        return False
    return True


def _describe(err: BaseException) -> str:
    from integrator.engine.route import describe

    return describe(err)


# -- judging ------------------------------------------------------------------------------
