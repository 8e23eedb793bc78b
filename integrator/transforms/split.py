"""``split``: one message per element of an array, e.g. one per commit of a push."""

from __future__ import annotations

from typing import Any

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.expressions import ExpressionError, compile_expression
from integrator.transforms.paths import describe_kind


class SplitOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A JMESPath expression that yields the array, e.g. ``body.commits``.
    path: str

    def validate(self) -> None:
        try:
            compile_expression(self.path)
        except ExpressionError as err:
            raise ValueError(f"path: {err}") from err


class SplitMiddleware(Middleware):
    """Pass on one message per element of the array ``path`` yields, the element as its body.

    Each part keeps the headers and attributes, gains ``attributes.split_index`` and
    ``attributes.split_count``, and has the id ``"{id}:{index}"``: stable across
    retries, so a sink that dedupes by id sees a retried part as the same one. An
    empty array passes nothing on; anything other than an array (null included)
    rejects the message. The parts go on in order, one after the other.
    """

    Options = SplitOptions
    description = "one message per element of an array"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        self.path = compile_expression(options.path)

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            items = self.path.evaluate(message)
        except ExpressionError as err:
            raise Reject(f"split: {err}") from err
        if not isinstance(items, list):
            raise Reject(f"split: {self.path.source} is {describe_kind(items)}, not an array")
        count = len(items)
        for index, item in enumerate(items):
            attributes = {**message.attributes, "split_index": index, "split_count": count}
            part = message.evolve(body=item, attributes=attributes, id=f"{message.id}:{index}")
            await call_next(part)
