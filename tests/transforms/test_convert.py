"""convert: decode the body from one format, encode it into another."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from integrator.components import Context
from integrator.errors import ConfigError, Reject
from integrator.hookspecs import hookimpl
from integrator.message import Message
from integrator.plugins import build_registry, get_plugin_manager
from integrator.transforms.codec import Codec, CodecError
from integrator.transforms.convert import ConvertMiddleware, codecs_from_registry

CSV = b"sku,qty\r\na-1,2\r\nb-2,5\r\n"


async def converted(
    build, run, body: Any, headers: dict[str, str] | None = None, **options
) -> Message:
    [out] = await run(
        build(ConvertMiddleware, **options), message=Message(body=body, headers=headers or {})
    )
    return out


async def test_from_csv_gives_records_and_drops_the_content_type(build, run) -> None:
    out = await converted(build, run, CSV, {"content-type": "text/csv"}, **{"from": "csv"})
    assert out.body == [{"sku": "a-1", "qty": "2"}, {"sku": "b-2", "qty": "5"}]
    assert "content-type" not in out.headers


async def test_to_csv_writes_a_header_row_and_sets_the_content_type(build, run) -> None:
    records = [{"sku": "a-1", "qty": 2}, {"sku": "b,2", "qty": None, "note": True}]
    out = await converted(build, run, records, to="csv")
    assert out.body == b'sku,qty,note\r\na-1,2,\r\n"b,2",,true\r\n'
    assert out.headers["content-type"] == "text/csv; charset=utf-8"


async def test_a_format_table_passes_codec_options(build, run) -> None:
    out = await converted(
        build, run, b"a;b\n1;2\n", **{"from": {"format": "csv", "delimiter": ";"}, "to": "json"}
    )
    assert json.loads(out.body) == [{"a": "1", "b": "2"}]
    assert out.headers["content-type"] == "application/json"


async def test_json_to_msgpack_transcodes(build, run) -> None:
    out = await converted(build, run, b'{"a": [1, 2.5, null]}', **{"from": "json", "to": "msgpack"})
    assert msgspec.msgpack.decode(out.body) == {"a": [1, 2.5, None]}
    assert out.headers["content-type"] == "application/msgpack"


async def test_a_body_that_is_already_data_passes_from_json(build, run) -> None:
    out = await converted(build, run, {"a": 1}, **{"from": "json", "to": "form"})
    assert out.body == b"a=1"


async def test_form_decodes_repeated_names_as_arrays(build, run) -> None:
    out = await converted(build, run, b"name=J%C3%BCrgen+B&tag=a&tag=b&empty=", **{"from": "form"})
    assert out.body == {"name": "Jürgen B", "tag": ["a", "b"], "empty": ""}


async def test_text_and_bytes_convert_between_bytes_and_strings(build, run) -> None:
    text = await converted(build, run, "héllo".encode(), **{"from": "text"})
    assert text.body == "héllo"
    raw = await converted(build, run, "héllo", **{"from": "text", "to": "bytes"})
    assert raw.body == "héllo".encode()
    assert raw.headers["content-type"] == "application/octet-stream"


async def test_xml_to_json(build, run) -> None:
    xml = b'<order id="7"><item>a</item><item>b</item></order>'
    out = await converted(build, run, xml, **{"from": "xml", "to": "json"})
    assert json.loads(out.body) == {"order": {"@id": "7", "item": ["a", "b"]}}


async def test_a_csv_row_with_extra_fields_rejects_naming_the_line(build, run) -> None:
    with pytest.raises(Reject) as caught:
        await converted(build, run, b"a,b\n1,2\n3,4,5\n", **{"from": "csv"})
    assert caught.value.reason == (
        "convert: cannot read the body as csv: invalid CSV: line 3 has 3 fields, the header has 2"
    )
    assert caught.value.retriable is False


async def test_a_csv_row_with_missing_fields_rejects(build, run) -> None:
    with pytest.raises(Reject, match="line 2 has 1 fields, the header has 2"):
        await converted(build, run, b"a,b\n1\n", **{"from": "csv"})


async def test_malformed_csv_quoting_rejects(build, run) -> None:
    with pytest.raises(Reject, match=r"invalid CSV: line 2: .*'\W' expected after '\"'"):
        await converted(build, run, b'a,b\n"1"x,2\n', **{"from": "csv"})


async def test_malformed_xml_rejects_with_line_and_column(build, run) -> None:
    with pytest.raises(Reject) as caught:
        await converted(build, run, b"<a>\n  <b></a>", **{"from": "xml"})
    assert caught.value.reason == (
        "convert: cannot read the body as xml: invalid XML: line 2, column 8: mismatched tag"
    )


async def test_malformed_json_rejects(build, run) -> None:
    with pytest.raises(Reject, match="cannot read the body as json: invalid JSON"):
        await converted(build, run, b'{"a": ', **{"from": "json"})


async def test_bytes_are_refused_when_no_from_says_what_they_are(build, run) -> None:
    with pytest.raises(Reject, match="the body is bytes, not data; set 'from'"):
        await converted(build, run, b"{}", to="json")


async def test_data_is_refused_by_a_text_format(build, run) -> None:
    with pytest.raises(Reject, match=r"already data \(an object\), not csv text"):
        await converted(build, run, {"a": 1}, **{"from": "csv"})


async def test_data_a_format_cannot_hold_rejects(build, run) -> None:
    with pytest.raises(Reject, match="csv record 0, field 'a': a cell cannot hold an object"):
        await converted(build, run, [{"a": {"nested": 1}}], to="csv")


def test_from_or_to_is_required(build) -> None:
    with pytest.raises(ValueError, match="give 'from', 'to' or both"):
        build(ConvertMiddleware)


def test_unknown_options_of_a_built_in_codec_fail_validation(build) -> None:
    with pytest.raises(
        ValueError, match="from: csv options: Object contains unknown field `delim`"
    ):
        build(ConvertMiddleware, **{"from": {"format": "csv", "delim": ";"}})
    with pytest.raises(ValueError, match="delimiter must be one character"):
        build(ConvertMiddleware, **{"from": {"format": "csv", "delimiter": ";;"}})


class ShoutCodec(Codec):
    """A plugin's codec: text in capitals."""

    name = "shout"
    content_type = "text/x-shout"

    def decode(self, data: bytes) -> Any:
        return data.decode().lower()

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise CodecError("shout needs text")
        return value.upper().encode()


