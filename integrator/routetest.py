"""Route tests: run a route's middleware chain on example messages, offline, and compare
what each sink would receive with what the operator wrote down.

Cases live in ``[[routes.NAME.tests]]`` tables of the config, or of ``<stem>.test.toml``
and ``<stem>.*.test.toml`` files beside it (``integrator.toml`` →
``integrator.test.toml``, ``integrator.orders.test.toml``). Sources and sinks are never
built: the input stands in for the source, and a capture stands in for every sink.
Nothing reaches the network (see :class:`OfflineHttpClients`). docs/route-tests.md
is the operator's guide.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec

from integrator.components import Context, Middleware, Next, build_chain
from integrator.config import ComponentSpec, Config, RouteConfig, find_config, load_config
from integrator.errors import ConfigError, DeliveryError, IntegratorError
from integrator.http.client import HttpClients
from integrator.message import Message
from integrator.plugins import Registry, build_registry, get_plugin_manager

log = logging.getLogger("integrator.test")

EXIT_OK, EXIT_FAILED = 0, 1
#: An ``expect`` key meaning "every sink not named otherwise".
EVERY_SINK = "*"
_OUTCOME_KEYS = ("drop", "dlq", "retry")


class NotAvailableInTests(IntegratorError, AttributeError):
    """Raised when a middleware asks a route test for something it cannot have offline:
    the network, or a durable-store feature beyond key-value state. It fails the case
    whatever it expected, so a test never passes by accident on a missing service."""


class OfflineHttpClients(HttpClients):
    """The ``"http"`` service during route tests: every connection refuses to open."""

    async def acquire(self, name: str | None, config: Any = None) -> Any:
        raise NotAvailableInTests(
            f"connection {name or '(none)'}: integrator test runs offline and makes no HTTP "
            'requests; test lookups with a static table (lookup = "table") or a python '
            "function instead"
        )


class InMemoryTestStore:
    """Stands in for the durable store in route tests: state in memory, fresh per case.

    It keeps key-value state (``get_state``/``set_state``: checkpoints, tokens) and
    the dedupe memory (``remember``). Any other store method fails the case with
    :class:`NotAvailableInTests`.
    """

    def __init__(self) -> None:
        from integrator.transforms.dedupe import MemorySeen

        self.state: dict[str, Any] = {}
        self._seen = MemorySeen()

    async def get_state(self, key: str) -> Any:
        return self.state.get(key)

    async def set_state(self, key: str, value: Any) -> None:
        self.state[key] = value

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        return await self._seen.remember(scope, key, window, owner=owner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotAvailableInTests(f"the route-test store has no {name}(): it keeps state only")


# -- cases --------------------------------------------------------------------------------


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class InputMessage(_Strict):
    body: Any = None
    headers: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    id: str | None = None


class ExpectedMessage(_Strict):
    """What one delivered message must look like: ``body`` (and ``id``) exactly when
    given, and only the ``headers``/``attributes`` keys given (headers case-insensitive)."""

    body: Any = msgspec.UNSET
    headers: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    id: Any = msgspec.UNSET


class _CaseTable(_Strict):
    input: InputMessage | list[InputMessage]
    expect: dict[str, Any]
    name: str = ""


@dataclass
class Expectation:
    sinks: dict[str, list[ExpectedMessage]] = field(default_factory=dict)
    drop: bool = False
    dlq: str | None = None
    retry: str | None = None


@dataclass
class RouteCase:
    route: str
    name: str
    inputs: list[Message]
    expect: Expectation


def case_files(config_path: Path) -> list[Path]:
    """The ``*.test.toml`` files that belong to a config: its stem, then ``.test.toml``."""
    folder, stem = config_path.parent, config_path.name.removesuffix(".toml")
    found = [*folder.glob(f"{stem}.test.toml"), *sorted(folder.glob(f"{stem}.*.test.toml"))]
    return [path for path in found if path.resolve() != config_path.resolve()]


def collect_cases(config: Config, routes: Sequence[str] = ()) -> list[RouteCase]:
    """Every case of the chosen routes (all when none); ConfigError lists every problem."""
    problems: list[str] = []
    unknown = [name for name in routes if name not in config.routes]
    for name in unknown:
        known = ", ".join(config.routes) or "none"
        problems.append(f"--route {name}: no such route in {config.path}; routes: {known}")
    tables: list[tuple[str, Path, list[Any]]] = [
        (name, config.path, route.tests) for name, route in config.routes.items()
    ]
    for path in case_files(config.path):
        tables.extend(_read_case_file(path, config, problems))
    cases: list[RouteCase] = []
    numbers: dict[str, int] = {}
    for route_name, path, raws in tables:
        route = config.routes[route_name]
        for index, raw in enumerate(raws):
            numbers[route_name] = numbers.get(route_name, 0) + 1
            where = f"{path}: routes.{route_name}.tests[{index}]"
            case = _parse_case(raw, route, numbers[route_name], where, problems)
            if case is not None and (not routes or route_name in routes):
                cases.append(case)
    if problems:
        raise ConfigError(problems)
    return cases


def _read_case_file(
    path: Path, config: Config, problems: list[str]
) -> list[tuple[str, Path, list[Any]]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        problems.append(f"{path}: cannot read test cases: {err}")
        return []
    others = sorted(set(data) - {"routes"})
    if others:
        problems.append(f"{path}: a test file holds [[routes.NAME.tests]] only, found {others}")
    found = []
    for route_name, table in data.get("routes", {}).items():
        if route_name not in config.routes:
            known = ", ".join(config.routes) or "none"
            problems.append(f"{path}: routes.{route_name}: no such route; routes: {known}")
        elif not isinstance(table, dict) or set(table) != {"tests"}:
            problems.append(f"{path}: routes.{route_name}: expected [[routes.NAME.tests]] only")
        elif not isinstance(table["tests"], list):
            problems.append(f"{path}: routes.{route_name}.tests: expected an array of tables")
        else:
            found.append((route_name, path, table["tests"]))
    return found


def _parse_case(
    raw: Any, route: RouteConfig, number: int, where: str, problems: list[str]
) -> RouteCase | None:
    try:
        table = msgspec.convert(raw, _CaseTable, strict=True)
    except msgspec.ValidationError as err:
        problems.append(_explain(err, where))
        return None
    inputs = table.input if isinstance(table.input, list) else [table.input]
    if not inputs:
        problems.append(f"{where}.input: give at least one message")
    messages = [
        Message(
            body=item.body,
            headers=item.headers,
            attributes=item.attributes,
            id=item.id or f"test-{index}",
        )
        for index, item in enumerate(inputs, start=1)
    ]
    expect = _parse_expect(table.expect, [s.name for s in route.sinks], f"{where}.expect", problems)
    if expect is None:
        return None
    return RouteCase(route.name, table.name or f"case {number}", messages, expect)


def _parse_expect(
    raw: dict[str, Any], sinks: list[str], where: str, problems: list[str]
) -> Expectation | None:
    before = len(problems)
    outcomes = [key for key in _OUTCOME_KEYS if key in raw]
    named = [key for key in raw if key not in _OUTCOME_KEYS]
    if len(outcomes) + bool(named) != 1:
        problems.append(
            f"{where}: give exactly one of: sink names (what each receives), drop = true, "
            f'dlq = "reason" or retry = "reason"; found {sorted(raw) or "nothing"}'
        )
        return None
    expect = Expectation()
    if "drop" in raw and raw["drop"] is not True:
        problems.append(f"{where}.drop: expected true, found {raw['drop']!r}")
    expect.drop = "drop" in raw
    for key in ("dlq", "retry"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{where}.{key}: expected a reason (a substring), found {raw[key]!r}")
        elif key in raw:
            setattr(expect, key, raw[key])
    for name in named:
        if name != EVERY_SINK and name not in sinks:
            problems.append(f"{where}.{name}: no such sink; this route's sinks: {', '.join(sinks)}")
            continue
        value = raw[name]
        items = value if isinstance(value, list) else [value]
        try:
            expect.sinks[name] = msgspec.convert(items, list[ExpectedMessage], strict=True)
        except msgspec.ValidationError as err:
            problems.append(_explain(err, f"{where}.{name}"))
    return expect if len(problems) == before else None


def _explain(err: msgspec.ValidationError, where: str) -> str:
    """msgspec's message as ``where.key.path: what is wrong``."""
    match = re.match(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", str(err), re.S)
    assert match is not None
    message, path = match["msg"], match["path"] or ""
    field = re.match(r"Object (contains unknown|missing required) field `([^`]+)`", message)
    if field:
        path += f".{field[2]}"
        message = "unknown key" if field[1] == "contains unknown" else "missing required key"
    message = re.sub(r"Expected `([^`]+)`, got `([^`]+)`", r"expected \1, found \2", message)
    return f"{where}{path}: {message}"


# -- running --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to a case's input: deliveries per sink, or the one failure."""

    deliveries: dict[str, list[Message]]
    dlq: str | None = None
    retry: str | None = None
    broken: str | None = None


def offline_services(config: Config, registry: Registry) -> dict[str, Any]:
    """The services a component finds during a route test (``offline`` tells it why)."""
    from integrator.delivery.breaker import BreakerRegistry
    from integrator.delivery.limits import LimiterRegistry
    from integrator.transforms.convert import codecs_from_registry

    return {
        "offline": True,
        "store": InMemoryTestStore(),
        "http": OfflineHttpClients(registry=registry),
        "limiters": LimiterRegistry(),
        "breakers": BreakerRegistry(),
        "codecs": codecs_from_registry(registry),
        "connections": config.connections,
        "registry": registry,
    }


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


@dataclass
class CaseResult:
    case: RouteCase
    passed: bool
    details: list[str]


def judge(case: RouteCase, route: RouteConfig, outcome: Outcome) -> CaseResult:
    """Compare the outcome with the expectation; failures explain themselves with a diff."""
    expect = case.expect
    if outcome.broken:
        return CaseResult(case, False, [outcome.broken])
    likes = _expected_lists(expect, [sink.name for sink in route.sinks])
    actual = _actual_view(outcome, likes)
    if expect.dlq is not None or expect.retry is not None:
        kind, wanted = ("dlq", expect.dlq) if expect.dlq is not None else ("retry", expect.retry)
        got = outcome.dlq if kind == "dlq" else outcome.retry
        expected: dict[str, Any] = {kind: f"…{wanted}…"}
        passed = got is not None and str(wanted) in got
    else:
        expected = {name: [_expected_dict(like) for like in items] for name, items in likes.items()}
        passed = _canonical(actual) == _canonical(expected)
    if passed:
        return CaseResult(case, True, [_summary(outcome)])
    details = [f"expected: {_summary_expected(expect)}", f"got: {_summary(outcome)}"]
    if set(expected) == set(actual) <= {"dlq", "retry"}:
        return CaseResult(case, False, details)  # a reason: the two lines say it all
    diff = difflib.unified_diff(
        _pretty(expected), _pretty(actual), "expected", "actual", lineterm=""
    )
    return CaseResult(case, False, [*details, *diff])


def _expected_lists(expect: Expectation, sinks: list[str]) -> dict[str, list[ExpectedMessage]]:
    every = expect.sinks.get(EVERY_SINK, [])
    return {name: expect.sinks.get(name, every) for name in sinks}


def _expected_dict(like: ExpectedMessage) -> dict[str, Any]:
    view: dict[str, Any] = {}
    if like.id is not msgspec.UNSET:
        view["id"] = like.id
    if like.body is not msgspec.UNSET:
        view["body"] = like.body
    if like.headers:
        view["headers"] = like.headers
    if like.attributes:
        view["attributes"] = like.attributes
    return view


def _actual_view(outcome: Outcome, likes: dict[str, list[ExpectedMessage]]) -> dict[str, Any]:
    if outcome.dlq is not None:
        return {"dlq": outcome.dlq}
    if outcome.retry is not None:
        return {"retry": outcome.retry}
    view = {}
    for name, messages in outcome.deliveries.items():
        items = likes.get(name, [])
        view[name] = [
            _project(message, items[i] if i < len(items) else None)
            for i, message in enumerate(messages)
        ]
    return view


def _project(message: Message, like: ExpectedMessage | None) -> dict[str, Any]:
    """The parts of ``message`` that ``like`` speaks of (all of them when it is None)."""
    if like is None:
        return {"body": _plain(message.body), "headers": message.headers,
                "attributes": _plain(message.attributes)}  # fmt: skip
    view: dict[str, Any] = {}
    if like.id is not msgspec.UNSET:
        view["id"] = message.id
    if like.body is not msgspec.UNSET:
        view["body"] = _plain(message.body)
    if like.headers:
        lowered = {key.lower(): value for key, value in message.headers.items()}
        view["headers"] = {k: lowered[k.lower()] for k in like.headers if k.lower() in lowered}
    if like.attributes:
        view["attributes"] = {
            k: _plain(message.attributes[k]) for k in like.attributes if k in message.attributes
        }
    return view


def _plain(value: Any) -> Any:
    """Bytes as UTF-8 text, so a test can expect an encoded body as a string."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _canonical(view: Any) -> str:
    """JSON text, so that ``true`` is not ``1`` and ``2`` is not ``2.0``, as in the output."""
    return json.dumps(view, sort_keys=True, ensure_ascii=False, default=str)


def _pretty(view: Any) -> list[str]:
    return json.dumps(view, indent=2, ensure_ascii=False, default=str).splitlines()


def _summary(outcome: Outcome) -> str:
    if outcome.broken:
        return outcome.broken
    if outcome.dlq is not None:
        return f"dead-lettered: {outcome.dlq}"
    if outcome.retry is not None:
        return f"retried: {outcome.retry}"
    got = [f"{name} ({_count(items)})" for name, items in outcome.deliveries.items() if items]
    return "delivered to " + ", ".join(got) if got else "dropped (no sink receives anything)"


def _count(items: Sequence[Any]) -> str:
    return f"{len(items)} message" + ("" if len(items) == 1 else "s")


def _summary_expected(expect: Expectation) -> str:
    if expect.dlq is not None:
        return f"dead-lettered with a reason containing {expect.dlq!r}"
    if expect.retry is not None:
        return f"retried with a reason containing {expect.retry!r}"
    if expect.drop:
        return "dropped (no sink receives anything)"
    return "delivered to " + ", ".join(f"{k} ({_count(v)})" for k, v in expect.sinks.items())


# -- the command ---------------------------------------------------------------------------


async def run_cases(
    cases: Sequence[RouteCase], config: Config, registry: Registry
) -> list[CaseResult]:
    results = []
    for case in cases:
        outcome = await run_case(case, config, registry)
        results.append(judge(case, config.routes[case.route], outcome))
    return results


def run_route_tests(
    config_path: str | Path | None = None,
    *,
    routes: Sequence[str] = (),
    verbose: bool = False,
    plugins: Sequence[Any] = (),
    out: TextIO | None = None,
) -> int:
    """``integrator test``: print PASS/FAIL per case and a summary; 0 if all pass, else 1.

    Raises ConfigError (exit 2 at the command line) for an invalid config or case.
    ``plugins`` are extra plugin objects, registered after the installed ones (tests).
    """
    out = out or sys.stdout
    pm, registry = get_plugin_manager()
    for plugin in plugins:
        pm.register(plugin)
    registry = build_registry(pm, registry)
    for info in registry.failures:
        print(f"warning: plugin {info.name} failed to load: {info.error}", file=sys.stderr)
    config = load_config(find_config(config_path), registry)
    cases = collect_cases(config, routes)
    results = anyio.run(run_cases, cases, config, registry)
    if verbose:
        tested = {case.route for case in cases}
        for name in routes or list(config.routes):
            if name not in tested:
                print(f"----  {name}: no test cases", file=out)
    for result in results:
        label = f"{result.case.route}/{result.case.name}"
        print(f"{'PASS' if result.passed else 'FAIL'} {label}", file=out)
        if verbose or not result.passed:
            for line in result.details:
                print(f"    {line}", file=out)
    failed = sum(not result.passed for result in results)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return EXIT_FAILED if failed else EXIT_OK
