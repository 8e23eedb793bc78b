"""What the benchmark sends: a ~1 KB JSON event, its signature, and the schema it matches.

The end-to-end scenario needs a different body per request (a sequence number and
the send time, so the receiver can measure latency and count duplicates). Both
load generators fill the same printf-style template, ``%d`` for the sequence number
and ``%.6f`` for the send time, so wrk's Lua and the Python generator send the
same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

SECRET = "bench-webhook-secret-0123456789abcdef"
_SEQ_MARK = -7777777
_TIME_MARK = -8888888.5


def event(seq: int = 1, sent_at: float = 1767225600.0) -> dict[str, Any]:
    """A plausible order event of about 1 KB."""
    return {
        "kind": "order",
        "seq": seq,
        "sent_at": sent_at,
        "order_id": "ord_000000104729",
        "currency": "EUR",
        "total": 12345,
        "customer": {
            "id": "cus_8f14e45fceea167a",
            "email": "ada@example.test",
            "name": "Ada Lovelace",
            "tier": "gold",
            "address": {
                "line1": "12 Analytical Engine Row",
                "city": "London",
                "postcode": "NW1 6XE",
                "country": "GB",
            },
        },
        "items": [
            {"sku": f"SKU-{n:05d}", "name": f"Widget model {n}", "qty": n % 3 + 1, "price": 1999}
            for n in range(6)
        ],
        "tags": ["web", "promo-spring", "priority"],
        "source": {"app": "storefront", "version": "4.18.2", "region": "eu-west"},
        "note": "Leave the parcel with the concierge if nobody answers the door. " * 2,
    }


def event_bytes(seq: int = 1, sent_at: float = 1767225600.0) -> bytes:
    return msgspec.json.encode(event(seq, sent_at))


def event_template() -> str:
    """The event as a printf template: ``template % (seq, sent_at)`` gives the JSON."""
    text = msgspec.json.encode(event(_SEQ_MARK, _TIME_MARK)).decode()
    text = text.replace("%", "%%")
    return text.replace(str(_SEQ_MARK), "%d", 1).replace(repr(_TIME_MARK), "%.6f", 1)


def github_signature(body: bytes, secret: str = SECRET) -> str:
    """``x-hub-signature-256`` as GitHub computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


#: What the end-to-end route's ``validate`` checks (after ``map`` added two fields).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "seq", "sent_at", "order_id", "customer_id", "items", "total_eur"],
    "properties": {
        "kind": {"enum": ["order", "refund"]},
        "seq": {"type": "integer", "minimum": 0},
        "sent_at": {"type": "number"},
        "order_id": {"type": "string", "pattern": "^ord_[0-9]+$"},
        "customer_id": {"type": "string", "minLength": 1},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "total_eur": {"type": "integer", "minimum": 0},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

#: The three route middleware of the end-to-end scenario (also the first three of the
#: in-process chain scenario).
FILTER: dict[str, Any] = {"type": "filter", "where": "body.kind == 'order'"}
MAP: dict[str, Any] = {
    "type": "map",
    "set": {"body.customer_id": "body.customer.id", "body.total_eur": "body.total"},
}
VALIDATE: dict[str, Any] = {"type": "validate", "schema": SCHEMA}
