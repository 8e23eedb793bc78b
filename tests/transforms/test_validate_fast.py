"""validate: jsonschema-rs decides, jsonschema writes the reasons, nothing is fetched."""

from __future__ import annotations

import datetime
import logging
import subprocess
import sys
from typing import Any

import anyio
import pytest
from aiohttp import web

from integrator.components import Context
from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.validate import ValidateMiddleware, fast_violations, violations
from tests.http.loopback import serve

ORDER = {
    "type": "object",
    "required": ["order_id", "currency", "items"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_[0-9]+$"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "seq": {"type": "integer", "minimum": 0},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}},
            },
        },
    },
}
VALID = {"order_id": "ord_1", "currency": "EUR", "seq": 3, "items": [{"sku": "a"}]}


class _Untouchable:
    """A jsonschema validator that fails the test if it is asked anything."""

    def iter_errors(self, body: Any) -> Any:
        raise AssertionError("jsonschema was consulted for a valid body")


async def test_a_valid_body_is_passed_on_by_jsonschema_rs_alone(build, run) -> None:
    middleware = build(ValidateMiddleware, schema=ORDER)
    assert middleware.fast is not None
    middleware.validator = _Untouchable()
    message = Message(body=VALID)
    assert await run(middleware, message=message) == [message]


async def test_rejection_reasons_are_jsonschema_s_as_before(build, run) -> None:
    body = {"order_id": 7, "currency": "euro", "seq": -1, "items": [{}, {"sku": 2}], "x": 1}
    with pytest.raises(Reject) as caught:
        await run(build(ValidateMiddleware, schema=ORDER), message=Message(body=body))
    alone = build(ValidateMiddleware, schema=ORDER)
    alone.fast = None  # jsonschema only, as the middleware was before jsonschema-rs
    with pytest.raises(Reject) as before:
        await run(alone, message=Message(body=body))
    assert caught.value.reason == before.value.reason
    assert "$.currency: 'euro' does not match '^[A-Z]{3}$'" in caught.value.reason


async def test_where_the_two_disagree_jsonschema_rs_decides_and_explains(build, run) -> None:
    # Python's `$` also matches before a final newline; ECMA 262's (jsonschema-rs's) does not.
    body = {**VALID, "currency": "EUR\n"}
    alone = build(ValidateMiddleware, schema=ORDER)
    alone.fast = None
    assert await run(alone, message=Message(body=body)) != []  # jsonschema alone lets it by
    with pytest.raises(Reject) as caught:
        await run(build(ValidateMiddleware, schema=ORDER), message=Message(body=body))
    assert caught.value.reason == (
        "validate: body does not match the schema (1 violation): "
        '$.currency: "EUR\\n" does not match "^[A-Z]{3}$"'
    )


async def test_formats_jsonschema_cannot_check_are_checked(build, run) -> None:
    schema = {"properties": {"when": {"type": "string", "format": "date-time"}}}
    with pytest.raises(Reject, match=r"\$\.when: .yesterday. is not a .date-time."):
        await run(
            build(ValidateMiddleware, schema=schema), message=Message(body={"when": "yesterday"})
        )


async def test_patterns_follow_ecma_262_so_word_and_digit_classes_are_ascii(build, run) -> None:
    schema = {"properties": {"name": {"type": "string", "pattern": "^\\w+$"}}}
    with pytest.raises(Reject, match=r"\$\.name: .+ does not match"):
        await run(build(ValidateMiddleware, schema=schema), message=Message(body={"name": "é"}))
    letters = {"properties": {"name": {"type": "string", "pattern": "^[0-9A-Za-zÀ-ÿ_]+$"}}}
    message = Message(body={"name": "é"})
    assert await run(build(ValidateMiddleware, schema=letters), message=message) == [message]


async def test_a_decimal_multiple_of_is_exact(build, run) -> None:
    message = Message(body={"price": 0.07})
    schema = {"properties": {"price": {"multipleOf": 0.01}}}
    assert await run(build(ValidateMiddleware, schema=schema), message=message) == [message]


