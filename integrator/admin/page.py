"""The status page at ``/``: one self-contained HTML file shipped as package data.

The page itself holds no data and needs no token; it fetches ``api/status`` with
the token the operator gives it (see the comment in ``status.html``). Its inline
script and style are allowed by hash in a strict Content-Security-Policy, so
nothing else can run on the page and it can talk to no other origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib.resources import files

from aiohttp import web

PAGE = "status.html"


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
    )


@functools.cache
def page() -> tuple[bytes, str]:
    """The page's bytes and the Content-Security-Policy that fits it."""
    html = files("integrator.admin").joinpath(PAGE).read_text(encoding="utf-8")
    policy = (
        "default-src 'none'; "
        f"script-src {_hashes(html, 'script')}; "
        f"style-src {_hashes(html, 'style')}; "
        "connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return html.encode(), policy


async def status_page(request: web.Request) -> web.Response:
    body, policy = page()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
