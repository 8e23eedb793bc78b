"""Every built-in signature scheme, end to end over loopback HTTP.

Each sender's side is made by its own library where one exists (``standardwebhooks``,
``stripe``, ``slack_sdk``) and by the standard library's ``hmac`` for the senders
that publish only a recipe. The unit tests in ``test_signatures.py`` cover each
scheme's corner cases; these check that the receiver wires them up: a valid and a
rotated-secret request are delivered, every kind of bad request gets 401 and is not
stored, and a replayed delivery id is acknowledged without being processed twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import standardwebhooks
import stripe
from slack_sdk.signature import SignatureVerifier

from tests.http.webhook_support import file_route, lines, webhook_daemon

Signer = Callable[[str, bytes, int, str], dict[str, str]]


def whsec(seed: str) -> str:
    return "whsec_" + base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def sign_standard(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    when = datetime.fromtimestamp(ts, UTC)
    signature = standardwebhooks.Webhook(secret).sign(delivery, when, body.decode())
    return {"webhook-id": delivery, "webhook-timestamp": str(ts), "webhook-signature": signature}


def sign_github(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, "sha256").hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": delivery}


def sign_stripe(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    # Stripe's delivery id is the event id inside the body.
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=ts)
    return {"stripe-signature": header}


def sign_slack(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    assert signature is not None
    return {"x-slack-signature": signature, "x-slack-request-timestamp": str(ts)}


def sign_shopify(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, "sha256").digest()).decode()
    return {"x-shopify-hmac-sha256": digest, "x-shopify-webhook-id": delivery}


def sign_acme(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    content = f"{delivery}.{ts}.".encode() + body
    digest = hmac.new(secret.encode(), content, "sha512").digest()
    return {
        "x-acme-signature": "v1=" + base64.b64encode(digest).decode(),
        "x-acme-timestamp": str(ts),
        "x-acme-delivery": delivery,
    }


@dataclass(frozen=True)
class Case:
    scheme: str
    sign: Signer
    #: The current secret, the one being rotated out, and one the receiver does not know.
    secrets: tuple[str, str, str]
    #: Headers without which the request is refused.
    required: tuple[str, ...]
    #: Whether the scheme gives a delivery id, so that a replay is recognised.
    ids: bool
    #: Whether a timestamp is signed, so that stale and future requests are refused.
    timed: bool
    #: More options of the ``verify`` table, as inline TOML.
    options: str = ""


def plain(name: str) -> tuple[str, str, str]:
    return (f"{name}-new-secret", f"{name}-old-secret", f"{name}-stranger-secret")


CASES = [
    Case(
        "standard-webhooks",
        sign_standard,
        (whsec("new"), whsec("old"), whsec("stranger")),
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
        ids=True,
        timed=True,
    ),
    Case("github", sign_github, plain("gh"), ("x-hub-signature-256",), ids=True, timed=False),
    Case(
        "stripe",
        sign_stripe,
        ("whsec_stripeNew", "whsec_stripeOld", "whsec_stripeStranger"),
        ("stripe-signature",),
        ids=True,
        timed=True,
    ),
    Case(
        "slack",
        sign_slack,
        plain("slack"),
        ("x-slack-signature", "x-slack-request-timestamp"),
        ids=False,
        timed=True,
    ),
    Case("shopify", sign_shopify, plain("shop"), ("x-shopify-hmac-sha256",), ids=True, timed=False),
    Case(
        "hmac",
        sign_acme,
        plain("acme"),
        ("x-acme-signature", "x-acme-timestamp", "x-acme-delivery"),
        ids=True,
        timed=True,
        options=(
            ', header = "X-Acme-Signature", algorithm = "sha512", encoding = "base64", '
            'prefix = "v1=", timestamp_header = "X-Acme-Timestamp", '
            'id_header = "X-Acme-Delivery", signed_content = "{id}.{timestamp}.{body}"'
        ),
    ),
]


def body(n: int) -> bytes:
    return f'{{"id": "evt_{n}", "n": {n}}}'.encode()


@pytest.mark.parametrize("case", CASES, ids=[case.scheme for case in CASES])
async def test_scheme_over_http(case: Case, run_route, tmp_path: Path) -> None:
    new, old, stranger = case.secrets
    out = tmp_path / "out.jsonl"
    source = f"""
        path = "/hooks/in"
        verify = {{ scheme = "{case.scheme}", secret = ["{new}", "{old}"]{case.options} }}
    """
    now = int(time.time())
    async with webhook_daemon(
        run_route, file_route(out, source, extra='dedupe_window = "1h"')
    ) as r:

        async def send(n: int, headers: dict[str, str], payload: bytes | None = None) -> int:
            reply = await r.post("/hooks/in", body(n) if payload is None else payload, headers)
            assert reply.status in (202, 401), reply
            return reply.status

        assert await send(1, case.sign(new, body(1), now, "d-1")) == 202
        assert await send(2, case.sign(old, body(2), now, "d-2")) == 202  # rotation
        signed = case.sign(new, body(3), now, "d-3")
        refused = {
            "tampered": await send(3, signed, body(3).replace(b"3", b"4")),
            "unknown secret": await send(3, case.sign(stranger, body(3), now, "d-3")),
        }
        for header in case.required:
            without = {k: v for k, v in signed.items() if k != header}
            refused[f"without {header}"] = await send(3, without)
        if case.timed:
            refused["stale"] = await send(3, case.sign(new, body(3), now - 600, "d-3"))
            refused["future"] = await send(3, case.sign(new, body(3), now + 600, "d-3"))
        assert refused == dict.fromkeys(refused, 401)

        assert await send(1, case.sign(new, body(1), now, "d-1")) == 202  # replay
        expected = [1, 2] if case.ids else [1, 2, 1]
        assert r.stats().received == len(expected)
        await r.daemon.wait_delivered("r", len(expected))
    assert [line["body"]["n"] for line in lines(out)] == expected


async def test_id_header_gives_unsigned_deliveries_their_id(run_route, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    source = 'path = "/hooks/in"\nid_header = "X-Request-Id"'
    async with webhook_daemon(
        run_route, file_route(out, source, extra='dedupe_window = "1h"')
    ) as r:
        for _ in range(2):
            reply = await r.post("/hooks/in", body(1), {"X-Request-Id": "req-42"})
            assert reply.status == 202
        assert (r.stats().received, r.stats().duplicates) == (1, 1)
        await r.daemon.wait_delivered("r", 1)
    assert [line["id"] for line in lines(out)] == ["req-42"]
