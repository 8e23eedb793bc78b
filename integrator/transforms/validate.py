"""``validate``: reject messages whose body does not match a JSON Schema.

The schema is given inline (a TOML table) or by ``schema_file`` (a ``.json`` or
``.toml`` file; a relative path is relative to the working directory). Its
``$schema`` keyword picks the draft; without one, Draft 2020-12 applies. ``$ref``
works within the schema; remote references are never fetched. The schema is read
and checked when the config is loaded, so a broken one fails ``integrator check``.

Two validators, one verdict. jsonschema-rs (compiled, a few µs per body) decides
whether a body passes; jsonschema (pure Python, ~100x slower) runs only on a body
jsonschema-rs refused, to write the reason, as it always has. Where the two disagree
(regex dialects: Python's ``$`` also matches before a final newline; formats such as
``date-time`` that jsonschema checks only with optional libraries), the body is still
rejected, with jsonschema-rs's own violations in the same ``path: message`` shape.
Patterns follow ECMA-262 as the spec says (``\\w`` and ``\\d`` are ASCII), and a
decimal ``multipleOf`` is exact: docs/middleware.md lists these for operators.
jsonschema alone decides for a schema jsonschema-rs cannot compile (Draft 3, a
``pattern`` only Python's ``re`` reads, a remote ``$ref``) and for a body holding a
value that is not JSON data (a ``datetime``, ``bytes``, a ``set``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.errors import Reject
from integrator.message import Message

if TYPE_CHECKING:  # jsonschema(-rs) is imported when a route first uses `validate`: it
    import jsonschema.exceptions  # is ~40 ms and several MB a daemon without it never needs
    import jsonschema.protocols
    import jsonschema_rs

_MESSAGE_LIMIT = 200


class ValidateOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The JSON Schema, inline.
    schema: dict[str, Any] | None = None
    #: Or a file holding it (``.json`` or ``.toml``).
    schema_file: str | None = None
    #: Check ``format`` keywords (email, date, uuid, ipv4…) as assertions.
    check_formats: bool = True
    #: How many violations a rejection reason lists at most (the rest are counted).
    max_errors: int = 20

    def validate(self) -> None:
        build_validator(self)


def load_schema(options: ValidateOptions) -> dict[str, Any]:
    """The schema from ``schema`` or ``schema_file``; ValueError when neither or both."""
    if (options.schema is None) == (options.schema_file is None):
        raise ValueError("give exactly one of 'schema' (a table) or 'schema_file' (a path)")
    if options.schema is not None:
        return options.schema
    assert options.schema_file is not None
    path = Path(options.schema_file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"schema_file: cannot read {path}: {err}") from err
    try:
        schema = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except ValueError as err:  # both JSONDecodeError and TOMLDecodeError
        raise ValueError(f"schema_file: {path} is not valid: {err}") from err
    if not isinstance(schema, dict):
        raise ValueError(f"schema_file: {path} must hold an object")
    return schema


def build_validator(options: ValidateOptions) -> jsonschema.protocols.Validator:
    """A validator for the configured schema, or ValueError if the schema is invalid."""
    import jsonschema.exceptions
    import referencing

    if options.max_errors < 1:
        raise ValueError("max_errors: must be at least 1")
    schema = load_schema(options)
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        where = "schema_file" if options.schema_file else "schema"
        raise ValueError(
            f"{where}: not a valid JSON Schema: at {err.json_path}: {_short(err.message)}"
        ) from err
    checker = cls.FORMAT_CHECKER if options.check_formats else None
    # An empty registry: $ref resolves inside the schema, and nothing is fetched.
    return cls(schema, registry=referencing.Registry(), format_checker=checker)


def _validator_class(schema: dict[str, Any]) -> Any:
    """The draft named by ``$schema``; Draft 2020-12 when there is none."""
    import jsonschema.validators

    if "$schema" not in schema:
        return jsonschema.Draft202012Validator
    cls = jsonschema.validators.validator_for(schema, default=None)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"schema: unknown $schema {schema['$schema']!r}")
    return cls


def build_fast_validator(
    validator: jsonschema.protocols.Validator, check_formats: bool
) -> jsonschema_rs.Validator:
    """jsonschema-rs's validator for the same schema and draft as ``validator``.

    ValueError when jsonschema-rs cannot compile it (then jsonschema alone is used).
    """
    import jsonschema
    import jsonschema_rs

    drafts: dict[Any, type[jsonschema_rs.Validator]] = {
        jsonschema.Draft4Validator: jsonschema_rs.Draft4Validator,
        jsonschema.Draft6Validator: jsonschema_rs.Draft6Validator,
        jsonschema.Draft7Validator: jsonschema_rs.Draft7Validator,
        jsonschema.Draft201909Validator: jsonschema_rs.Draft201909Validator,
        jsonschema.Draft202012Validator: jsonschema_rs.Draft202012Validator,
    }
    fast = drafts.get(type(validator))
    if fast is None:
        raise ValueError(f"jsonschema-rs has no {type(validator).__name__}")
    schema = cast(dict[str, Any], validator.schema)  # load_schema gives a dict
    try:
        return fast(schema, validate_formats=check_formats, retriever=_never_fetch)
    except jsonschema_rs.ReferencingError as err:  # not a ValueError
        raise ValueError(str(err)) from err


def _never_fetch(uri: str) -> Any:
    """jsonschema-rs's retriever: without it, jsonschema-rs would fetch http(s) ``$ref``."""
    raise ValueError(f"remote reference {uri} is not fetched")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _order(path: Iterable[str | int], message: str) -> tuple[Any, ...]:
    parts = [(0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in path]
    return (parts, message)


def violations(validator: jsonschema.protocols.Validator, body: Any) -> list[str]:
    """Every violation of the schema by ``body``, as ``path: message``, in path order."""
    errors = sorted(validator.iter_errors(body), key=lambda e: _order(e.path, e.message))
    return [f"{error.json_path}: {_short(error.message)}" for error in errors]


def fast_violations(fast: jsonschema_rs.Validator, body: Any) -> list[str]:
    """jsonschema-rs's violations, in the shape and order of :func:`violations`."""
    errors = sorted(fast.iter_errors(body), key=lambda e: _order(e.instance_path, e.message))
    return [f"{_json_path(error.instance_path)}: {_short(error.message)}" for error in errors]


def _json_path(path: Iterable[str | int]) -> str:
    """``$.items[0].sku``: jsonschema's own ``json_path`` for the same path, so both
    validators' reasons name places alike."""
    from jsonschema.exceptions import ValidationError

    return str(ValidationError("", path=path).json_path)


class ValidateMiddleware(Middleware):
    """Reject a message whose body does not match the JSON Schema, listing every violation.

    The body must already be data: a body still in bytes is rejected with a hint to
    ``convert`` it first.
    """

    Options = ValidateOptions
    description = "reject bodies that do not match a JSON Schema"

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        self.validator = build_validator(options)
        from referencing.exceptions import Unresolvable

        self._unresolvable = Unresolvable
        self.fast: jsonschema_rs.Validator | None = None
        try:
            self.fast = build_fast_validator(self.validator, options.check_formats)
        except ValueError as err:
            reason = _short(str(err).partition("\n")[0])
            context.logger.info(
                "validate: jsonschema-rs cannot compile the schema (%s); "
                "checking with jsonschema alone, which is slower",
                reason,
            )

    async def __call__(self, message: Message, call_next: Next) -> None:
        body = message.body
        if isinstance(body, bytes | bytearray | memoryview):
            raise Reject(
                "validate: the body is bytes, not data; decode it first, "
                'e.g. { type = "convert", from = "json" }'
            )
        fast = self.fast
        passed = False
        if fast is not None:
            try:
                passed = fast.is_valid(body)
            except ValueError:  # a value that is not JSON data (a datetime, a set)
                fast = None  # jsonschema decides
        if passed:
            await call_next(message)
            return
        try:
            found = violations(self.validator, body)
        except self._unresolvable as err:
            raise Reject(
                f"validate: the schema has a reference that cannot be resolved: {err}"
            ) from err
        if not found and fast is not None:  # the two disagree; jsonschema-rs decides
            found = fast_violations(fast, body)
        if found:
            limit = self.options.max_errors
            shown = found[:limit]
            if len(found) > limit:
                shown.append(f"and {len(found) - limit} more")
            count = f"{len(found)} violation" + ("" if len(found) == 1 else "s")
            raise Reject(f"validate: body does not match the schema ({count}): " + "; ".join(shown))
        await call_next(message)
