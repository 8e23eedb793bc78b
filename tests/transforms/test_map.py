"""map: set, template, copy, rename, delete, defaults, coerce, replace_body."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrator.errors import Reject
from integrator.message import Message
from integrator.transforms.map import MapMiddleware, MapOptions, MapPlan

PUSH = Message(
    body={
        "repository": {"full_name": "a/b", "id": 7},
        "commits": [{"id": "c1"}, {"id": "c2"}],
        "pusher": {"name": "Ada", "email": None},
    },
    headers={"x-github-event": "push", "x-github-delivery": "d-1"},
    attributes={"path": "/hooks/github"},
    id="m-1",
    trace_id="t-1",
)


async def mapped(build, run, message: Message = PUSH, **options) -> Message:
    [out] = await run(build(MapMiddleware, **options), message=message)
    return out


async def test_set_writes_expression_values_into_the_body(build, run) -> None:
    out = await mapped(
        build,
        run,
        set={"body.repo": "body.repository.full_name", "body.commits": "length(body.commits)"},
    )
    assert out.body["repo"] == "a/b"
    assert out.body["commits"] == 2
    assert out.body["pusher"] == {"name": "Ada", "email": None}  # the rest is kept


async def test_replace_body_builds_a_fresh_body_from_set(build, run) -> None:
    out = await mapped(
        build,
        run,
        replace_body=True,
        set={"body.repo": "body.repository.full_name", "body.commits": "length(body.commits)"},
    )
    assert out.body == {"repo": "a/b", "commits": 2}
    assert (out.id, out.trace_id, out.headers) == (PUSH.id, PUSH.trace_id, PUSH.headers)


async def test_set_creates_the_objects_on_a_nested_path(build, run) -> None:
    out = await mapped(build, run, set={"body.meta.source.event": 'headers."x-github-event"'})
    assert out.body["meta"] == {"source": {"event": "push"}}


async def test_the_incoming_message_is_never_changed(build, run) -> None:
    before = copy.deepcopy(PUSH.to_dict())
    await mapped(
        build,
        run,
        set={"body.repository.full_name": '`"x/y"`', "headers.x-new": "id"},
        rename={"body.pusher.name": "body.pusher.login"},
        delete=["body.commits", "attributes.path"],
        coerce={"body.repository.id": "str"},
    )
    assert PUSH.to_dict() == before


async def test_writing_top_level_body_fields_never_changes_the_incoming_message(build, run) -> None:
    before = copy.deepcopy(PUSH.to_dict())
    await mapped(build, run, set={"body.repo": "body.repository.full_name", "body.commits": "id"})
    assert PUSH.to_dict() == before


async def test_writing_top_level_body_fields_keeps_the_envelope(build, run) -> None:
    out = await mapped(build, run, set={"body.repo": "body.repository.full_name"})
    assert (out.id, out.trace_id, out.created_at) == (PUSH.id, PUSH.trace_id, PUSH.created_at)
    assert (out.headers, out.attributes) == (PUSH.headers, PUSH.attributes)


async def test_replace_body_turns_a_text_body_into_an_object(build, run) -> None:
    out = await mapped(
        build, run, message=Message(body="plain"), replace_body=True, set={"body.x": "body"}
    )
    assert out.body == {"x": "plain"}


KEYS = st.sampled_from(["a", "b", "c"])
SOURCES = st.sampled_from(["body.a", "body.b.c", "id", "`1`", "headers.h", "body"])
COPIES = st.sampled_from(["body.a", "body.b.c", "headers.h", "body.z"])


@settings(max_examples=150, deadline=None, database=None)
@given(
    body=st.one_of(
        st.none(),
        st.text(max_size=2),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(KEYS, st.one_of(st.integers(), st.dictionaries(KEYS, st.integers()))),
    ),
    sets=st.dictionaries(KEYS.map("body.{}".format), SOURCES, max_size=3),
    copies=st.dictionaries(st.sampled_from(["body.x", "body.y"]), COPIES, max_size=2),
    replace_body=st.booleans(),
)
def test_writing_top_level_body_fields_matches_the_general_editor(
    body: Any, sets: dict[str, str], copies: dict[str, str], replace_body: bool
) -> None:
    plan = MapPlan.compile(MapOptions(set=sets, copy=copies, replace_body=replace_body))
    assert plan.body_keys is not None
    general = dataclasses.replace(plan, body_keys=None)
    message = Message(body=body, headers={"h": "v"})
    assert _outcome(plan, message) == _outcome(general, message)


def _outcome(plan: MapPlan, message: Message) -> Any:
    try:
        return plan.apply(message)
    except ValueError as err:
        return type(err), str(err)


async def test_an_expression_that_finds_nothing_writes_null(build, run) -> None:
    out = await mapped(build, run, set={"body.branch": "body.ref"})
    assert out.body["branch"] is None


async def test_setting_a_header_to_null_removes_it(build, run) -> None:
    out = await mapped(build, run, set={"headers.x-github-delivery": "body.nothing"})
    assert "x-github-delivery" not in out.headers


async def test_header_values_are_written_as_text(build, run) -> None:
    out = await mapped(build, run, set={"headers.x-commits": "length(body.commits)"})
    assert out.headers["x-commits"] == "2"


async def test_set_can_write_attributes(build, run) -> None:
    out = await mapped(build, run, set={"attributes.repo.name": "body.repository.full_name"})
    assert out.attributes == {"path": "/hooks/github", "repo": {"name": "a/b"}}


async def test_template_fills_holes_with_expression_values(build, run) -> None:
    out = await mapped(
        build,
        run,
        template={
            "body.title": "${body.pusher.name} pushed ${length(body.commits)} commits"
            " to ${body.repository.full_name}",
            "body.literal": "cost: $${price}",
            "body.empty": "[${body.pusher.email}]",
            "body.ids": "${body.commits[].id}",
        },
    )
    assert out.body["title"] == "Ada pushed 2 commits to a/b"
    assert out.body["literal"] == "cost: ${price}"
    assert out.body["empty"] == "[]"
    assert out.body["ids"] == '["c1","c2"]'


async def test_template_holes_may_hold_braces_and_quotes(build, run) -> None:
    out = await mapped(build, run, template={"body.x": "${join('}', body.commits[].id)}"})
    assert out.body["x"] == "c1}c2"


def test_an_unclosed_template_hole_fails_validation(build) -> None:
    with pytest.raises(ValueError, match=r"template\.body\.x: .*never closed"):
        build(MapMiddleware, template={"body.x": "hello ${body.name"})


async def test_copy_takes_a_path_that_needs_no_quoting(build, run) -> None:
    out = await mapped(build, run, copy={"body.event": "headers.x-github-event"})
    assert out.body["event"] == "push"


async def test_copy_of_a_missing_field_writes_null(build, run) -> None:
    out = await mapped(build, run, copy={"attributes.topic": "headers.x-missing"})
    assert out.attributes["topic"] is None


async def test_rename_moves_a_field(build, run) -> None:
    out = await mapped(build, run, rename={"body.pusher": "body.author"})
    assert "pusher" not in out.body
    assert out.body["author"] == {"name": "Ada", "email": None}


async def test_rename_of_a_missing_field_writes_null(build, run) -> None:
    out = await mapped(build, run, rename={"body.nope": "body.yes"})
    assert out.body["yes"] is None


async def test_delete_removes_fields_and_ignores_missing_ones(build, run) -> None:
    out = await mapped(build, run, delete=["body.commits", "headers.x-github-delivery", "body.no"])
    assert "commits" not in out.body
    assert out.headers == {"x-github-event": "push"}


async def test_defaults_fill_absent_and_null_fields_only(build, run) -> None:
    out = await mapped(
        build,
        run,
        defaults={
            "body.pusher.email": "unknown@example.com",
            "body.priority": 3,
            "body.pusher.name": "X",
        },
    )
    assert out.body["pusher"] == {"name": "Ada", "email": "unknown@example.com"}
    assert out.body["priority"] == 3


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("42", "int", 42),
        (" 7 ", "int", 7),
        ("12.0", "int", 12),
        (3.0, "int", 3),
        ("2.5", "float", 2.5),
        (4, "float", 4.0),
        ("yes", "bool", True),
        ("False", "bool", False),
        (0, "bool", False),
        (12, "str", "12"),
        (True, "str", "true"),
        ({"a": 1}, "str", '{"a":1}'),
    ],
)
async def test_coerce_converts_types(build, run, value, kind, expected) -> None:
    out = await mapped(build, run, message=Message(body={"v": value}), coerce={"body.v": kind})
    assert out.body["v"] == expected
    assert type(out.body["v"]) is type(expected)


async def test_coerce_runs_after_set(build, run) -> None:
    out = await mapped(build, run, set={"body.n": "body.repository.id"}, coerce={"body.n": "str"})
    assert out.body["n"] == "7"


@pytest.mark.parametrize("value", [None, "absent"])
async def test_coerce_of_a_missing_field_rejects_with_the_path(build, run, value) -> None:
    body = {} if value == "absent" else {"count": None}
    with pytest.raises(Reject) as caught:
        await mapped(build, run, message=Message(body=body), coerce={"body.count": "int"})
    assert caught.value.reason == "map: coerce body.count: the field is missing"
    assert caught.value.retriable is False


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [("abc", "int", "'abc'"), (2.5, "int", "2.5"), ({"a": 1}, "float", "an object"),
     ("maybe", "bool", "'maybe'"), ("nan", "float", "'nan'")],
)  # fmt: skip
async def test_coerce_of_the_wrong_type_rejects_naming_path_and_value(
    build, run, value, kind, shown
) -> None:
    with pytest.raises(Reject) as caught:
        await mapped(
            build, run, message=Message(body={"x": {"v": value}}), coerce={"body.x.v": kind}
        )
    assert caught.value.reason.startswith(f"map: coerce body.x.v: cannot convert {shown} to {kind}")


async def test_setting_below_a_non_object_rejects(build, run) -> None:
    with pytest.raises(Reject, match=r"cannot set body\.repository\.full_name\.x: .* is a string"):
        await mapped(build, run, set={"body.repository.full_name.x": "id"})


async def test_setting_a_field_of_a_text_body_rejects(build, run) -> None:
    with pytest.raises(Reject, match="body is a string, not an object"):
        await mapped(build, run, message=Message(body="plain"), set={"body.x": "id"})


async def test_a_null_body_becomes_an_object(build, run) -> None:
    out = await mapped(build, run, message=Message(body=None), set={"body.x": "`1`"})
    assert out.body == {"x": 1}


async def test_quoted_path_keys_may_hold_dots(build, run) -> None:
    out = await mapped(build, run, set={'body."a.b".c': "`1`"})
    assert out.body["a.b"] == {"c": 1}


async def test_array_elements_are_addressed_by_index(build, run) -> None:
    out = await mapped(
        build, run, copy={"body.first": "body.commits.0.id"}, delete=["body.commits.1"]
    )
    assert out.body["first"] == "c1"
    assert out.body["commits"] == [{"id": "c1"}]


def test_every_bad_option_is_reported_at_once(build) -> None:
    with pytest.raises(ValueError) as caught:
        build(
            MapMiddleware,
            set={"body.a": "body.", "repo": "body.x"},
            rename={"body.b": "nowhere.c"},
            coerce={"headers.a.b": "int"},
        )
    message = str(caught.value)
    assert "set.body.a: invalid expression 'body.'" in message
    assert "set.repo: path 'repo' must start with one of body, headers, attributes" in message
    assert "rename.body.b: path 'nowhere.c' must start with" in message
    assert "coerce.headers.a.b: path 'headers.a.b': headers are flat" in message


def test_a_field_written_twice_is_refused(build) -> None:
    with pytest.raises(
        ValueError, match=r"copy\.body\.a: the field is also written by set\.body\.a"
    ):
        build(MapMiddleware, set={"body.a": "id"}, copy={"body.a": "headers.x"})


def test_an_unknown_coercion_is_refused_by_the_options_type(build) -> None:
    with pytest.raises(msgspec.ValidationError):
        build(MapMiddleware, coerce={"body.a": "decimal"})
