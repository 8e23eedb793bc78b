"""``csv``: rows of a table to and from a list of records, the first row being the header.

Decoding gives one object per row, keyed by the header's names, every value a
string; blank lines are skipped; a row with more or fewer fields than the header
is an error naming its line. Encoding takes a list of objects (or one object),
makes the header from their keys in the order first seen, and writes null as an
empty cell, booleans as ``true``/``false`` and numbers as JSON numbers. Lines end
with CRLF, as RFC 4180 says. A UTF-8 byte-order mark, as spreadsheets write it,
is ignored.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec

from integrator.transforms.codec import Codec, CodecError, scalar_text
from integrator.transforms.paths import describe_kind


class CsvOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The one character between fields: ``","``, ``";"``, ``"\t"``, ``"|"``…
    delimiter: str = ","

    def validate(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"delimiter must be one character other than a quote or a line break, "
                f"found {self.delimiter!r}"
            )


class CsvCodec(Codec):
    """CSV with a header row, to and from a list of records."""

    name = "csv"
    content_type = "text/csv; charset=utf-8"
    Options = CsvOptions

    def decode(self, data: bytes) -> Any:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise CodecError(f"invalid CSV: not UTF-8 at byte {err.start}") from err
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter=self.options.delimiter, strict=True
        )
        records: list[dict[str, str]] = []
        header: list[str] | None = None
        try:
            for row in reader:
                if not row:
                    continue
                if header is None:
                    header = row
                    _check_header(header, reader.line_num)
                    continue
                if len(row) != len(header):
                    raise CodecError(
                        f"invalid CSV: line {reader.line_num} has {len(row)} fields, "
                        f"the header has {len(header)}"
                    )
                records.append(dict(zip(header, row, strict=True)))
        except csv.Error as err:
            raise CodecError(f"invalid CSV: line {reader.line_num}: {err}") from err
        return records

    def encode(self, value: Any) -> bytes:
        records = [value] if isinstance(value, dict) else value
        if not isinstance(records, list):
            raise CodecError(f"csv needs an array of objects, found {describe_kind(value)}")
        header: dict[str, None] = {}
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise CodecError(
                    f"csv record {index} must be an object, found {describe_kind(record)}"
                )
            header.update(dict.fromkeys(str(key) for key in record))
        if not records:
            return b""
        out = io.StringIO(newline="")
        writer = csv.writer(out, delimiter=self.options.delimiter, lineterminator="\r\n")
        writer.writerow(header)
        for index, record in enumerate(records):
            row = []
            for key in header:
                cell = record.get(key)
                text = "" if cell is None else scalar_text(cell)
                if text is None:
                    raise CodecError(
                        f"csv record {index}, field {key!r}: "
                        f"a cell cannot hold {describe_kind(cell)}"
                    )
                row.append(text)
            writer.writerow(row)
        try:
            return out.getvalue().encode("utf-8")
        except UnicodeEncodeError as err:
            raise CodecError(f"csv cannot be written as UTF-8: {err.reason}") from err


def _check_header(header: list[str], line: int) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise CodecError(f"invalid CSV: the header on line {line} repeats the column {name!r}")
        seen.add(name)
