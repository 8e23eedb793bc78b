"""Standard Webhooks (https://www.standardwebhooks.com), inbound and outbound.

The sender signs ``{id}.{timestamp}.{body}`` with HMAC-SHA256 under a key given as
``whsec_`` + base64, and sends ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` (space-separated ``v1,<base64>`` entries, several while the
sender rotates its key). Svix, the origin of the standard, sends the same values as
``svix-id``, ``svix-timestamp`` and ``svix-signature``; both spellings are accepted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from integrator.http.signatures.base import (
    SignatureScheme,
    TimedOptions,
    Verified,
    check_timestamp,
    decode_base64,
    digests,
    parse_timestamp,
    require_header,
    require_match,
)
from integrator.types import Secret

SECRET_PREFIX = "whsec_"


def decode_secret(secret: Secret | str) -> bytes:
    """The HMAC key inside a ``whsec_<base64>`` secret (the prefix is optional).

    Raises ValueError without echoing the secret when it is not base64.
    """
    text = secret.reveal() if isinstance(secret, Secret) else secret
    text = text.removeprefix(SECRET_PREFIX)
    text += "=" * (-len(text) % 4)  # senders often drop the padding
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret: not valid base64 after the 'whsec_' prefix") from None
    if not key:
        raise ValueError("secret: a secret cannot be empty")
    return key


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


class StandardWebhooksOptions(TimedOptions, kw_only=True):
    """``secret`` is ``whsec_`` followed by base64, as the sender shows it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for secret in self.secrets:
            decode_secret(secret)


class StandardWebhooksSignature(SignatureScheme):
    """Standard Webhooks / Svix: ``webhook-signature: v1,<base64> …``."""

    Options = StandardWebhooksOptions
    description = "Standard Webhooks (webhook-id/-timestamp/-signature), also svix-* headers"

    def __init__(self, options: StandardWebhooksOptions) -> None:
        super().__init__(options)
        self._tolerance = float(options.tolerance)

    def keys(self, options: StandardWebhooksOptions) -> list[bytes]:
        return [decode_secret(secret) for secret in options.secrets]

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        msg_id = require_header(headers, "webhook-id", "svix-id")
        raw_timestamp = require_header(headers, "webhook-timestamp", "svix-timestamp")
        signature = require_header(headers, "webhook-signature", "svix-signature")
        timestamp = parse_timestamp(raw_timestamp, "webhook-timestamp")
        check_timestamp(timestamp, now=now, tolerance=self._tolerance)
        expected = self._hmac.digests(_signed_content(msg_id, raw_timestamp, body))
        received = (
            decode_base64(value)
            for version, _, value in (entry.partition(",") for entry in signature.split())
            if version == "v1"
        )
        require_match(expected, received)
        return Verified(webhook_id=msg_id, timestamp=timestamp)


def sign_standard_webhook(
    secret: Secret | str | Sequence[Secret | str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for an outbound request.

    Give several secrets while rotating: the signature header then carries one
    ``v1,`` entry per secret, and receivers holding either key accept it.
    """
    secrets = [secret] if isinstance(secret, Secret | str) else list(secret)
    if not secrets:
        raise ValueError("sign_standard_webhook needs at least one secret")
    content = _signed_content(msg_id, str(int(timestamp)), body)
    signatures = digests((decode_secret(s) for s in secrets), content)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(
            "v1," + base64.b64encode(sig).decode("ascii") for sig in signatures
        ),
    }
