"""Comparing what each sink would receive with what the case expects."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from integrator.config import RouteConfig
from integrator.message import Message
from integrator.routetest.cases import EVERY_SINK, Expectation, ExpectedMessage, RouteCase
from integrator.routetest.runner import Outcome


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
