"""Reading test cases from the config and from ``*.test.toml`` files beside it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from integrator.config import Config, RouteConfig
from integrator.errors import ConfigError
from integrator.message import Message

#: An ``expect`` key meaning "every sink not named otherwise".
EVERY_SINK = "*"
_OUTCOME_KEYS = ("drop", "dlq", "retry")


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
