"""Fixtures for the HTTP tests: real servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.http.oauth_server import OAuthServer


@pytest.fixture
async def oauth_server() -> AsyncIterator[OAuthServer]:
    """authlib's OAuth2 authorization server and a protected resource, on 127.0.0.1."""
    server = OAuthServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