async def test_a_plugin_codec_is_found_through_the_codecs_service(build, run) -> None:
    context = Context(route="r", services={"codecs": {"shout": ShoutCodec}})
    middleware = build(ConvertMiddleware, context, **{"from": "text", "to": "shout"})
    [out] = await run(middleware, message=Message(body=b"hello"))
    assert out.body == b"HELLO"
    assert out.headers["content-type"] == "text/x-shout"


class YamlByReference:
    """A plugin that registers its codec by reference, to a module that is not installed."""

    @hookimpl
    def integrator_codecs(self, register: Any) -> None:
        register("yaml", "integrator_no_such_module:YamlCodec")


@pytest.fixture
def with_broken_yaml() -> Context:
    pm, registry = get_plugin_manager(entrypoints=False)
    pm.register(YamlByReference(), name="yaml-plugin")
    codecs = codecs_from_registry(build_registry(pm, registry))
    return Context(route="r", services={"codecs": codecs})


def test_a_plugin_codec_that_cannot_be_imported_fails_when_the_route_is_built(
    build, with_broken_yaml: Context
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ConvertMiddleware, with_broken_yaml, to="yaml")
    assert (
        "route 'r': convert: to: codec 'yaml' of plugin 'yaml-plugin' cannot be loaded: "
        "integrator_no_such_module:YamlCodec: ModuleNotFoundError"
    ) in str(caught.value)


async def test_a_codec_that_cannot_be_imported_does_not_matter_to_a_convert_not_using_it(
    build, run, with_broken_yaml: Context
) -> None:
    middleware = build(ConvertMiddleware, with_broken_yaml, **{"from": "json", "to": "csv"})
    [out] = await run(middleware, message=Message(body=b'[{"a": 1}]'))
    assert out.body == b"a\r\n1\r\n"


def test_an_unknown_format_fails_when_the_route_is_built(build) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ConvertMiddleware, Context(route="r"), to="yaml")
    assert "route 'r': convert: to: unknown format 'yaml'; known formats: bytes, csv" in str(
        caught.value
    )


def test_asking_whether_a_registered_codec_exists_does_not_import_it() -> None:
    from integrator.transforms.convert import codecs_from_registry

    class Unimportable:
        @hookimpl
        def integrator_codecs(self, register: Any) -> None:
            register("ghost", "integrator_no_such_module:GhostCodec")

    pm, registry = get_plugin_manager(entrypoints=False)
    pm.register(Unimportable(), name="Unimportable")
    codecs = codecs_from_registry(build_registry(pm, registry))
    assert "ghost" in codecs  # importing it would raise ComponentUnavailable
    assert "json" in codecs
