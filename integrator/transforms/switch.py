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

    def validate(self) -> None:
        if not self.cases:
            raise ValueError("cases: give at least one case ({ when = '…', sinks = ['…'] })")
        problems: list[str] = []
        for index, case in enumerate(self.cases):
            try:
                compile_expression(case.when)
            except ExpressionError as err:
                problems.append(f"cases[{index}].when: {err}")
        if problems:
            raise ValueError("; ".join(problems))


class SwitchMiddleware(Middleware):
    """Send each message to the sinks of the case it matches (or of ``default``).

    A message that matches no case and has no ``default`` is dropped, as is one whose
    chosen list is empty. A later ``switch`` in the chain replaces an earlier choice.
    An expression that fails on a message rejects it. Sink names are checked against
    the route when the middleware is built, so a typo stops the route from starting
    with a message naming the sinks it has.
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
        self._check_sink_names()

    def _check_sink_names(self) -> None:
        """Refuse names that are not sinks of the route (when the route is known)."""
        config = self.context.config
        route = config.routes.get(self.context.route) if config is not None else None
        if route is None:
            return
        known = [sink.name for sink in route.sinks]
        named = [(f"cases[{i}].sinks", sinks) for i, (_, sinks) in enumerate(self.cases)]
        if self.default is not None:
            named.append(("default", self.default))
        unknown = [
            f"{where} names {name!r}"
            for where, sinks in named
            for name in sinks
            if name not in known
        ]
        if unknown:
            raise ValueError(
                f"switch: {'; '.join(unknown)}, which is not a sink of route "
                f"{self.context.route!r}; its sinks are: {', '.join(known)}"
            )

    def choose(self, message: Message) -> list[str] | None:
        """The sinks for ``message``, or None when no case matches and there is no default."""
        view = message.to_dict()
        chosen: list[str] | None = None
        for index, (when, sinks) in enumerate(self.cases):
            try:
                matched = when.matches(view)
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
