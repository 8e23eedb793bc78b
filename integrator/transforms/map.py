"""``map``: reshape a message by setting, copying, renaming, deleting and coercing fields.

Fields are named by paths with an explicit root (``body.user.id``, ``headers.x-repo``,
``attributes.tenant``; see :mod:`integrator.transforms.paths`). The operations run in
this order, so a config reads top to bottom:

1. ``set`` (target = expression), ``template`` (target = ``"text ${expression}"``)
   and ``copy`` (target = source path) are all read from the *incoming* message;
2. with ``replace_body = true`` the body starts empty, so ``set`` builds a new one;
3. the values from step 1 are written (``set``, then ``template``, then ``copy``);
4. ``rename`` (old path = new path) moves fields;
5. ``delete`` (a list of paths) removes fields;
6. ``defaults`` (path = literal) fills fields that are absent or null;
7. ``coerce`` (path = ``"int"``, ``"float"``, ``"str"`` or ``"bool"``) converts types.

An expression, copy or rename that finds nothing writes null (a header set to null
is removed). ``coerce`` of a field that is absent or null, or whose value cannot be
converted, rejects the message naming the path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import msgspec.structs

from integrator.components import Context, Middleware, Next
from integrator.errors import IntegratorError, Reject
from integrator.message import Message
from integrator.transforms.expressions import Expression, ExpressionError, compile_expression
from integrator.transforms.paths import MISSING, FieldPath, MessageEditor, PathError, describe_kind
from integrator.transforms.templates import Template

Coercion = Literal["int", "float", "str", "bool"]

_BODY = FieldPath.parse("body")
_replace = msgspec.structs.replace  # direct: Message.evolve(**changes) costs ~0.3 us more
_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class CoercionError(IntegratorError, ValueError):
    """Raised when a field's value cannot be converted to the type ``coerce`` asks for."""


class MapOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: target path = JMESPath expression, e.g. ``"body.repo" = "body.repository.full_name"``.
    set: dict[str, str] = {}
    #: target path = text with ``${expression}`` holes.
    template: dict[str, str] = {}
    #: target path = source path (no expression quoting needed for ``-``).
    copy: dict[str, str] = {}
    #: old path = new path.
    rename: dict[str, str] = {}
    #: paths to remove.
    delete: list[str] = []
    #: path = literal value written when the field is absent or null.
    defaults: dict[str, Any] = {}
    #: path = type to convert the field to.
    coerce: dict[str, Coercion] = {}
    #: start from an empty body, so ``set`` builds the whole output.
    replace_body: bool = False

    def validate(self) -> None:
        MapPlan.compile(self)


