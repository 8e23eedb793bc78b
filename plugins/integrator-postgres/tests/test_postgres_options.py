"""Connection options and SQL building: credentials stay secret, names are quoted."""

from __future__ import annotations

import pytest
from integrator_postgres import PollOptions, PostgresConnectorError, PostgresSinkOptions
from integrator_postgres.codecs import array_literal, to_text
from integrator_postgres.connection import connect, quote_table
from integrator_postgres.sink import insert_statement

from integrator.config import convert

SECRET = "s3cr3t-value-never-shown"


def test_a_url_is_shown_without_its_password() -> None:
    options = convert(
        {"url": f"postgresql://alice:{SECRET}@db:5432/app", "table": "t", "cursor": "id"},
        PollOptions,
    )
    assert options.safe_url() == "postgresql://alice:***@db:5432/app"
    assert SECRET not in repr(
        convert({"table": "t", "cursor": "id", "password": SECRET}, PollOptions)
    )


async def test_a_failed_connection_names_the_server_but_not_the_password() -> None:
    options = convert(
        {
            "url": f"postgresql://alice:{SECRET}@127.0.0.1:1/app",
            "password": SECRET,
            "table": "t",
            "cursor": "id",
        },
        PollOptions,
    )
    with pytest.raises(PostgresConnectorError) as caught:
        await connect(options, "test")
    assert "postgresql://alice:***@127.0.0.1:1/app" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_identifiers_are_quoted() -> None:
    assert quote_table('sales.or"ders') == '"sales"."or""ders"'


def test_an_upsert_overwrites_the_columns_outside_the_key() -> None:
    options = convert(
        {
            "table": "public.items",
            "columns": {"sku": "body.sku", "qty": "body.qty", "seen": "created_at"},
            "mode": "upsert",
            "conflict": ["sku"],
        },
        PostgresSinkOptions,
    )
    types = {"sku": "text", "qty": "integer", "seen": "timestamp with time zone"}
    assert insert_statement(options, types) == (
        'INSERT INTO "public"."items" ("sku", "qty", "seen")'
        " VALUES ($1::text::text, $2::text::integer, $3::text::timestamp with time zone)"
        ' ON CONFLICT ("sku") DO UPDATE SET "qty" = EXCLUDED."qty", "seen" = EXCLUDED."seen"'
    )


@pytest.mark.parametrize(
    ("value", "column_type", "text"),
    [
        (None, "integer", None),
        (True, "boolean", "true"),
        (2.5, "numeric", "2.5"),
        ({"a": [1]}, "jsonb", '{"a":[1]}'),
        ("plain", "jsonb", '"plain"'),
        ([1, None, "x,y"], "text[]", '{"1",NULL,"x,y"}'),
        (b"\x00\xff", "bytea", "\\x00ff"),
    ],
)
def test_values_become_the_text_postgres_parses(
    value: object, column_type: str, text: str | None
) -> None:
    assert to_text(value, column_type) == text


def test_nested_lists_become_nested_arrays() -> None:
    assert array_literal([[1, 2], [3, 4]]) == '{{"1","2"},{"3","4"}}'
