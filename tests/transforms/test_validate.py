"""validate: JSON Schema checks that list every violation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.validate import ValidateMiddleware

ORDER = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {
        "item": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}
    },
}


async def test_a_valid_body_passes_unchanged(build, run) -> None:
    message = Message(body={"id": 1, "items": [{"sku": "a"}]})
    assert await run(build(ValidateMiddleware, schema=ORDER), message=message) == [message]


async def test_a_rejection_lists_every_violation_with_its_path(build, run) -> None:
    body = {"id": "one", "email": "nope", "items": [{"sku": 1}, {}, {"sku": "ok"}]}
    with pytest.raises(Reject) as caught:
        await run(build(ValidateMiddleware, schema=ORDER), message=Message(body=body))
    reason = caught.value.reason
    assert caught.value.retriable is False
    assert reason.startswith("validate: body does not match the schema (4 violations): ")
    assert "$.email: 'nope' is not a 'email'" in reason
    assert "$.id: 'one' is not of type 'integer'" in reason
    assert "$.items[0].sku: 1 is not of type 'string'" in reason
    assert "$.items[1]: 'sku' is a required property" in reason
    # in path order, so the same body always gives the same reason
    assert reason.index("$.email") < reason.index("$.id") < reason.index("$.items[0]")


async def test_the_list_is_capped_and_the_rest_counted(build, run) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    middleware = build(ValidateMiddleware, schema=schema, max_errors=3)
    with pytest.raises(Reject) as caught:
        await run(middleware, message=Message(body=["x"] * 10))
    reason = caught.value.reason
    assert "(10 violations)" in reason
    assert reason.count("is not of type 'integer'") == 3
    assert reason.endswith("; and 7 more")


async def test_formats_can_be_left_unchecked(build, run) -> None:
    schema = {"properties": {"ip": {"format": "ipv4"}}}
    message = Message(body={"ip": "999.1.1.1"})
    with pytest.raises(Reject, match="is not a 'ipv4'"):
        await run(build(ValidateMiddleware, schema=schema), message=message)
    unchecked = build(ValidateMiddleware, schema=schema, check_formats=False)
    assert await run(unchecked, message=message) == [message]


async def test_the_schema_can_come_from_a_json_file(build, run, tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER))
    middleware = build(ValidateMiddleware, schema_file=str(path))
    with pytest.raises(Reject, match=r"\$: 'id' is a required property"):
        await run(middleware, message=Message(body={"items": []}))


async def test_the_schema_can_come_from_a_toml_file(build, run, tmp_path: Path) -> None:
    path = tmp_path / "order.toml"
    path.write_text('type = "object"\nrequired = ["id"]\n')
    middleware = build(ValidateMiddleware, schema_file=str(path))
    with pytest.raises(Reject, match="'id' is a required property"):
        await run(middleware, message=Message(body={}))


async def test_the_schema_keyword_selects_the_draft(build, run) -> None:
    # In draft 4, exclusiveMaximum is a boolean modifier; in 2020-12 it is a number.
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "maximum": 5,
        "exclusiveMaximum": True,
    }
    with pytest.raises(Reject, match="greater than or equal to the maximum of 5"):
        await run(build(ValidateMiddleware, schema=draft4), message=Message(body=5))


def test_an_invalid_schema_fails_validation(build) -> None:
    with pytest.raises(ValueError, match=r"^schema: not a valid JSON Schema: at \$\.type"):
        build(ValidateMiddleware, schema={"type": "integr"})


def test_an_unknown_schema_dialect_fails_validation(build) -> None:
    with pytest.raises(ValueError, match="unknown \\$schema"):
        build(ValidateMiddleware, schema={"$schema": "https://example.com/my-draft"})


def test_exactly_one_schema_source_is_required(build, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of 'schema'"):
        build(ValidateMiddleware)
    with pytest.raises(ValueError, match="exactly one of 'schema'"):
        build(ValidateMiddleware, schema={}, schema_file=str(tmp_path / "s.json"))


def test_an_unreadable_schema_file_fails_validation(build, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schema_file: cannot read"):
        build(ValidateMiddleware, schema_file=str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"schema_file: .* is not valid"):
        build(ValidateMiddleware, schema_file=str(broken))


async def test_a_bytes_body_is_rejected_with_a_hint(build, run) -> None:
    with pytest.raises(Reject, match="decode it first"):
        await run(build(ValidateMiddleware, schema={}), message=Message(body=b"{}"))


async def test_remote_references_are_never_fetched(build, run) -> None:
    schema = {"$ref": "https://schemas.example.invalid/order.json"}
    with pytest.raises(Reject, match="reference that cannot be resolved"):
        await run(build(ValidateMiddleware, schema=schema), message=Message(body={}))
