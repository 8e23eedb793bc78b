"""pass, drop and log: the built-in middleware that do not transform."""

from __future__ import annotations

import logging

import pytest

from integrator.builtin.basic import DropMiddleware, LogMiddleware, PassMiddleware
from integrator.components import Context
from integrator.message import Message

MESSAGE = Message(body={"text": "hello world"}, id="m-1")


@pytest.fixture
def context() -> Context:
    logger = logging.getLogger("integrator.route.test-basic")
    logger.setLevel(logging.INFO)
    return Context(route="test-basic", logger=logger)


async def test_pass_hands_the_message_on_unchanged(build, run) -> None:
    assert await run(build(PassMiddleware), message=MESSAGE) == [MESSAGE]


async def test_drop_hands_nothing_on(build, run) -> None:
    assert await run(build(DropMiddleware), message=MESSAGE) == []


async def test_log_names_the_message_at_its_level(build, run, context, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=context.logger.name):
        out = await run(build(LogMiddleware, context, level="warning"), message=MESSAGE)
    assert out == [MESSAGE]
    [record] = caplog.records
    assert (record.levelname, record.getMessage()) == ("WARNING", "message m-1")
    assert (record.route, record.message_id) == ("test-basic", "m-1")


async def test_log_below_the_loggers_level_writes_nothing(build, run, context, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=context.logger.name):
        out = await run(build(LogMiddleware, context, level="debug"), message=MESSAGE)
    assert out == [MESSAGE]
    assert caplog.records == []


async def test_log_can_show_the_body_cut_to_max_body(build, run, context, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=context.logger.name):
        await run(build(LogMiddleware, context, body=True, max_body=12), message=MESSAGE)
    assert caplog.records[0].getMessage() == 'message m-1 body={"text":"hel'
