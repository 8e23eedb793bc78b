"""Property tests: each codec reads back what it writes, for the data it can hold."""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import parse_qs

from hypothesis import given, settings
from hypothesis import strategies as st

from integrator.transforms.csv_codec import CsvCodec, CsvOptions
from integrator.transforms.simple_codecs import FormCodec, JsonCodec, MsgpackCodec
from integrator.transforms.xml_codec import XmlCodec

modest = settings(max_examples=100, deadline=None, database=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@modest
@given(json_values)
def test_json_round_trips(value: Any) -> None:
    codec = JsonCodec()
    data = codec.encode(value)
    assert codec.decode(data) == value
    assert json.loads(data) == value  # and the standard library reads the same thing


@modest
@given(json_values)
def test_msgpack_round_trips(value: Any) -> None:
    codec = MsgpackCodec()
    assert codec.decode(codec.encode(value)) == value


@st.composite
def csv_tables(draw: st.DrawFn) -> list[dict[str, str]]:
    columns = draw(
        st.lists(st.text(max_size=6).filter(lambda s: not s.startswith("\ufeff")),
                 min_size=1, max_size=5, unique=True)
    )  # fmt: skip
    rows = st.fixed_dictionaries({column: st.text(max_size=10) for column in columns})
    return draw(st.lists(rows, max_size=5))


@modest
@given(csv_tables(), st.sampled_from([",", ";", "\t", "|"]))
def test_csv_round_trips_records_of_strings(records: list[dict[str, str]], delimiter: str) -> None:
    codec = CsvCodec(CsvOptions(delimiter=delimiter))
    data = codec.encode(records)
    assert codec.decode(data) == records
    if records:  # the standard library's DictReader agrees
        text = io.StringIO(data.decode(), newline="")
        assert list(csv.DictReader(text, delimiter=delimiter)) == records


form_values = st.text() | st.lists(st.text(), min_size=2, max_size=4)


@modest
@given(st.dictionaries(st.text(), form_values, max_size=6))
def test_form_round_trips_objects_of_strings(value: dict[str, Any]) -> None:
    codec = FormCodec()
    data = codec.encode(value)
    assert codec.decode(data) == value
    # the standard library parses the same pairs
    parsed = parse_qs(data.decode(), keep_blank_values=True)
    assert {k: v if isinstance(v, list) else [v] for k, v in value.items()} == parsed


# -- xml: the documented object shape --------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,6}", fullmatch=True)
xml_chars = st.characters(
    codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00\ufffe\uffff"
).filter(lambda c: c in "\t\n\r" or ord(c) >= 0x20)
attribute_text = st.text(xml_chars, max_size=8)
element_text = st.text(xml_chars, min_size=1, max_size=8).filter(lambda s: s == s.strip() and s)


def element_values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An element: null, text, or an object with at least one attribute or child."""
    child_value = children | st.lists(children, min_size=2, max_size=3)

    @st.composite
    def objects(draw: st.DrawFn) -> dict[str, Any]:
        attributes = draw(st.dictionaries(names.map(lambda n: "@" + n), attribute_text, max_size=3))
        elements = draw(st.dictionaries(names, child_value, max_size=3))
        if not attributes and not elements:
            elements = {draw(names): draw(children)}
        value: dict[str, Any] = {**attributes, **elements}
        if draw(st.booleans()):
            value["#text"] = draw(element_text)
        return value

    return objects()


xml_elements = st.recursive(st.none() | element_text, element_values, max_leaves=12)


@modest
@given(names, xml_elements)
def test_xml_round_trips_the_documented_shape(root: str, element: Any) -> None:
    codec = XmlCodec()
    document = {root: element}
    assert codec.decode(codec.encode(document)) == document
