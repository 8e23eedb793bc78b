"""``filter``: pass on only the messages an expression selects."""

from __future__ import annotations

from typing import Any

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.expressions import ExpressionError, compile_expression


class FilterOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A JMESPath expression over the message, e.g. ``headers."x-github-event" == 'push'``.
    where: str
    #: ``true`` keeps the messages that match and drops the others; ``false`` drops
    #: the messages that match and keeps the others.
    keep: bool = True

    def validate(self) -> None:
        try:
            compile_expression(self.where)
        except ExpressionError as err:
            raise ValueError(f"where: {err}") from err


class FilterMiddleware(Middleware):
    """Drop the messages that do not match ``where`` (or those that do, with ``keep = false``).

    A dropped message is done with: it reaches no sink and is not an error. The
    expression's value counts as true unless it is false, null, or an empty string,
    array or object (JMESPath truthiness: the number 0 is true). An expression that
    fails on a message (a function given the wrong type) rejects that message.
    """

    Options = FilterOptions
    description = "pass on only the messages an expression selects"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        self.where = compile_expression(options.where)

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            matched = self.where.matches(message)
        except ExpressionError as err:
            raise Reject(f"filter: {err}") from err
        if matched == self.options.keep:
            await call_next(message)
