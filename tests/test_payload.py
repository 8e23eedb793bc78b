"""``integrator.payload``: bodies to bytes and back, the same for every connector.

The standard library's ``json`` is the oracle for what JSON bytes mean.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrator.errors import IntegratorError
from integrator.payload import (
    PayloadError,
    content_type_of,
    decode_body,
    decode_body_with_json,
    encode_body,
    header_text,
)


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b'{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
        (b"42", 42),
        (b"hello", "hello"),
        ("caf\u00e9".encode(), "caf\u00e9"),
        (b"\xff\xfe", b"\xff\xfe"),
        (b"", ""),
    ],
)
def test_auto_tries_json_then_text_then_keeps_the_bytes(data: bytes, body: Any) -> None:
    assert decode_body(data, "auto") == body


def test_json_insists_on_json() -> None:
    assert decode_body(b"[1]", "json") == [1]
    with pytest.raises(PayloadError, match="not JSON"):
        decode_body(b"hello", "json")


def test_text_insists_on_utf8_and_never_parses_json() -> None:
    assert decode_body(b'{"a": 1}', "text") == '{"a": 1}'
    with pytest.raises(PayloadError, match="not UTF-8 text"):
        decode_body(b"\xff", "text")


def test_bytes_keeps_the_data_as_it_is() -> None:
    assert decode_body(b'{"a": 1}', "bytes") == b'{"a": 1}'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", 123),
        ("Application/JSON; charset=utf-8", 123),
        ("text/plain; charset=utf-8", "123"),
        ("application/octet-stream", b"123"),
        ("application/x-unknown", 123),  # unknown: guess
    ],
)
def test_auto_follows_a_known_content_type(content_type: str, body: Any) -> None:
    assert decode_body(b"123", "auto", content_type) == body


def test_a_wrong_content_type_falls_back_to_guessing() -> None:
    assert decode_body(b"hello", "auto", "application/json") == "hello"
    assert decode_body(b"\xff", "auto", "text/plain") == b"\xff"


def test_a_content_type_does_not_override_an_explicit_mode() -> None:
    assert decode_body(b"123", "text", "application/json") == "123"


@pytest.mark.parametrize(
    ("data", "mode", "content_type", "from_json"),
    [
        (b'{"a": 1}', "auto", None, True),
        (b"123", "json", None, True),
        (b"123", "auto", "application/json", True),
        (b"123", "auto", "text/plain", False),  # the label says text: not parsed
        (b"hello", "auto", "application/json", False),  # a wrong label: guessed as text
        (b'{"a": 1}', "text", None, False),
        (b'{"a": 1}', "bytes", None, False),
        (b"\xff", "auto", None, False),
    ],
)
def test_the_json_text_comes_back_exactly_when_the_body_was_decoded_from_it(
    data: bytes, mode: Any, content_type: str | None, from_json: bool
) -> None:
    body, text = decode_body_with_json(data, mode, content_type)
    assert body == decode_body(data, mode, content_type)
    assert text == (data if from_json else None)
    if text is not None:
        assert text is data  # no copy: the text the source received
        assert json.loads(text) == body


def test_bytes_and_text_are_encoded_as_they_are() -> None:
    assert encode_body(b"\x00raw") == b"\x00raw"
    assert encode_body(bytearray(b"ab")) == b"ab"
    assert encode_body(memoryview(b"cd")) == b"cd"
    assert encode_body("caf\u00e9") == "caf\u00e9".encode()


def test_other_values_are_encoded_as_json() -> None:
    body = {"n": 1, "items": [True, None, 2.5, "x"]}
    assert json.loads(encode_body(body)) == body


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises((TypeError, msgspec.EncodeError)):
        encode_body({"when": object()})


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"x", "application/octet-stream"),
        ("x", "text/plain; charset=utf-8"),
        ({"x": 1}, "application/json"),
        (3, "application/json"),
    ],
)
def test_the_content_type_names_what_encode_body_produces(body: Any, content_type: str) -> None:
    assert content_type_of(body) == content_type


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values | st.binary())
def test_a_body_survives_encoding_and_decoding_with_its_content_type(body: Any) -> None:
    data = encode_body(body)
    assert decode_body(data, "auto", content_type_of(body)) == body


@given(json_values.filter(lambda v: not isinstance(v, str)))
def test_json_bodies_survive_even_without_a_content_type(body: Any) -> None:
    data = encode_body(body)
    assert json.loads(data) == body
    assert decode_body(data, "auto") == body


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("acme", "acme"),
        (b"acme", "acme"),
        (b"\xffx", "\ufffdx"),
        (2, "2"),
        (True, "true"),
        ({"a": [1]}, '{"a":[1]}'),
    ],
)
def test_header_values_become_text(value: Any, text: str) -> None:
    assert header_text(value) == text


def test_a_payload_error_is_an_integrator_error_and_a_value_error() -> None:
    assert issubclass(PayloadError, IntegratorError)
    assert issubclass(PayloadError, ValueError)
