"""The signature schemes of well-known webhook senders: GitHub, Stripe, Slack, Shopify.

Each follows the sender's published verification recipe; the tests check them
against the sender's own library or published example where one exists.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from integrator.http.signatures.base import (
    SecretOptions,
    SignatureError,
    SignatureScheme,
    TimedOptions,
    Verified,
    check_timestamp,
    decode_base64,
    decode_hex,
    parse_timestamp,
    require_header,
    require_match,
)


class GitHubSignature(SignatureScheme):
    """GitHub: ``x-hub-signature-256: sha256=<hex HMAC-SHA256 of the body>``.

    GitHub signs no timestamp, so there is no tolerance; ``x-github-delivery`` is
    the webhook id to deduplicate redeliveries with.
    """

    Options = SecretOptions
    description = "GitHub (x-hub-signature-256)"

    HEADER = "x-hub-signature-256"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        signature = require_header(headers, self.HEADER)
        algorithm, _, value = signature.partition("=")
        if algorithm != "sha256":
            raise SignatureError(f"malformed header {self.HEADER}")
        require_match(self._hmac.digests(body), [decode_hex(value)])
        return Verified(webhook_id=headers.get("x-github-delivery") or None)


class _StripeEvent(msgspec.Struct):
    id: str | None = None


class StripeSignature(SignatureScheme):
    """Stripe: ``stripe-signature: t=<unix>,v1=<hex>,v1=<hex>…`` over ``{t}.{body}``.

    The secret is used exactly as Stripe shows it, ``whsec_`` prefix included. Only
    ``v1`` entries count (``v0`` and unknown schemes are ignored); there are several
    while Stripe rolls the endpoint's secret. Stripe sends no id header, so the
    webhook id is the event's ``id`` from the JSON body when there is one.
    """

    Options = TimedOptions
    description = "Stripe (stripe-signature)"

    HEADER = "stripe-signature"

    def __init__(self, options: TimedOptions) -> None:
        super().__init__(options)
        self._tolerance = float(options.tolerance)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        fields = [
            item.strip().partition("=") for item in require_header(headers, self.HEADER).split(",")
        ]
        raw_timestamp = next((value for key, _, value in fields if key == "t"), None)
        if raw_timestamp is None:
            raise SignatureError(f"malformed header {self.HEADER}")
        timestamp = parse_timestamp(raw_timestamp, self.HEADER)
        check_timestamp(timestamp, now=now, tolerance=self._tolerance)
        received = [decode_hex(value) for key, _, value in fields if key == "v1"]
        if not received:
            raise SignatureError(f"no v1 signature in header {self.HEADER}")
        require_match(self._hmac.digests(f"{raw_timestamp}.".encode() + body), received)
        return Verified(webhook_id=_stripe_event_id(body), timestamp=timestamp)


def _stripe_event_id(body: bytes) -> str | None:
    try:
        return msgspec.json.decode(body, type=_StripeEvent).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class SlackSignature(SignatureScheme):
    """Slack: ``x-slack-signature: v0=<hex>`` over ``v0:{x-slack-request-timestamp}:{body}``."""

    Options = TimedOptions
    description = "Slack (x-slack-signature)"

    HEADER = "x-slack-signature"
    TIMESTAMP_HEADER = "x-slack-request-timestamp"

    def __init__(self, options: TimedOptions) -> None:
        super().__init__(options)
        self._tolerance = float(options.tolerance)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        signature = require_header(headers, self.HEADER)
        raw_timestamp = require_header(headers, self.TIMESTAMP_HEADER)
        timestamp = parse_timestamp(raw_timestamp, self.TIMESTAMP_HEADER)
        check_timestamp(timestamp, now=now, tolerance=self._tolerance)
        version, _, value = signature.partition("=")
        if version != "v0":
            raise SignatureError(f"malformed header {self.HEADER}")
        content = f"v0:{raw_timestamp}:".encode() + body
        require_match(self._hmac.digests(content), [decode_hex(value)])
        return Verified(timestamp=timestamp)


class ShopifySignature(SignatureScheme):
    """Shopify: ``x-shopify-hmac-sha256: <base64 HMAC-SHA256 of the body>``.

    No timestamp is signed; ``x-shopify-webhook-id`` is the webhook id.
    """

    Options = SecretOptions
    description = "Shopify (x-shopify-hmac-sha256)"

    HEADER = "x-shopify-hmac-sha256"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        signature = require_header(headers, self.HEADER)
        require_match(self._hmac.digests(body), [decode_base64(signature.strip())])
        return Verified(webhook_id=headers.get("x-shopify-webhook-id") or None)
