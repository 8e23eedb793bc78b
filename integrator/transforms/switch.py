"""``switch`` (alias ``route``): choose the sinks of each message by condition.

The choice travels with the message as the attribute ``integrator.sinks``
(:data:`integrator.engine.route.TARGETS`): the engine gives the message to those
sinks of the route only. Without ``switch`` every sink gets every message.
"""

from __future__ import annotations

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.expressions import Expression, ExpressionError, compile_expression

#: The attribute the engine reads (kept equal to ``integrator.engine.route.TARGETS``;
#: importing the engine here would tie the transforms to it).
TARGETS = "integrator.sinks"


class SwitchCase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A JMESPath expression over the message; the case matches when it is true.
    when: str
    #: The names of the route's sinks that get a matching message (``[]`` drops it).
    sinks: list[str]


class SwitchOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The cases, tried in order.
    cases: list[SwitchCase]
    #: The sinks of a message that no case matches; none given: such a message is dropped.
    default: list[str] | None = None
    #: ``true``: the first matching case decides; ``false``: every matching case adds its sinks.
    first_match: bool = True

    def validate(self, sinks: list[str] | None = None) -> None:
        """``sinks``: the route's sink names, when known (a switch in a route's chain)."""
        if not self.cases:
            raise ValueError("cases: give at least one case ({ when = '…', sinks = ['…'] })")
        problems: list[str] = []
        for index, case in enumerate(self.cases):
            try:
                compile_expression(case.when)
            except ExpressionError as err:
                problems.append(f"cases[{index}].when: {err}")
        if sinks is not None:
            problems.extend(self.unknown_sinks(sinks))
        if problems:
            raise ValueError("; ".join(problems))

    def unknown_sinks(self, known: list[str]) -> list[str]:
        """A problem for each name in ``cases``/``default`` that is not in ``known``."""
        named = [(f"cases[{i}].sinks", case.sinks) for i, case in enumerate(self.cases)]
        if self.default is not None:
            named.append(("default", self.default))
        return [
            f"{where} names {name!r}, which is not a sink of this route"
            f" (its sinks: {', '.join(known) or 'none'})"
            for where, names in named
            for name in names
            if name not in known
        ]


class SwitchMiddleware(Middleware):
    """Send each message to the sinks of the case it matches (or of ``default``).

    A message that matches no case and has no ``default`` is dropped, as is one whose
    chosen list is empty. A later ``switch`` in the chain replaces an earlier choice.
    An expression that fails on a message rejects it. Sink names are checked against
    the route's when the config is loaded (``validate(sinks=…)``), so ``integrator
    check`` catches a typo.
    """

    Options = SwitchOptions
    description = "choose the sinks of each message by condition"
    options: SwitchOptions

    def __init__(self, options: SwitchOptions, context: Context) -> None:
        super().__init__(options, context)
        self.cases: list[tuple[Expression, list[str]]] = [
            (compile_expression(case.when), _unique(case.sinks)) for case in options.cases
        ]
        self.default = None if options.default is None else _unique(options.default)

    def choose(self, message: Message) -> list[str] | None:
        """The sinks for ``message``, or None when no case matches and there is no default."""
        chosen: list[str] | None = None
        for index, (when, sinks) in enumerate(self.cases):
            try:
                matched = when.matches(message)  # reads the message's fields directly
            except ExpressionError as err:
                raise Reject(f"switch: cases[{index}].when: {err}") from err
            if not matched:
                continue
            if self.options.first_match:
                return sinks
            chosen = _unique([*(chosen or []), *sinks])
        return self.default if chosen is None else chosen

    async def __call__(self, message: Message, call_next: Next) -> None:
        sinks = self.choose(message)
        if not sinks:
            self.context.logger.debug("switch: message %s goes to no sink: dropped", message.id)
            return
        await call_next(message.evolve(attributes={**message.attributes, TARGETS: sinks}))


def _unique(names: list[str]) -> list[str]:
    """The names in order, each once."""
    return list(dict.fromkeys(names))


__all__ = ["TARGETS", "SwitchCase", "SwitchMiddleware", "SwitchOptions"]
