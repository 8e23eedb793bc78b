"""split: one message per array element, with ids stable across retries."""

from __future__ import annotations

import pytest

from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.split import SplitMiddleware

PUSH = Message(
    body={"commits": [{"id": "c1"}, {"id": "c2"}, {"id": "c3"}]},
    headers={"x-github-event": "push"},
    attributes={"path": "/hooks"},
    id="m-1",
    trace_id="t-1",
)


async def test_one_message_per_element_in_order(build, run) -> None:
    out = await run(build(SplitMiddleware, path="body.commits"), message=PUSH)
    assert [m.body for m in out] == [{"id": "c1"}, {"id": "c2"}, {"id": "c3"}]
    assert [m.id for m in out] == ["m-1:0", "m-1:1", "m-1:2"]
    assert {m.trace_id for m in out} == {"t-1"}
    assert all(m.headers == PUSH.headers for m in out)
    assert [(m.attributes["split_index"], m.attributes["split_count"]) for m in out] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert out[0].attributes["path"] == "/hooks"


async def test_ids_are_the_same_when_the_message_is_split_again(build, run) -> None:
    middleware = build(SplitMiddleware, path="body.commits")
    first = [m.id for m in await run(middleware, message=PUSH)]
    again = [m.id for m in await run(middleware, message=PUSH)]
    assert first == again


async def test_the_path_may_be_any_expression(build, run) -> None:
    out = await run(build(SplitMiddleware, path="body.commits[].id"), message=PUSH)
    assert [m.body for m in out] == ["c1", "c2", "c3"]


async def test_an_empty_array_passes_nothing_on(build, run) -> None:
    empty = Message(body={"commits": []})
    assert await run(build(SplitMiddleware, path="body.commits"), message=empty) == []


@pytest.mark.parametrize(
    ("body", "kind"), [({"commits": None}, "null"), ({"commits": "x"}, "a string")]
)
async def test_anything_but_an_array_rejects(build, run, body, kind) -> None:
    with pytest.raises(Reject) as caught:
        await run(build(SplitMiddleware, path="body.commits"), message=Message(body=body))
    assert caught.value.reason == f"split: body.commits is {kind}, not an array"


async def test_a_failure_downstream_stops_the_rest(build, run) -> None:
    seen: list[str] = []

    async def terminal(message: Message) -> None:
        seen.append(message.id)
        if message.id.endswith(":1"):
            raise Reject("bad element")

    with pytest.raises(Reject, match="bad element"):
        await build(SplitMiddleware, path="body.commits")(PUSH, terminal)
    assert seen == ["m-1:0", "m-1:1"]


def test_an_invalid_path_fails_validation(build) -> None:
    with pytest.raises(ValueError, match=r"^path: invalid expression 'body\.commits\['"):
        build(SplitMiddleware, path="body.commits[")
