"""``python``: run a function of your own on each message.

``function = "package.module:function"`` names a function (or any callable,
``"module:Class.method"`` works too) that takes a :class:`~integrator.Message`
and returns a Message (passed on), a list of Messages (each passed on, in order)
or ``None`` (the message is dropped). It may be ``async``. It is imported when
the config is loaded, so a typo fails ``integrator check``.

An exception from the function rejects the message, with the function's name and
the exception's text as the reason; raise :class:`~integrator.DeliveryError`
yourself to have the message retried instead. A synchronous function runs on the
event loop: set ``thread = true`` for one that blocks (file or network I/O).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import DeliveryError, Reject
from integrator.message import Message
from integrator.transforms.paths import describe_kind


class PythonOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``"package.module:function"``.
    function: str
    #: Run a synchronous function in a worker thread, so it may block.
    thread: bool = False

    def validate(self) -> None:
        resolve_function(self.function)


def resolve_function(reference: str) -> Callable[..., Any]:
    """Import ``module:attribute.path`` and return it; ValueError saying why not."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"function: expected 'package.module:function', found {reference!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # any import-time failure is the user's module's
        raise ValueError(
            f"function: cannot import module {module_name!r}: {type(err).__name__}: {err}"
        ) from err
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as err:
            raise ValueError(f"function: {reference!r}: no attribute {part!r}") from err
    if not callable(target):
        raise ValueError(f"function: {reference!r} is {describe_kind(target)}, not callable")
    return target


class PythonMiddleware(Middleware):
    """Transform messages with a Python function: return a Message, a list, or None."""

    Options = PythonOptions
    description = "transform messages with a Python function of your own"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        self.function = resolve_function(options.function)
        self.name = options.function

    async def _call(self, message: Message) -> Any:
        if self.options.thread and not inspect.iscoroutinefunction(self.function):
            result = await anyio.to_thread.run_sync(self.function, message)
        else:
            result = self.function(message)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            result = await self._call(message)
        except DeliveryError:
            raise  # Reject or retriable: the function chose
        except Exception as err:
            raise Reject(f"python {self.name}: {type(err).__name__}: {err}") from err
        if result is None:
            return
        if isinstance(result, Message):
            await call_next(result)
            return
        if isinstance(result, list | tuple) and all(isinstance(m, Message) for m in result):
            for item in result:
                await call_next(item)
            return
        raise Reject(
            f"python {self.name}: returned {describe_kind(result)}; "
            f"expected a Message, a list of Messages or None"
        )
