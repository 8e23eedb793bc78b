"""Webhook signature schemes, registered as a built-in plugin.

A webhook source's ``verify`` table picks a scheme by name and gives its options::

    verify = { scheme = "github", secret = "${env:GITHUB_WEBHOOK_SECRET}" }
    verify = { scheme = "stripe", secret = ["${env:NEW}", "${env:OLD}"], tolerance = "5m" }

``secret`` is one string or a list of strings (any of them is accepted, so secrets
rotate without downtime). Schemes that sign a timestamp also take ``tolerance``
(default five minutes, checked both ways). The schemes only verify; replay
protection by webhook id belongs to the webhook source.
"""

from __future__ import annotations

from typing import Any

from integrator.hookspecs import hookimpl
from integrator.http.signatures.base import (
    HmacKeys,
    SecretOptions,
    SignatureError,
    SignatureScheme,
    TimedOptions,
    Verified,
)
from integrator.http.signatures.generic import HmacOptions, HmacSignature
from integrator.http.signatures.providers import (
    GitHubSignature,
    ShopifySignature,
    SlackSignature,
    StripeSignature,
)
from integrator.http.signatures.standard import (
    StandardWebhooksOptions,
    StandardWebhooksSignature,
    sign_standard_webhook,
)

#: Every built-in scheme by the name a ``verify`` table uses.
SCHEMES: dict[str, type[SignatureScheme]] = {
    "standard-webhooks": StandardWebhooksSignature,
    "github": GitHubSignature,
    "stripe": StripeSignature,
    "slack": SlackSignature,
    "shopify": ShopifySignature,
    "hmac": HmacSignature,
}


@hookimpl
def integrator_signatures(register: Any) -> None:
    for name, scheme in SCHEMES.items():
        register(name, scheme)


__all__ = [
    "SCHEMES",
    "GitHubSignature",
    "HmacKeys",
    "HmacOptions",
    "HmacSignature",
    "SecretOptions",
    "ShopifySignature",
    "SignatureError",
    "SignatureScheme",
    "SlackSignature",
    "StandardWebhooksOptions",
    "StandardWebhooksSignature",
    "StripeSignature",
    "TimedOptions",
    "Verified",
    "sign_standard_webhook",
]
