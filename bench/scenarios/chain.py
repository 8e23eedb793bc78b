"""Scenario 3: the middleware chain in-process, no I/O.

Five layers built from the plugin registry exactly as a route builds them
(``filter``, ``map``, ``validate`` with the end-to-end schema, ``pass``, ``log`` at
debug with the logger at info, so it only checks its level) and composed with
:func:`integrator.components.build_chain`. The baseline is the same work written
by hand with the same libraries (a dict lookup for the filter, a shallow copy for
the map, the same jsonschema-rs validator), so the ratio is what the framework
costs on top of the work itself. Rates are given per CPU-second of this process
("on one core") and per wall-clock second; the target is judged per CPU-second
because that does not depend on what else the machine is doing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from bench.payloads import FILTER, MAP, VALIDATE, event
from bench.report import Check, Scenario
from bench.settings import Settings

#: Target from the issue: messages per second on one core.
PER_CORE = 100_000.0
MESSAGES = 2000

Handler = Callable[[Any], Awaitable[None]]


def run(settings: Settings) -> Scenario:
    scenario = Scenario(
        "chain",
        "3 middleware chain",
        "the same filter/map/validate written by hand with the same libraries",
    )
    result: dict[str, tuple[float, float]] = anyio.run(_measure_all, settings.chain_seconds)
    ours_cpu, ours_wall = result["chain"]
    base_cpu, base_wall = result["hand"]
    per_core = scenario.add("messages/s per core", ours_cpu, base_cpu)
    per_core.check = Check(ours_cpu, ">=", PER_CORE, "/s")
    scenario.add("messages/s wall clock", ours_wall, base_wall)
    onion = scenario.add("5 x pass (onion only)", result["onion"][0], None, "/s")
    onion.ratio = None
    layers = {key[6:]: 1e6 / cpu for key, (cpu, _) in result.items() if key.startswith("layer:")}
    if layers:
        scenario.notes.append(
            "CPU per message, each layer alone: "
            + ", ".join(f"{name} {cost:.1f} us" for name, cost in layers.items())
        )
    scenario.notes.append(
        f"filter, map, validate, pass, log(debug) via build_chain; {settings.chain_seconds:g}s "
        f"each, {MESSAGES} distinct ~1 KB messages cycled; '5 x pass' is the onion alone"
    )
    scenario.details = {
        key: {"per_cpu_second": c, "per_second": w} for key, (c, w) in result.items()
    }
    return scenario


async def _measure_all(seconds: float) -> dict[str, tuple[float, float]]:
    from integrator.components import build_chain
    from integrator.message import Message

    messages = [
        Message(body=event(i, 1767225600.0 + i), headers={"content-type": "application/json"})
        for i in range(MESSAGES)
    ]
    count = [0]

    async def terminal(message: Any) -> None:
        count[0] += 1

    layers = build_layers(
        [FILTER, MAP, VALIDATE, {"type": "pass"}, {"type": "log", "level": "debug"}]
    )
    onion = build_layers([{"type": "pass"}] * 5)
    results = {
        "chain": await _drive(build_chain(layers, terminal), messages, seconds),
        "hand": await _drive(hand_written(terminal), messages, seconds),
        "onion": await _drive(build_chain(onion, terminal), messages, seconds),
    }
    # Each layer alone (validate after map, which adds the fields its schema requires).
    mapped = [await _mapped(layers[1], message) for message in messages]
    alone = seconds / 3
    for index, name in enumerate(("filter", "map", "validate", "pass", "log")):
        inputs = mapped if name == "validate" else messages
        results[f"layer:{name}"] = await _drive(
            build_chain([layers[index]], terminal), inputs, alone
        )
    if count[0] == 0:
        raise RuntimeError("no message reached the end of the chain")
    return results


def build_layers(specs: list[dict[str, Any]]) -> list[Any]:
    """Middleware built from the registry with validated options, as a route builds them."""
    from integrator.components import Context
    from integrator.config import convert
    from integrator.testing import make_registry

    _, registry = make_registry()
    logger = logging.getLogger("integrator.route.bench")
    logger.setLevel(logging.INFO)  # the daemon's default log level
    layers = []
    for spec in specs:
        registered = registry.get("middleware", spec["type"])
        if registered is None:
            raise RuntimeError(f"no middleware {spec['type']!r} in the registry")
        options = convert(
            {k: v for k, v in spec.items() if k != "type"}, registered.component.Options
        )
        check = getattr(options, "validate", None)
        if callable(check):
            check()
        layers.append(registered.component(options, Context(route="bench", logger=logger)))
    return layers


def hand_written(terminal: Handler) -> Handler:
    """What someone would write without the framework, using the same libraries."""
    from integrator.transforms.validate import (
        ValidateOptions,
        build_fast_validator,
        build_validator,
    )

    validator = build_fast_validator(
        build_validator(ValidateOptions(schema=VALIDATE["schema"])), True
    )
    logger = logging.getLogger("integrator.route.bench")

    async def handle(message: Any) -> None:
        body = message.body
        if body.get("kind") != "order":
            return
        body = {**body, "customer_id": body["customer"]["id"], "total_eur": body["total"]}
        if not validator.is_valid(body):
            raise ValueError(next(validator.iter_errors(body)).message)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("message %s", message.id)
        await terminal(msgspec.structs.replace(message, body=body))

    return handle


async def _mapped(layer: Any, message: Any) -> Any:
    """What ``layer`` hands on for ``message``."""
    out: list[Any] = []

    async def keep(result: Any) -> None:
        out.append(result)

    await layer(message, keep)
    return out[0]


async def _drive(handler: Handler, messages: list[Any], seconds: float) -> tuple[float, float]:
    """Messages per CPU-second and per wall-clock second through ``handler``."""
    for message in messages[:200]:  # warm up
        await handler(message)
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        for message in messages:
            await handler(message)
        done += len(messages)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return done / max(cpu, 1e-9), done / wall
