"""A configurable HMAC scheme for senders that have no scheme of their own.

Most home-grown webhook signatures are "an HMAC of the body (maybe with a timestamp
in front), hex or base64, in some header, maybe with a ``sha256=`` prefix". This
scheme covers that family from options alone::

    [routes.acme.source.verify]
    scheme = "hmac"
    secret = "${env:ACME_SECRET}"
    header = "x-acme-signature"
    prefix = "sha256="
    timestamp_header = "x-acme-timestamp"
    signed_content = "{timestamp}.{body}"

``signed_content`` is the text that was signed. Its placeholders are ``{body}`` (the
raw request body, byte for byte), ``{timestamp}`` (the value of ``timestamp_header``,
as sent) and ``{id}`` (the value of ``id_header``, as sent); write ``{{`` and ``}}``
for literal braces. Everything else is taken literally, encoded as UTF-8.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Literal

from integrator.http.signatures.base import (
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

PLACEHOLDERS = ("body", "timestamp", "id")

#: One piece of the signed content: literal bytes, or the name of a placeholder.
Piece = bytes | Literal["body", "timestamp", "id"]


def parse_template(template: str) -> list[Piece]:
    """Split ``signed_content`` into literal bytes and placeholder names.

    Raises ValueError naming the first unknown or malformed placeholder.
    """
    pieces: list[Piece] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"signed_content: {err} (write '{{{{' for a literal brace)") from None
    for literal, field, spec, conversion in parsed:
        if literal:
            pieces.append(literal.encode())
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
            raise ValueError(f"signed_content: unknown placeholder {{{field}}}; use {known}")
        pieces.append(field)  # type: ignore[arg-type]  # checked just above
    if "body" not in pieces:
        raise ValueError("signed_content: must contain {body}")
    return pieces


class HmacOptions(TimedOptions, kw_only=True):
    """Where the signature is and how it was made."""

    #: The header carrying the signature (any case; matched lower-cased).
    header: str
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    #: Text before the signature in the header, e.g. ``"sha256="``; required when set.
    prefix: str = ""
    #: The header carrying a signed Unix timestamp; checked against ``tolerance``.
    timestamp_header: str | None = None
    #: Whether that timestamp counts seconds or milliseconds.
    timestamp_unit: Literal["s", "ms"] = "s"
    #: The header carrying the sender's delivery id (returned for replay checks).
    id_header: str | None = None
    #: What was signed; see the module documentation for the placeholders.
    signed_content: str = "{body}"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.header = self.header.lower()
        if self.timestamp_header is not None:
            self.timestamp_header = self.timestamp_header.lower()
        if self.id_header is not None:
            self.id_header = self.id_header.lower()
        pieces = parse_template(self.signed_content)
        if "timestamp" in pieces and self.timestamp_header is None:
            raise ValueError("signed_content uses {timestamp} but timestamp_header is not set")
        if "id" in pieces and self.id_header is None:
            raise ValueError("signed_content uses {id} but id_header is not set")


class HmacSignature(SignatureScheme):
    """Any HMAC-in-a-header signature, described by :class:`HmacOptions`."""

    Options = HmacOptions
    description = "generic HMAC (configurable header, algorithm, encoding, signed content)"

    def __init__(self, options: HmacOptions) -> None:
        super().__init__(options)
        self.options: HmacOptions = options
        self._pieces = parse_template(options.signed_content)
        self._decode = decode_hex if options.encoding == "hex" else decode_base64
        self._unit = 0.001 if options.timestamp_unit == "ms" else 1.0

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        opts = self.options
        signature = require_header(headers, opts.header).strip()
        if not signature.startswith(opts.prefix):
            raise SignatureError(f"malformed header {opts.header}")
        values: dict[str, bytes] = {"body": body}
        timestamp: float | None = None
        if opts.timestamp_header is not None:
            raw_timestamp = require_header(headers, opts.timestamp_header)
            timestamp = parse_timestamp(raw_timestamp, opts.timestamp_header, unit=self._unit)
            check_timestamp(timestamp, now=now, tolerance=float(opts.tolerance))
            values["timestamp"] = raw_timestamp.encode()
        webhook_id: str | None = None
        if opts.id_header is not None:
            if "id" in self._pieces:
                webhook_id = require_header(headers, opts.id_header)
                values["id"] = webhook_id.encode()
            else:
                webhook_id = headers.get(opts.id_header) or None
        content = b"".join(
            piece if isinstance(piece, bytes) else values[piece] for piece in self._pieces
        )
        received = self._decode(signature.removeprefix(opts.prefix))
        require_match(self._hmac.digests(content), [received])
        return Verified(webhook_id=webhook_id, timestamp=timestamp)
