"""Templates: literal text and ``${expression}`` holes over a message."""

from __future__ import annotations

from integrator.message import Message
from integrator.transforms.templates import Template


def test_a_template_renders_its_holes_from_the_message() -> None:
    template = Template("/customers/${body.id}/orders")
    assert template.render(Message(body={"id": 7})) == "/customers/7/orders"


def test_a_template_without_holes_is_static_text_with_escapes_undone() -> None:
    template = Template("/prices/$${EUR}/list")
    assert template.static == "/prices/${EUR}/list"
    assert template.render(Message(body={})) == template.static


def test_a_template_with_a_hole_is_not_static() -> None:
    assert Template("/customers/${body.id}").static is None