async def test_check_formats_false_is_honoured_by_both_validators(build, run) -> None:
    schema = {"properties": {"ip": {"format": "ipv4"}, "when": {"format": "date-time"}}}
    body = {"ip": "999.1.1.1", "when": "yesterday"}
    middleware = build(ValidateMiddleware, schema=schema, check_formats=False)
    assert middleware.fast is not None
    assert middleware.fast.is_valid(body)
    assert violations(middleware.validator, body) == []
    message = Message(body=body)
    assert await run(middleware, message=message) == [message]


@pytest.mark.parametrize(
    "schema",
    [
        {"$schema": "http://json-schema.org/draft-03/schema#", "type": "integer"},
        {"type": "integer", "not": {"type": "string", "pattern": "^[0-9]+\\Z"}},
    ],
    ids=["draft 3", "a pattern only Python reads"],
)
async def test_a_schema_jsonschema_rs_cannot_compile_is_checked_by_jsonschema(
    build, run, schema: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("integrator.route.test-validate")
    with caplog.at_level(logging.INFO, logger=logger.name):
        middleware = build(ValidateMiddleware, Context(route="test", logger=logger), schema=schema)
    assert middleware.fast is None
    assert "checking with jsonschema alone" in caplog.text
    with pytest.raises(Reject, match="'one' is not of type 'integer'"):
        await run(middleware, message=Message(body="one"))
    assert await run(middleware, message=Message(body=1)) != []


async def test_a_body_that_is_not_json_data_is_checked_by_jsonschema(build, run) -> None:
    # jsonschema-rs refuses to look at a datetime; jsonschema sees a value of no JSON type.
    schema = {"properties": {"at": {"type": "string"}}}
    message = Message(body={"at": datetime.datetime(2026, 1, 1)})
    with pytest.raises(
        Reject, match=r"\$\.at: datetime\.datetime\(2026, 1, 1, 0, 0\) is not of type"
    ):
        await run(build(ValidateMiddleware, schema=schema), message=message)


async def test_an_error_from_the_rest_of_the_chain_passes_through_once(build) -> None:
    middleware = build(ValidateMiddleware, schema=ORDER)
    calls: list[Message] = []

    async def failing(message: Message) -> None:
        calls.append(message)
        raise ValueError("the sink broke")

    with pytest.raises(ValueError, match="the sink broke"):
        await middleware(Message(body=VALID), failing)
    assert len(calls) == 1


async def test_a_remote_reference_is_never_fetched(build, run) -> None:
    hits: list[str] = []

    async def schema(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"type": "object"})  # would let the body by, if fetched

    app = web.Application()
    app.router.add_get("/order.json", schema)
    async with serve(app) as url:
        # Built in a worker thread, so the loop could answer a fetch if one were made.
        middleware = await anyio.to_thread.run_sync(
            lambda: build(ValidateMiddleware, schema={"$ref": f"{url}/order.json"})
        )
        assert hits == []
        with pytest.raises(Reject, match="reference that cannot be resolved"):
            await run(middleware, message=Message(body={}))


def test_registering_validate_imports_neither_validator() -> None:
    # A daemon with no `validate` route keeps ~40 ms of start and several MB to itself.
    code = (
        "import sys; from integrator.testing import make_registry; _, registry = make_registry(); "
        "assert registry.get('middleware', 'validate') is not None; "
        "print([m for m in ('jsonschema', 'jsonschema_rs') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jsonschema_rs_violations_name_places_as_jsonschema_does() -> None:
    import jsonschema_rs

    schema = {"properties": {"the currency": {"pattern": "^[A-Z]{3}$"}}}
    fast = jsonschema_rs.validator_for(schema)
    assert fast_violations(fast, {"the currency": "EUR\n"}) == [
        '$[\'the currency\']: "EUR\\n" does not match "^[A-Z]{3}$"'
    ]
