"""Message ids made when a source has none: UUIDv7, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from integrator.message import Message, decode, encode, new_id, same_data


def test_a_new_id_is_a_version_7_uuid_in_canonical_form() -> None:
    text = new_id()
    parsed = uuid.UUID(text)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == text


def test_a_new_id_starts_with_the_current_unix_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    stamp = int(uuid.UUID(new_id()).hex[:12], 16)
    after = time.time_ns() // 1_000_000
    assert before <= stamp <= after


def test_new_ids_are_unique() -> None:
    assert len({new_id() for _ in range(50_000)}) == 50_000


def test_new_ids_of_later_milliseconds_sort_later() -> None:
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first


def test_new_ids_vary_in_every_random_digit() -> None:
    # 74 random bits: each hex digit after the timestamp (but the fixed version and the
    # variant's two bits) takes more than one value over a few hundred ids.
    ids = [uuid.UUID(new_id()).hex for _ in range(500)]
    for position in [*range(13, 16), *range(17, 32)]:
        assert len({text[position] for text in ids}) > 1, position
    assert {text[16] for text in ids} == set("89ab")


def test_a_message_without_an_id_gets_a_new_one() -> None:
    assert uuid.UUID(Message(body=1).id).version == 7
    assert Message(body=1).id != Message(body=1).id


MESSAGE = Message(
    body={"a": [1, 2.5, None, "é"]},
    headers={"content-type": "application/json"},
    attributes={"path": "/hooks/x", "query": {"k": ["1", "2"]}},
    id="m-1",
    created_at=1_700_000_000.25,
    trace_id="trace",
)


@pytest.mark.parametrize(
    "json_body", [None, b'{"a": [1, 2.5, null, "\\u00e9"]}'], ids=["encoded", "text"]
)
def test_a_stored_message_decodes_to_an_equal_message(json_body: bytes | None) -> None:
    assert decode(encode(MESSAGE, json_body)) == MESSAGE


def test_a_body_stored_as_json_text_keeps_that_text_as_received() -> None:
    text = b'{ "a" : [1, 2.5, null, "\\u00e9"] }'
    assert text in encode(MESSAGE, text)


def test_a_message_stored_before_json_text_bodies_still_decodes() -> None:
    # The envelope of earlier versions: the Message struct itself as a MessagePack map.
    assert decode(msgspec.msgpack.encode(MESSAGE)) == MESSAGE


def test_a_body_with_an_integer_beyond_64_bits_is_stored_and_comes_back_exact() -> None:
    message = Message(body={"n": 2**64, "m": -(2**70)}, id="big")
    assert decode(encode(message)) == message


def test_a_big_integer_beside_a_value_json_would_change_is_refused_not_altered() -> None:
    # JSON text would bring the bytes back as base64 text: better refused than altered.
    with pytest.raises(OverflowError):
        encode(Message(body={"n": 2**64, "raw": b"\x00raw"}))


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"a": [1, "x", None]}, {"a": [1, "x", None]}, True),
        ({"flag": True}, {"flag": 1}, False),
        ([1], [1.0], False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_same_data_compares_types_too(a: object, b: object, same: bool) -> None:
    assert same_data(a, b) is same