@dataclass
class MapPlan:
    """The options with every path parsed and every expression compiled."""

    #: Each written field, and how to read its value from the incoming message.
    reads: list[tuple[FieldPath, Callable[[Message], Any]]] = field(default_factory=list)
    renames: list[tuple[FieldPath, FieldPath]] = field(default_factory=list)
    deletes: list[FieldPath] = field(default_factory=list)
    defaults: list[tuple[FieldPath, Any]] = field(default_factory=list)
    coercions: list[tuple[FieldPath, Coercion]] = field(default_factory=list)
    replace_body: bool = False
    #: Set when the plan only writes top-level body fields: their keys, in order.
    body_keys: list[str] | None = None

    @classmethod
    def compile(cls, options: MapOptions) -> MapPlan:
        """Build the plan, or raise ValueError naming every bad option at once."""
        plan = cls(replace_body=options.replace_body)
        problems: list[str] = []

        def attempt(option: str, key: str, build: Any) -> Any:
            try:
                return build()
            except ValueError as err:
                problems.append(f"{option}.{key}: {err}")
                return None

        targets: dict[str, str] = {}
        sources: list[tuple[str, dict[str, str], Any]] = [
            ("set", options.set, compile_expression),
            ("template", options.template, Template),
            ("copy", options.copy, FieldPath.parse),
        ]
        for option, table, build in sources:
            for target_text, source_text in table.items():
                target = attempt(option, target_text, lambda t=target_text: FieldPath.parse(t))
                read = attempt(option, target_text, lambda b=build, s=source_text: b(s))
                if target_text in targets:
                    problems.append(
                        f"{option}.{target_text}: the field is also written by "
                        f"{targets[target_text]}.{target_text}"
                    )
                targets[target_text] = option
                if target is not None and read is not None:
                    plan.reads.append((target, _reader(read)))
        for old, new in options.rename.items():
            old_path = attempt("rename", old, lambda o=old: FieldPath.parse(o))
            new_path = attempt("rename", old, lambda n=new: FieldPath.parse(n))
            if old_path is not None and new_path is not None:
                plan.renames.append((old_path, new_path))
        for index, text in enumerate(options.delete):
            path = attempt("delete", str(index), lambda t=text: FieldPath.parse(t))
            if path is not None:
                plan.deletes.append(path)
        for text, value in options.defaults.items():
            path = attempt("defaults", text, lambda t=text: FieldPath.parse(t))
            if path is not None:
                plan.defaults.append((path, value))
        for text, kind in options.coerce.items():
            path = attempt("coerce", text, lambda t=text: FieldPath.parse(t))
            if path is not None:
                plan.coercions.append((path, kind))
        if problems:
            raise ValueError("; ".join(problems))
        plan.body_keys = plan._top_level_body_keys()
        return plan

    def _top_level_body_keys(self) -> list[str] | None:
        """The body keys written, when writing top-level body fields is all the plan does."""
        if self.renames or self.deletes or self.defaults or self.coercions:
            return None
        if not all(target.root == "body" and len(target.keys) == 1 for target, _ in self.reads):
            return None
        return [target.keys[0] for target, _ in self.reads]

    def apply(self, message: Message) -> Message:
        """The mapped message; raises ExpressionError, PathError or CoercionError."""
        values = [read(message) for _, read in self.reads]
        body_keys = self.body_keys
        if body_keys is not None and (self.replace_body or isinstance(message.body, dict)):
            # The common shape: one shallow copy of the body, no editor.
            body = {} if self.replace_body else dict(message.body)
            body.update(zip(body_keys, values, strict=True))
            return _replace(message, body=body)
        editor = MessageEditor(message)
        if self.replace_body:
            editor.set(_BODY, {})
        for (target, _), value in zip(self.reads, values, strict=True):
            editor.set(target, value)
        for old, new in self.renames:
            value = editor.delete(old)
            editor.set(new, None if value is MISSING else value)
        for path in self.deletes:
            editor.delete(path)
        for path, default in self.defaults:
            current = editor.get(path)
            if current is MISSING or current is None:
                editor.set(path, default)
        for path, kind in self.coercions:
            value = editor.get(path)
            if value is MISSING or value is None:
                raise CoercionError(f"coerce {path}: the field is missing")
            try:
                editor.set(path, coerce(value, kind))
            except CoercionError as err:
                raise CoercionError(f"coerce {path}: {err}") from err
        return editor.result()


def _reader(read: Expression | Template | FieldPath) -> Callable[[Message], Any]:
    """How to read a ``set``, ``template`` or ``copy`` value from the incoming message."""
    if isinstance(read, Expression):
        return read.evaluate
    if isinstance(read, Template):
        return read.render

    def copy(message: Message) -> Any:
        value = MessageEditor(message).get(read)
        return None if value is MISSING else value

    return copy


def coerce(value: Any, kind: Coercion) -> Any:
    """Convert a JSON value to ``int``, ``float``, ``str`` or ``bool``, or raise CoercionError."""
    try:
        if kind == "int":
            return _to_int(value)
        if kind == "float":
            return _to_float(value)
        if kind == "bool":
            return _to_bool(value)
        return _to_str(value)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, CoercionError):
            raise
        raise CoercionError(_cannot(value, kind)) from err


def _cannot(value: Any, kind: str) -> str:
    shown = repr(value) if isinstance(value, str | int | float) else describe_kind(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"cannot convert {shown} to {kind}"


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise CoercionError(_cannot(value, "int") + " without losing its fraction")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 10)
        except ValueError:
            number = float(text)  # "12.0" and "1e3" are whole numbers too
            if number.is_integer():
                return int(number)
    raise CoercionError(_cannot(value, "int"))


def _to_float(value: Any) -> float:
    if isinstance(value, bool | int | float):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise CoercionError(_cannot(value, "float"))
    if not math.isfinite(number):
        raise CoercionError(_cannot(value, "float") + " (not a finite number)")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise CoercionError(_cannot(value, "bool"))


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return msgspec.json.encode(value).decode()


class MapMiddleware(Middleware):
    """Reshape the message: set, template, copy, rename, delete, default and coerce fields."""

    Options = MapOptions
    description = "reshape a message: set, copy, rename, delete, default and coerce fields"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        self.plan = MapPlan.compile(options)

    async def __call__(self, message: Message, call_next: Next) -> None:
        try:
            mapped = self.plan.apply(message)
        except (ExpressionError, PathError, CoercionError) as err:
            raise Reject(f"map: {err}") from err
        await call_next(mapped)
