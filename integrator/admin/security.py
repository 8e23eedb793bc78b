"""Who may talk to the admin listener: loopback or a bearer token, never neither.

Without a token the listener is reachable only from this host, and even then it
refuses requests that a web page could forge (another ``Host``, a cross-site
``Origin``): a browser on the operator's desktop must not become a way in.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from integrator.config import AdminConfig


class ExposureError(ValueError):
    """Raised when the admin listener would be reachable beyond loopback without a token.

    A ``ValueError`` so that the config loader reports it as an ``[admin]`` problem.
    """


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host is None:
        return False  # every interface
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere, or "" / "0.0.0.0" / "::"


def check_exposure(config: AdminConfig) -> None:
    """Refuse a listener beyond loopback without a token, and ``metrics_auth`` without one."""
    from integrator.http.server import parse_listen

    host, _ = parse_listen(config.listen)
    has_token = config.token is not None and bool(config.token)
    if config.enabled and not is_loopback(host) and not has_token:
        raise ExposureError(
            f"listen = {config.listen!r} is reachable beyond this host: set [admin] token "
            '(for example token = "${cred:admin_token}") or listen on 127.0.0.1'
        )
    if config.metrics_auth and not has_token:
        raise ExposureError("metrics_auth = true needs [admin] token")


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``token``.

    The comparison takes the same time wherever the first wrong byte is, so the
    token cannot be guessed byte by byte from response times.
    """
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def host_is_local(host_header: str | None, listen_host: str | None) -> bool:
    """Whether a request's ``Host`` names this machine (a DNS-rebinding page's does not)."""
    if not host_header:
        return False
    host = urlsplit(f"//{host_header}").hostname or ""
    return is_loopback(host) or host == (listen_host or "").lower()


def origin_is_same(origin: str | None, host_header: str | None) -> bool:
    """Whether a browser's ``Origin`` (if any) is this listener's own page."""
    if origin is None:
        return True  # not a browser's cross-site request (curl, `integrator status`)
    return urlsplit(origin).netloc.lower() == (host_header or "").lower()
