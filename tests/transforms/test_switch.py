"""switch (alias route): choose the sinks of each message by condition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integrator.config import parse_config
from integrator.engine import route as engine_route
from integrator.errors import ConfigError, Reject
from integrator.message import Message
from integrator.testing import make_registry
from integrator.transforms.switch import TARGETS, SwitchMiddleware

CASES = [
    {"when": "body.kind == 'order'", "sinks": ["erp"]},
    {"when": "body.total > `100`", "sinks": ["audit", "erp"]},
]


def sinks_of(out: list[Message]) -> list[list[str]]:
    return [m.attributes[TARGETS] for m in out]


def test_the_attribute_is_the_one_the_engine_reads() -> None:
    assert TARGETS == engine_route.TARGETS


async def test_the_first_matching_case_chooses_the_sinks(build, run) -> None:
    switch = build(SwitchMiddleware, cases=CASES)
    message = Message(body={"kind": "order", "total": 500}, attributes={"tenant": "a"})
    out = await run(switch, message=message)
    assert sinks_of(out) == [["erp"]]
    assert out[0].attributes["tenant"] == "a", "other attributes are kept"
    assert message.attributes == {"tenant": "a"}, "the input message is not changed"


async def test_without_first_match_every_matching_case_adds_its_sinks(build, run) -> None:
    switch = build(SwitchMiddleware, cases=CASES, first_match=False)
    out = await run(switch, message=Message(body={"kind": "order", "total": 500}))
    assert sinks_of(out) == [["erp", "audit"]], "in order, each once"


async def test_a_message_no_case_matches_goes_to_the_default(build, run) -> None:
    switch = build(SwitchMiddleware, cases=CASES, default=["archive"])
    out = await run(switch, message=Message(body={"kind": "refund", "total": 5}))
    assert sinks_of(out) == [["archive"]]


async def test_without_a_default_a_message_no_case_matches_is_dropped(build, run) -> None:
    switch = build(SwitchMiddleware, cases=CASES)
    assert await run(switch, message=Message(body={"kind": "refund", "total": 5})) == []


async def test_a_case_with_no_sinks_drops_what_it_matches(build, run) -> None:
    switch = build(SwitchMiddleware, cases=[{"when": "body.test", "sinks": []}], default=["erp"])
    assert await run(switch, message=Message(body={"test": True})) == []
    assert sinks_of(await run(switch, message=Message(body={"test": False}))) == [["erp"]]


async def test_a_later_switch_replaces_the_choice_of_an_earlier_one(build, run) -> None:
    first = build(SwitchMiddleware, cases=[{"when": "body", "sinks": ["erp"]}])
    second = build(SwitchMiddleware, cases=[{"when": "body", "sinks": ["audit"]}])
    assert sinks_of(await run(first, second, message=Message(body={"a": 1}))) == [["audit"]]


async def test_an_expression_failing_on_a_message_rejects_it(build, run) -> None:
    switch = build(SwitchMiddleware, cases=[*CASES[:1], {"when": "length(body.n)", "sinks": ["x"]}])
    with pytest.raises(Reject, match=r"^switch: cases\[1\]\.when: invalid expression"):
        await run(switch, message=Message(body={"n": 5}))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"cases": []}, r"cases: give at least one case"),
        (
            {"cases": [{"when": "body.a", "sinks": ["x"]}, {"when": "body. ==", "sinks": ["y"]}]},
            r"^cases\[1\]\.when: invalid expression 'body\. =='",
        ),
    ],
)
def test_bad_options_are_refused(build, raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build(SwitchMiddleware, **raw)


ROUTE = """
[routes.orders]
source = {{ type = "timer", interval = "1h", count = 1, body = {{ items = {items} }} }}
middleware = [
  {{ type = "split", path = "body.items" }},
  {{ type = "{kind}", cases = [{{ when = "body.kind == 'order'", sinks = ["{erp}"] }}], default = ["{archive}"] }},
]
sinks = [
  {{ type = "file", name = "erp", path = "{tmp}/erp.jsonl" }},
  {{ type = "file", name = "archive", path = "{tmp}/archive.jsonl" }},
]
"""


def route_toml(tmp: Path, *, kind: str = "switch", erp: str = "erp", items: str = "[]") -> str:
    return ROUTE.format(tmp=tmp, kind=kind, erp=erp, archive="archive", items=items)


def test_a_sink_name_the_route_does_not_have_is_a_config_problem(tmp_path: Path) -> None:
    _, registry = make_registry()
    with pytest.raises(ConfigError) as caught:
        parse_config(route_toml(tmp_path, erp="epr"), tmp_path / "x.toml", registry)
    (problem,) = caught.value.problems
    assert problem.endswith(
        "route 'orders': routes.orders.middleware[1]: cases[0].sinks names 'epr', which is "
        "not a sink of this route (its sinks: erp, archive)"
    )


def test_a_sink_that_cannot_be_read_is_its_own_problem_not_also_the_switchs(
    tmp_path: Path,
) -> None:
    _, registry = make_registry()
    text = route_toml(tmp_path).replace(
        'type = "file", name = "erp"', 'type = "fiel", name = "erp"'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "x.toml", registry)
    (problem,) = caught.value.problems
    assert "unknown sink type 'fiel'" in problem


def test_a_switch_in_a_sink_chain_is_not_checked_against_route_sinks(tmp_path: Path) -> None:
    _, registry = make_registry()
    text = f"""
[routes.r]
source = {{ type = "timer", interval = "1s" }}
sinks = [{{ type = "file", path = "{tmp_path}/out.jsonl", middleware = [
  {{ type = "switch", cases = [{{ when = "`true`", sinks = ["anything"] }}] }},
] }}]
"""
    parse_config(text, tmp_path / "x.toml", registry)  # no route sinks to judge names by


def lines(path: Path) -> list[Any]:
    return [json.loads(line)["body"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["switch", "route"])
async def test_a_daemon_delivers_each_message_only_to_the_chosen_sinks(
    run_route, tmp_path: Path, kind: str
) -> None:
    items = "[{ kind = 'order', n = 1 }, { kind = 'refund', n = 2 }, { kind = 'order', n = 3 }]"
    async with run_route(route_toml(tmp_path, kind=kind, items=items)) as daemon:
        await daemon.wait_delivered("orders", 2, sink="erp")
        await daemon.wait_delivered("orders", 1, sink="archive")
        stats = daemon.services.stats["orders"]
        assert stats.sinks["erp"].delivered == 2
        assert stats.sinks["archive"].delivered == 1
    assert sorted(body["n"] for body in lines(tmp_path / "erp.jsonl")) == [1, 3]
    assert [body["n"] for body in lines(tmp_path / "archive.jsonl")] == [2]
