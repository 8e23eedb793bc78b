"""Value conversions between messages and PostgreSQL.

Reading: json and jsonb columns decode to Python data (asyncpg leaves them as text).
Writing: every value is sent as text and cast to the column's type in SQL
(``$1::text::timestamptz``), so JSON-shaped message data (ISO timestamps, numbers,
strings, nested objects for json columns, lists for array columns) fits any column
the way ``COPY`` input would, without per-type Python conversions.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import asyncpg

_json_encoder = msgspec.json.Encoder()


def _encode_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


async def install_json_codecs(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


class ValueConversionError(ValueError):
    """Raised when a message value cannot become the text of a column's value."""


def to_text(value: Any, column_type: str) -> str | None:
    """The text input for ``value`` in a column of ``column_type`` (``None`` is NULL)."""
    if value is None:
        return None
    if column_type in ("json", "jsonb"):
        return _encode_json(value)
    if column_type.endswith("[]") and isinstance(value, list | tuple):
        return array_literal(value)
    return scalar_text(value, column_type)


def scalar_text(value: Any, column_type: str = "") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        if column_type == "bytea":
            return "\\x" + bytes(value).hex()
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as err:
            raise ValueConversionError(
                f"binary data that is not UTF-8 fits only a bytea column, not {column_type}"
            ) from err
    if isinstance(value, dict | list | tuple):
        return _encode_json(value)
    return str(value)


def array_literal(values: list[Any] | tuple[Any, ...]) -> str:
    """A PostgreSQL array literal: ``{"a","b",NULL}``, nested lists as nested braces."""
    items = []
    for item in values:
        if item is None:
            items.append("NULL")
        elif isinstance(item, list | tuple):
            items.append(array_literal(item))
        else:
            text = scalar_text(item)
            items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"
