"""filter: pass on only the messages that match."""

from __future__ import annotations

import pytest

from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.filter import FilterMiddleware

PUSH = Message(body={"commits": [1]}, headers={"x-github-event": "push"})
PING = Message(body={"zen": "hi"}, headers={"x-github-event": "ping"})
IS_PUSH = "headers.\"x-github-event\" == 'push'"


async def test_passes_a_matching_message_unchanged(build, run) -> None:
    out = await run(build(FilterMiddleware, where=IS_PUSH), message=PUSH)
    assert out == [PUSH]


async def test_drops_a_message_that_does_not_match(build, run) -> None:
    assert await run(build(FilterMiddleware, where=IS_PUSH), message=PING) == []


async def test_keep_false_drops_the_matches_instead(build, run) -> None:
    middleware = build(FilterMiddleware, where=IS_PUSH, keep=False)
    assert await run(middleware, message=PUSH) == []
    assert await run(middleware, message=PING) == [PING]


async def test_a_missing_field_does_not_match(build, run) -> None:
    assert await run(build(FilterMiddleware, where="body.commits"), message=PING) == []


async def test_an_empty_array_does_not_match(build, run) -> None:
    empty = Message(body={"commits": []})
    assert await run(build(FilterMiddleware, where="body.commits"), message=empty) == []


def test_an_invalid_expression_fails_validation_with_the_parse_error(build) -> None:
    with pytest.raises(ValueError, match=r"^where: invalid expression .*Parse error at column 6"):
        build(FilterMiddleware, where="body. == 'x'")


def test_an_unquoted_hyphen_is_explained(build) -> None:
    with pytest.raises(ValueError, match=r"Unknown token '-' at column 9 \(quote names"):
        build(FilterMiddleware, where="headers.x-github-event == 'push'")


async def test_an_expression_failing_on_a_message_rejects_it(build, run) -> None:
    middleware = build(FilterMiddleware, where="length(body.count) > `1`")
    with pytest.raises(Reject) as caught:
        await run(middleware, message=Message(body={"count": 5}))
    assert caught.value.retriable is False
    assert caught.value.reason.startswith("filter: invalid expression")
