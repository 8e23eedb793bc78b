"""Webhook signature schemes, checked against the senders' own signing libraries.

Where a sender publishes a library (Standard Webhooks, Svix, Stripe, Slack) that
library signs the requests; where it publishes only a recipe (GitHub, Shopify) the
published example pins it and the standard library's ``hmac`` signs the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import pluggy
import pytest
import standardwebhooks
import stripe
import svix
from slack_sdk.signature import SignatureVerifier

from integrator import hookspecs
from integrator.config import convert
from integrator.errors import IntegratorError
from integrator.http import signatures
from integrator.http.signatures import (
    SCHEMES,
    HmacKeys,
    SignatureError,
    SignatureScheme,
    Verified,
    sign_standard_webhook,
)
from integrator.plugins import DEFAULT_PLUGINS, build_registry

NOW = 1_700_000_000
BODY = b'{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "type": "push", "n": 1}'
TOLERANCE = 300


def build(scheme: str, options: dict[str, Any]) -> SignatureScheme:
    """Build a scheme the way a webhook source does: options through the config decoder."""
    cls = SCHEMES[scheme]
    return cls(convert(options, cls.Options))


def whsec(seed: str) -> str:
    return "whsec_" + base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def hmac_hex(secret: str, content: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), content, algorithm).hexdigest()


def hmac_b64(secret: str, content: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(hmac.new(secret.encode(), content, algorithm).digest()).decode()


# -- signers: the sender's side of each scheme ---------------------------------------------


def sign_standardwebhooks(secret: str, body: bytes, ts: int) -> dict[str, str]:
    signature = standardwebhooks.Webhook(secret).sign(
        "msg_2ZDlN1jXYZ", datetime.fromtimestamp(ts, UTC), body.decode()
    )
    return {
        "webhook-id": "msg_2ZDlN1jXYZ",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
    }


def sign_svix(secret: str, body: bytes, ts: int) -> dict[str, str]:
    signature = svix.Webhook(secret).sign(
        "msg_svix1", datetime.fromtimestamp(ts, UTC), body.decode()
    )
    return {"svix-id": "msg_svix1", "svix-timestamp": str(ts), "svix-signature": signature}


def sign_github(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"x-hub-signature-256": "sha256=" + hmac_hex(secret, body), "x-github-delivery": "d-1"}


def sign_stripe(secret: str, body: bytes, ts: int) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=ts)
    return {"stripe-signature": header}


def sign_slack(secret: str, body: bytes, ts: int) -> dict[str, str]:
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    assert signature is not None
    return {"x-slack-signature": signature, "x-slack-request-timestamp": str(ts)}


def sign_shopify(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"x-shopify-hmac-sha256": hmac_b64(secret, body), "x-shopify-webhook-id": "wh-1"}


ACME = {
    "header": "X-Acme-Signature",
    "prefix": "sha256=",
    "timestamp_header": "x-acme-timestamp",
    "signed_content": "{timestamp}.{body}",
}


def sign_acme(secret: str, body: bytes, ts: int) -> dict[str, str]:
    signature = "sha256=" + hmac_hex(secret, f"{ts}.".encode() + body)
    return {"x-acme-signature": signature, "x-acme-timestamp": str(ts)}


@dataclass(frozen=True)
class Case:
    id: str
    scheme: str
    sign: Callable[[str, bytes, int], dict[str, str]]
    #: Two secrets in rotation, then one the receiver does not know.
    secrets: tuple[str, str, str]
    #: Each header the scheme needs, and the name the "missing header" reason gives.
    required: dict[str, str]
    webhook_id: str | None
    timed: bool
    options: dict[str, Any] = field(default_factory=dict)

    def receiver(self, *secrets: str, **options: Any) -> SignatureScheme:
        secret: str | list[str] = list(secrets) if len(secrets) > 1 else secrets[0]
        return build(self.scheme, {**self.options, **options, "secret": secret})


def plain(name: str) -> tuple[str, str, str]:
    return (f"{name}-old-secret-1", f"{name}-new-secret-2", f"{name}-stranger-3")


CASES = [
    Case(
        "standard-webhooks",
        "standard-webhooks",
        sign_standardwebhooks,
        (whsec("old"), whsec("new"), whsec("stranger")),
        {h: h for h in ("webhook-id", "webhook-timestamp", "webhook-signature")},
        "msg_2ZDlN1jXYZ",
        timed=True,
    ),
    Case(
        "svix",
        "standard-webhooks",
        sign_svix,
        (whsec("old"), whsec("new"), whsec("stranger")),
        {f"svix-{part}": f"webhook-{part}" for part in ("id", "timestamp", "signature")},
        "msg_svix1",
        timed=True,
    ),
    Case(
        "github",
        "github",
        sign_github,
        plain("github"),
        {"x-hub-signature-256": "x-hub-signature-256"},
        "d-1",
        timed=False,
    ),
    Case(
        "stripe",
        "stripe",
        sign_stripe,
        ("whsec_stripeOld", "whsec_stripeNew", "whsec_stripeStranger"),
        {"stripe-signature": "stripe-signature"},
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        timed=True,
    ),
    Case(
        "slack",
        "slack",
        sign_slack,
        plain("slack"),
        {h: h for h in ("x-slack-signature", "x-slack-request-timestamp")},
        None,
        timed=True,
    ),
    Case(
        "shopify",
        "shopify",
        sign_shopify,
        plain("shopify"),
        {"x-shopify-hmac-sha256": "x-shopify-hmac-sha256"},
        "wh-1",
        timed=False,
    ),
    Case(
        "hmac",
        "hmac",
        sign_acme,
        plain("acme"),
        {"x-acme-signature": "x-acme-signature", "x-acme-timestamp": "x-acme-timestamp"},
        None,
        timed=True,
        options=ACME,
    ),
]
TIMED = [case for case in CASES if case.timed]
MISSING = [
    pytest.param(case, header, id=f"{case.id}-{header}")
    for case in CASES
    for header in case.required
]


def by_id(cases: list[Case]) -> Any:
    return pytest.mark.parametrize("case", cases, ids=[case.id for case in cases])


def reject(scheme: SignatureScheme, headers: dict[str, str], body: bytes, now: float) -> str:
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers, body, now=now)
    return info.value.reason


# -- registration --------------------------------------------------------------------------


def test_the_module_is_a_builtin_plugin() -> None:
    assert "integrator.http.signatures" in DEFAULT_PLUGINS


def test_every_scheme_is_registered_under_its_name() -> None:
    pm = pluggy.PluginManager("integrator")
    pm.add_hookspecs(hookspecs)
    pm.register(signatures, name="integrator.http.signatures")
    registry = build_registry(pm)
    assert registry.names("signature") == sorted(
        ["github", "hmac", "shopify", "slack", "standard-webhooks", "stripe"]
    )
    assert registry.get("signature", "stripe").component is signatures.StripeSignature


def test_signature_error_is_an_integrator_error() -> None:
    assert issubclass(SignatureError, IntegratorError)


# -- published examples --------------------------------------------------------------------


def test_github_published_example_verifies() -> None:
    scheme = build("github", {"secret": "It's a Secret to Everybody"})
    headers = {
        "x-hub-signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        )
    }
    assert scheme.verify(headers, b"Hello, World!", now=NOW) == Verified()


STANDARD_EXAMPLE = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


def test_standard_webhooks_published_example_verifies() -> None:
    ex = STANDARD_EXAMPLE
    scheme = build("standard-webhooks", {"secret": ex["secret"]})
    headers = {
        "webhook-id": ex["id"],
        "webhook-timestamp": str(ex["timestamp"]),
        "webhook-signature": ex["signature"],
    }
    verified = scheme.verify(headers, ex["body"], now=ex["timestamp"])
    assert verified == Verified(webhook_id=ex["id"], timestamp=float(ex["timestamp"]))


def test_outbound_signer_reproduces_the_published_example() -> None:
    ex = STANDARD_EXAMPLE
    headers = sign_standard_webhook(ex["secret"], ex["id"], ex["timestamp"], ex["body"])
    assert headers == {
        "webhook-id": ex["id"],
        "webhook-timestamp": str(ex["timestamp"]),
        "webhook-signature": ex["signature"],
    }


# -- every scheme --------------------------------------------------------------------------


@by_id(CASES)
def test_accepts_a_request_signed_by_the_sender(case: Case) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    verified = case.receiver(case.secrets[0]).verify(headers, BODY, now=NOW)
    assert verified == Verified(
        webhook_id=case.webhook_id, timestamp=float(NOW) if case.timed else None
    )


@by_id(CASES)
def test_rejects_a_tampered_body(case: Case) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    tampered = BODY.replace(b'"n": 1', b'"n": 2')
    assert reject(case.receiver(case.secrets[0]), headers, tampered, NOW) == "no matching signature"


@by_id(CASES)
def test_rejects_a_request_signed_with_another_secret(case: Case) -> None:
    headers = case.sign(case.secrets[2], BODY, NOW)
    assert reject(case.receiver(case.secrets[0]), headers, BODY, NOW) == "no matching signature"


@by_id(CASES)
@pytest.mark.parametrize("signer", [0, 1], ids=["old", "new"])
def test_accepts_either_secret_while_rotating(case: Case, signer: int) -> None:
    receiver = case.receiver(case.secrets[0], case.secrets[1])
    headers = case.sign(case.secrets[signer], BODY, NOW)
    assert receiver.verify(headers, BODY, now=NOW).webhook_id == case.webhook_id


@by_id(CASES)
def test_rejects_a_secret_outside_the_rotation(case: Case) -> None:
    receiver = case.receiver(case.secrets[0], case.secrets[1])
    headers = case.sign(case.secrets[2], BODY, NOW)
    assert reject(receiver, headers, BODY, NOW) == "no matching signature"


@pytest.mark.parametrize(("case", "header"), MISSING)
def test_rejects_a_request_missing_a_header(case: Case, header: str) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    del headers[header]
    reason = reject(case.receiver(case.secrets[0]), headers, BODY, NOW)
    assert reason == f"missing header {case.required[header]}"


@pytest.mark.parametrize(("case", "header"), MISSING)
def test_an_empty_header_counts_as_missing(case: Case, header: str) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    headers[header] = ""
    reason = reject(case.receiver(case.secrets[0]), headers, BODY, NOW)
    assert reason == f"missing header {case.required[header]}"


@by_id(TIMED)
def test_rejects_a_stale_timestamp(case: Case) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    reason = reject(case.receiver(case.secrets[0]), headers, BODY, NOW + TOLERANCE + 1)
    assert reason == "timestamp outside tolerance"


@by_id(TIMED)
def test_rejects_a_timestamp_from_the_future(case: Case) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    reason = reject(case.receiver(case.secrets[0]), headers, BODY, NOW - TOLERANCE - 1)
    assert reason == "timestamp outside tolerance"


@by_id(TIMED)
@pytest.mark.parametrize("skew", [-TOLERANCE, TOLERANCE])
def test_accepts_a_timestamp_at_the_edge_of_the_tolerance(case: Case, skew: int) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    assert case.receiver(case.secrets[0]).verify(headers, BODY, now=NOW + skew).timestamp == NOW


@by_id(TIMED)
def test_tolerance_is_configurable(case: Case) -> None:
    headers = case.sign(case.secrets[0], BODY, NOW)
    receiver = case.receiver(case.secrets[0], tolerance="1m")
    assert reject(receiver, headers, BODY, NOW + 61) == "timestamp outside tolerance"


@by_id([case for case in CASES if not case.timed])
def test_schemes_without_a_signed_timestamp_refuse_a_tolerance_option(case: Case) -> None:
    with pytest.raises(msgspec.ValidationError, match="tolerance"):
        case.receiver(case.secrets[0], tolerance="1m")


@by_id(CASES)
def test_errors_and_reprs_never_show_the_secret_or_the_expected_signature(case: Case) -> None:
    secret = case.secrets[0]
    receiver = case.receiver(secret)
    good = case.sign(secret, BODY, NOW)
    attempts = [
        (case.sign(secret, BODY, NOW), BODY + b" ", NOW),
        (case.sign(case.secrets[2], BODY, NOW), BODY, NOW),
        ({}, BODY, NOW),
    ]
    if case.timed:
        attempts.append((good, BODY, NOW + 10 * TOLERANCE))
    shown = [repr(receiver), repr(receiver.options), str(receiver.options)]
    for headers, body, now in attempts:
        with pytest.raises(SignatureError) as info:
            receiver.verify(headers, body, now=now)
        shown += [str(info.value), repr(info.value)]
    text = "\n".join(shown)
    assert secret not in text
    assert secret.removeprefix("whsec_") not in text
    for value in good.values():
        if len(value) > 20:  # the signatures, not ids or timestamps
            assert value not in text


# -- multiple signatures in one header -----------------------------------------------------


def test_standard_webhooks_accepts_any_v1_entry_of_several() -> None:
    case = CASES[0]
    stranger = sign_standardwebhooks(case.secrets[2], BODY, NOW)
    headers = sign_standardwebhooks(case.secrets[0], BODY, NOW)
    headers["webhook-signature"] = (
        f"v1a,bm90IGFuIGVkMjU1MTkgc2lnbmF0dXJl {stranger['webhook-signature']} "
        f"{headers['webhook-signature']}"
    )
    assert case.receiver(case.secrets[0]).verify(headers, BODY, now=NOW).timestamp == NOW


def test_standard_webhooks_ignores_entries_of_other_versions() -> None:
    case = CASES[0]
    headers = sign_standardwebhooks(case.secrets[0], BODY, NOW)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    assert reject(case.receiver(case.secrets[0]), headers, BODY, NOW) == "no matching signature"


def test_standard_webhooks_rejects_a_timestamp_that_is_not_a_number() -> None:
    case = CASES[0]
    headers = sign_standardwebhooks(case.secrets[0], BODY, NOW)
    headers["webhook-timestamp"] = "yesterday"
    reason = reject(case.receiver(case.secrets[0]), headers, BODY, NOW)
    assert reason == "invalid header webhook-timestamp"


def test_stripe_accepts_any_v1_signature_of_several() -> None:
    mine = sign_stripe("whsec_stripeOld", BODY, NOW)["stripe-signature"]
    theirs = sign_stripe("whsec_stripeStranger", BODY, NOW)["stripe-signature"]
    header = f"{theirs},v0=00ff,{mine.split(',', 1)[1]},v9=zz"
    receiver = build("stripe", {"secret": "whsec_stripeOld"})
    verified = receiver.verify({"stripe-signature": header}, BODY, now=NOW)
    assert verified.timestamp == NOW


def test_stripe_ignores_a_v0_signature() -> None:
    v1 = sign_stripe("whsec_stripeOld", BODY, NOW)["stripe-signature"]
    header = v1.replace("v1=", "v0=")
    receiver = build("stripe", {"secret": "whsec_stripeOld"})
    reason = reject(receiver, {"stripe-signature": header}, BODY, NOW)
    assert reason == "no v1 signature in header stripe-signature"


def test_stripe_rejects_a_header_without_timestamp() -> None:
    v1 = sign_stripe("whsec_stripeOld", BODY, NOW)["stripe-signature"]
    header = v1.split(",", 1)[1]
    receiver = build("stripe", {"secret": "whsec_stripeOld"})
    assert reject(receiver, {"stripe-signature": header}, BODY, NOW) == (
        "malformed header stripe-signature"
    )


def test_stripe_without_event_id_in_the_body_gives_no_webhook_id() -> None:
    body = b"not json"
    headers = sign_stripe("whsec_stripeOld", body, NOW)
    receiver = build("stripe", {"secret": "whsec_stripeOld"})
    assert receiver.verify(headers, body, now=NOW).webhook_id is None


def test_github_rejects_a_sha1_signature() -> None:
    headers = {"x-hub-signature-256": "sha1=" + hmac_hex("s3cret", BODY, "sha1")}
    reason = reject(build("github", {"secret": "s3cret"}), headers, BODY, NOW)
    assert reason == "malformed header x-hub-signature-256"


# -- the generic hmac scheme ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_hmac_verifies_each_algorithm_and_encoding(algorithm: str, encoding: str) -> None:
    digest = hmac_hex if encoding == "hex" else hmac_b64
    headers = {"x-signature": digest("acme-secret", BODY, algorithm)}
    options = {"header": "x-signature", "algorithm": algorithm, "encoding": encoding}
    scheme = build("hmac", {"secret": "acme-secret", **options})
    assert scheme.verify(headers, BODY, now=NOW) == Verified()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_hmac_verifies_a_secret_longer_than_the_hash_block(algorithm: str) -> None:
    secret = "k" * 200  # longer than any block (64 or 128 bytes): RFC 2104 hashes it first
    headers = {"x-signature": hmac_hex(secret, BODY, algorithm)}
    options = {"header": "x-signature", "algorithm": algorithm}
    scheme = build("hmac", {"secret": secret, **options})
    assert scheme.verify(headers, BODY, now=NOW) == Verified()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("key_size", [1, 63, 64, 65, 128, 129, 300])
def test_precomputed_hmac_keys_agree_with_the_standard_library(
    algorithm: str, key_size: int
) -> None:
    keys = [bytes(range(256))[:key_size] * 2, b"x" * key_size]
    hmacs = HmacKeys(keys, algorithm)
    for content in (b"", BODY, BODY * 50, BODY):  # the same content again: states are reused
        expected = [hmac.digest(key, content, algorithm) for key in keys]
        assert hmacs.digests(content) == expected


def test_hmac_signs_the_id_and_timestamp_in_the_template_order() -> None:
    content = f"id=evt-9;ts={NOW};".encode() + BODY
    headers = {"x-sig": hmac_hex("acme-secret", content), "x-id": "evt-9", "x-ts": str(NOW)}
    scheme = build(
        "hmac",
        {
            "secret": "acme-secret",
            "header": "x-sig",
            "id_header": "x-id",
            "timestamp_header": "x-ts",
            "signed_content": "id={id};ts={timestamp};{body}",
        },
    )
    assert scheme.verify(headers, BODY, now=NOW) == Verified(webhook_id="evt-9", timestamp=NOW)


def test_hmac_template_keeps_escaped_braces_literal() -> None:
    headers = {"x-sig": hmac_hex("acme-secret", b"{v1}" + BODY)}
    options = {"secret": "acme-secret", "header": "x-sig", "signed_content": "{{v1}}{body}"}
    assert build("hmac", options).verify(headers, BODY, now=NOW) == Verified()


def test_hmac_reads_millisecond_timestamps() -> None:
    ms = NOW * 1000 + 250
    headers = {"x-sig": hmac_hex("acme-secret", f"{ms}:".encode() + BODY), "x-ts": str(ms)}
    options = {
        "secret": "acme-secret",
        "header": "x-sig",
        "timestamp_header": "x-ts",
        "timestamp_unit": "ms",
        "signed_content": "{timestamp}:{body}",
    }
    assert build("hmac", options).verify(headers, BODY, now=NOW).timestamp == NOW + 0.25


def test_hmac_returns_the_id_header_even_when_it_is_not_signed() -> None:
    headers = {"x-sig": hmac_hex("acme-secret", BODY), "x-id": "d-7"}
    options = {"secret": "acme-secret", "header": "x-sig", "id_header": "X-Id"}
    assert build("hmac", options).verify(headers, BODY, now=NOW).webhook_id == "d-7"


def test_hmac_rejects_a_signature_without_the_configured_prefix() -> None:
    headers = sign_acme("acme-secret", BODY, NOW)
    headers["x-acme-signature"] = headers["x-acme-signature"].removeprefix("sha256=")
    scheme = build("hmac", {"secret": "acme-secret", **ACME})
    assert reject(scheme, headers, BODY, NOW) == "malformed header x-acme-signature"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"signed_content": "{timestamp}"}, "must contain {body}"),
        ({"signed_content": "{nonce}.{body}"}, "unknown placeholder {nonce}"),
        ({"signed_content": "{body!r}"}, "unknown placeholder {body}"),
        ({"signed_content": "{body"}, "signed_content"),
        ({"signed_content": "{timestamp}.{body}"}, "timestamp_header is not set"),
        ({"signed_content": "{id}.{body}"}, "id_header is not set"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"encoding": "base32"}, "encoding"),
        ({"headr": "x"}, "headr"),
    ],
)
def test_hmac_refuses_invalid_options_at_load_time(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        build("hmac", {"secret": "acme-secret", "header": "x-sig", **options})
    assert problem in str(info.value)


# -- the secret option ---------------------------------------------------------------------


@pytest.mark.parametrize("secret", [[], 42, ["ok-secret", 7], ""])
def test_an_invalid_secret_option_is_refused_at_load_time(secret: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match="secret"):
        build("github", {"secret": secret})


def test_a_missing_secret_option_is_refused_at_load_time() -> None:
    with pytest.raises(msgspec.ValidationError, match="secret"):
        build("github", {})


def test_a_standard_webhooks_secret_that_is_not_base64_is_refused_without_echoing_it() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        build("standard-webhooks", {"secret": "whsec_not*base64*at*all"})
    assert "base64" in str(info.value)
    assert "not*base64" not in str(info.value)


def test_a_standard_webhooks_secret_without_padding_or_prefix_is_accepted() -> None:
    ex = STANDARD_EXAMPLE
    unpadded = base64.b64encode(b"sixteen byte key").decode().rstrip("=")
    headers = sign_standard_webhook(unpadded, ex["id"], NOW, BODY)
    assert build("standard-webhooks", {"secret": unpadded}).verify(headers, BODY, now=NOW)


# -- outbound signing ----------------------------------------------------------------------


def test_outbound_signature_verifies_with_the_standardwebhooks_library() -> None:
    secret = whsec("outbound")
    headers = sign_standard_webhook(secret, "msg_out_1", int(time.time()), BODY)
    standardwebhooks.Webhook(secret).verify(BODY, headers, json_parse=False)


def test_outbound_signature_verifies_with_the_svix_library() -> None:
    secret = whsec("outbound")
    headers = sign_standard_webhook(secret, "msg_out_2", int(time.time()), BODY)
    svix.Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize("receiver_secret", ["old", "new"])
def test_outbound_signing_with_two_secrets_satisfies_a_receiver_holding_either(
    receiver_secret: str,
) -> None:
    headers = sign_standard_webhook(
        [whsec("old"), whsec("new")], "msg_out_3", int(time.time()), BODY
    )
    assert len(headers["webhook-signature"].split()) == 2
    standardwebhooks.Webhook(whsec(receiver_secret)).verify(BODY, headers, json_parse=False)


def test_outbound_signature_is_refused_by_a_receiver_with_another_secret() -> None:
    headers = sign_standard_webhook(whsec("outbound"), "msg_out_4", int(time.time()), BODY)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(whsec("stranger")).verify(BODY, headers, json_parse=False)


def test_outbound_signer_accepts_a_secret_object() -> None:
    from integrator.types import Secret

    plain_headers = sign_standard_webhook(whsec("outbound"), "m", NOW, BODY)
    assert sign_standard_webhook(Secret(whsec("outbound")), "m", NOW, BODY) == plain_headers
