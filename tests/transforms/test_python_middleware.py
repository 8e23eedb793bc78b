"""python: a user's function transforms, splits or drops messages."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from integrator.errors import DeliveryError, Reject
from integrator.message import Message
from integrator.transforms.python import PythonMiddleware

USER_MODULE = """
import threading
from integrator import DeliveryError, Message

def shout(message):
    return message.evolve(body=message.body.upper())

async def shout_later(message):
    return message.evolve(body=message.body.upper())

def pair(message):
    return [message.evolve(id=message.id + "-a"), message.evolve(id=message.id + "-b")]

def nothing(message):
    return None

def broken(message):
    raise KeyError("customer_id")

def busy(message):
    raise DeliveryError("upstream busy", retriable=True)

def wrong(message):
    return 42

def which_thread(message):
    return message.evolve(body=threading.get_ident())

class Tools:
    @staticmethod
    def tag(message):
        return message.evolve(attributes={"tagged": True})

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_transforms_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_a_sync_function_transforms_the_message(build, run, user_module) -> None:
    out = await run(
        build(PythonMiddleware, function=f"{user_module}:shout"), message=Message(body="hi")
    )
    assert [m.body for m in out] == ["HI"]


async def test_an_async_function_is_awaited(build, run, user_module) -> None:
    middleware = build(PythonMiddleware, function=f"{user_module}:shout_later")
    out = await run(middleware, message=Message(body="hi"))
    assert [m.body for m in out] == ["HI"]


async def test_a_list_of_messages_is_passed_on_in_order(build, run, user_module) -> None:
    out = await run(
        build(PythonMiddleware, function=f"{user_module}:pair"), message=Message(id="x")
    )
    assert [m.id for m in out] == ["x-a", "x-b"]


async def test_none_drops_the_message(build, run, user_module) -> None:
    assert (
        await run(build(PythonMiddleware, function=f"{user_module}:nothing"), message=Message())
        == []
    )


async def test_a_dotted_attribute_path_is_resolved(build, run, user_module) -> None:
    out = await run(build(PythonMiddleware, function=f"{user_module}:Tools.tag"), message=Message())
    assert out[0].attributes == {"tagged": True}


async def test_an_exception_rejects_with_the_function_name_and_text(
    build, run, user_module
) -> None:
    with pytest.raises(Reject) as caught:
        await run(build(PythonMiddleware, function=f"{user_module}:broken"), message=Message())
    assert caught.value.reason == f"python {user_module}:broken: KeyError: 'customer_id'"
    assert caught.value.retriable is False


async def test_a_delivery_error_from_the_function_keeps_its_retry_choice(
    build, run, user_module
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await run(build(PythonMiddleware, function=f"{user_module}:busy"), message=Message())
    assert caught.value.retriable is True
    assert not isinstance(caught.value, Reject)


async def test_a_wrong_return_type_rejects(build, run, user_module) -> None:
    with pytest.raises(
        Reject, match="returned a number; expected a Message, a list of Messages or None"
    ):
        await run(build(PythonMiddleware, function=f"{user_module}:wrong"), message=Message())


async def test_errors_downstream_are_not_blamed_on_the_function(build, user_module) -> None:
    async def failing_sink(message: Message) -> None:
        raise DeliveryError("sink down")

    middleware = build(PythonMiddleware, function=f"{user_module}:shout")
    with pytest.raises(DeliveryError, match=r"^sink down$"):
        await middleware(Message(body="x"), failing_sink)


async def test_thread_true_runs_a_sync_function_off_the_event_loop(build, run, user_module) -> None:
    loop_thread = threading.get_ident()
    inline = await run(
        build(PythonMiddleware, function=f"{user_module}:which_thread"), message=Message()
    )
    threaded = await run(
        build(PythonMiddleware, function=f"{user_module}:which_thread", thread=True),
        message=Message(),
    )
    assert inline[0].body == loop_thread
    assert threaded[0].body != loop_thread


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("no_colon_here", "expected 'package.module:function'"),
        (
            "surely_not_a_module_xyz:f",
            "cannot import module 'surely_not_a_module_xyz': ModuleNotFoundError",
        ),
        ("{module}:missing", "no attribute 'missing'"),
        ("{module}:NOT_CALLABLE", "is a number, not callable"),
    ],
)
def test_a_bad_function_reference_fails_validation(build, user_module, reference, problem) -> None:
    with pytest.raises(ValueError, match=f"^function: .*{problem}"):
        build(PythonMiddleware, function=reference.format(module=user_module))
