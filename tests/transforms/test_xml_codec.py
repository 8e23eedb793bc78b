"""The xml codec: the @attribute / #text object shape, and refusal of hostile documents."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from integrator.transforms.codec import CodecError
from integrator.transforms.xml_codec import XmlCodec, XmlOptions

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""


def test_decodes_attributes_text_and_repeated_children() -> None:
    document = b"""<?xml version="1.0"?>
    <order id="7" xmlns:x="urn:x">
      <item sku="a">first</item>
      <item>second</item>
      <x:note>  hi  </x:note>
      <empty/>
    </order>"""
    assert XmlCodec().decode(document) == {
        "order": {
            "@id": "7",
            "@xmlns:x": "urn:x",
            "item": [{"@sku": "a", "#text": "first"}, "second"],
            "x:note": "hi",
            "empty": None,
        }
    }


def test_text_around_children_is_joined_into_text() -> None:
    assert XmlCodec().decode(b"<p>Hello <b>big</b> world</p>") == {
        "p": {"b": "big", "#text": "Hello  world"}
    }


def test_cdata_and_character_references_are_text() -> None:
    assert XmlCodec().decode(b"<a><![CDATA[1 < 2]]> &amp; &#233;</a>") == {"a": "1 < 2 & \u00e9"}


def test_the_billion_laughs_attack_is_refused() -> None:
    with pytest.raises(CodecError, match="refused XML: entity declarations are not allowed"):
        XmlCodec().decode(BILLION_LAUGHS)


def test_external_entities_are_refused() -> None:
    xxe = b'<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><a>&xxe;</a>'
    with pytest.raises(CodecError, match="refused XML"):
        XmlCodec().decode(xxe)


def test_documents_over_max_size_are_refused_unparsed() -> None:
    codec = XmlCodec(XmlOptions(max_size=64))
    with pytest.raises(CodecError, match=r"has 65 bytes, more than max_size \(64\)"):
        codec.decode(b"<a>" + b"x" * 58 + b"</a>")


def test_documents_nested_deeper_than_max_depth_are_refused() -> None:
    codec = XmlCodec(XmlOptions(max_depth=10))
    assert codec.decode(b"<a>" * 10 + b"</a>" * 10)  # exactly the limit is fine
    with pytest.raises(CodecError, match=r"nested deeper than max_depth \(10\)"):
        codec.decode(b"<a>" * 11 + b"</a>" * 11)


@pytest.mark.parametrize("document", [b"", b"<a>", b"<a></b>", b"plain text", b"<a/><b/>"])
def test_malformed_documents_are_errors(document: bytes) -> None:
    with pytest.raises(CodecError, match="invalid XML: line"):
        XmlCodec().decode(document)


def test_encoding_escapes_what_xml_needs_escaped() -> None:
    value = {"a": {"@q": 'x"<&>\n\t\ry', "#text": "1 < 2 & 3 > 2\r\n", "b": ["]]>", None]}}
    data = XmlCodec().encode(value)
    # Read back by ElementTree, an independent parser.
    root = ET.fromstring(data)
    assert root.tag == "a"
    assert root.get("q") == 'x"<&>\n\t\ry'
    assert root.text == "1 < 2 & 3 > 2\r\n"
    assert [(child.tag, child.text) for child in root] == [("b", "]]>"), ("b", None)]


def test_encoding_writes_numbers_and_booleans_as_text() -> None:
    data = XmlCodec().encode({"r": {"n": 2, "f": 1.5, "t": True}})
    assert data == b'<?xml version="1.0" encoding="utf-8"?>\n<r><n>2</n><f>1.5</f><t>true</t></r>'


def test_data_that_is_not_one_element_is_wrapped() -> None:
    codec = XmlCodec(XmlOptions(root="rows", item="row"))
    assert codec.decode(codec.encode([{"a": "1"}, {"a": "2"}])) == {
        "rows": {"row": [{"a": "1"}, {"a": "2"}]}
    }
    assert codec.decode(codec.encode({"a": "1", "b": "2"})) == {"rows": {"a": "1", "b": "2"}}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a b": "x"}, "'a b' is not a valid XML element name"),
        ({"a": {"@1x": "v"}}, "'1x' is not a valid XML attribute name"),
        ({"a": "bell\x07"}, "character U\\+0007 cannot appear in XML"),
        ({"a": {"b": [[1]]}}, "holds an array inside an array"),
        ({"a": b"raw"}, "cannot hold bytes"),
    ],
)
def test_data_xml_cannot_hold_is_an_error(value: object, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        XmlCodec().encode(value)
