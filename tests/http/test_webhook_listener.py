"""The shared webhook listener and the webhook source's configuration: addresses (TCP,
HTTPS, Unix socket), config errors caught at load time, route start failures, and
signature schemes that come from plugins.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import socket
import ssl
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from integrator import hookimpl
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.http.server import ListenerError, parse_listen
from integrator.http.signatures import SecretOptions, SignatureError, SignatureScheme, Verified
from integrator.testing import make_registry
from tests.http.webhook_support import file_route, lines, webhook_daemon

REPO = Path(__file__).parents[2]
PLAIN = 'path = "/hooks/plain"'
BODY = b'{"ok": true}'


# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        (":8080", (None, 8080)),
        ("hooks.internal:443", ("hooks.internal", 443)),
    ],
)
def test_listen_addresses_parse(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "127.0.0.1", "127.0.0.1:70000", "::1:80", "a:b"])
def test_malformed_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'host:port'"):
        parse_listen(text)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_listener_serves_https_with_the_configured_certificate(
    run_route, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    config = f"""
        [webhooks]
        listen = "127.0.0.1:0"
        tls_cert = "{cert}"
        tls_key = "{key}"
    """ + file_route(tmp_path / "o.jsonl", PLAIN)
    async with webhook_daemon(run_route, config) as r:
        assert r.server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        headers = {"Content-Type": "application/json"}
        async with r.session.post(
            r.server.url + "/hooks/plain", data=BODY, headers=headers, ssl=trust
        ) as reply:
            assert reply.status == 202


async def test_listener_serves_a_unix_socket(run_route, tmp_path: Path) -> None:
    sock = tmp_path / "hooks.sock"
    out = tmp_path / "o.jsonl"
    config = f'[webhooks]\nlisten = ""\nunix_socket = "{sock}"\n' + file_route(out, PLAIN)
    async with webhook_daemon(run_route, config) as r:
        assert r.server.port is None
        connector = aiohttp.UnixConnector(path=str(sock))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                "http://localhost/hooks/plain",
                data=BODY,
                headers={"Content-Type": "application/json"},
            ) as reply,
        ):
            assert reply.status == 202
        await r.daemon.wait_delivered("r", 1)
    assert lines(out)[0]["body"] == {"ok": True}
    assert not sock.exists()


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def test_a_port_in_use_stops_the_daemon_before_ready(run_route, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = f'[webhooks]\nlisten = "127.0.0.1:{port}"\n' + file_route(tmp_path / "o", PLAIN)
        with pytest.raises(BaseExceptionGroup) as info:
            async with webhook_daemon(run_route, config):
                pass
    [error] = leaves(info.value)
    assert isinstance(error, ListenerError)
    assert (
        str(error) == f"[webhooks] cannot listen on http://127.0.0.1:{port}: Address already in use"
    )


async def test_no_listener_without_webhook_routes(run_route) -> None:
    config = """
        [routes.r]
        source = { type = "timer", interval = "1h" }
        sinks = [{ type = "stdout" }]
    """
    async with run_route(config) as d:
        assert "webhooks" not in d.services.shared


# -- configuration checked at load time ------------------------------------------------------


def load(text: str) -> None:
    _, registry = make_registry()
    parse_config(text, Path("integrator.toml"), registry)


def route(source: str) -> str:
    return f'[routes.r]\nsinks = [{{ type = "stdout" }}]\n[routes.r.source]\ntype = "webhook"\n{source}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[webhooks]\nlisten = "8080"', "webhooks: listen: expected 'host:port'"),
        ('[webhooks]\nlisten = ""', "listen: empty, and no unix_socket"),
        ('[webhooks]\ntls_cert = "c.pem"', "tls_cert and tls_key: give both"),
        (route('path = "hooks"'), "path: must start with '/'"),
        (route(f"{PLAIN}\nresponse_status = 500"), "response_status: expected a 2xx status"),
        (route(f'{PLAIN}\nverify = {{ secret = "s" }}'), "verify: needs a 'scheme'"),
        (
            route(f'{PLAIN}\nverify = {{ scheme = "github", secret = "s", tolerance = "1m" }}'),
            "verify: unknown key 'tolerance'",
        ),
        (
            route(f'{PLAIN}\nverify = {{ scheme = "github" }}'),
            "verify: missing required key 'secret'",
        ),
        (
            route(f'{PLAIN}\nverify = {{ scheme = "standard-webhooks", secret = "whsec_%%%" }}'),
            "not valid base64",
        ),
    ],
)
def test_config_mistakes_are_reported_at_load(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert message in str(info.value)


def test_example_config_passes_integrator_check() -> None:
    example = REPO / "config" / "examples" / "github-webhook-to-file.toml"
    env = {**os.environ, "GITHUB_WEBHOOK_SECRET": "example-secret"}
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "integrator"), "check", "-c", str(example)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok (1 route)" in result.stdout


async def test_example_config_files_github_pushes_and_drops_pings(
    run_route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "example-secret")
    out = tmp_path / "github.jsonl"
    text = (REPO / "config" / "examples" / "github-webhook-to-file.toml").read_text()
    text = text.replace('"127.0.0.1:8080"', '"127.0.0.1:0"')
    # run_route puts its [daemon] table first, which a top-level key may not follow.
    text = text.replace("version = 1\n", "")
    text = text.replace('"var/github-events.jsonl"', f'"{out}"')
    async with webhook_daemon(run_route, text) as r:
        for event, delivery in (("ping", "d-1"), ("push", "d-2")):
            digest = hmac.new(b"example-secret", BODY, "sha256").hexdigest()
            headers = {
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": f"sha256={digest}",
            }
            assert (await r.post("/hooks/github", BODY, headers)).status == 202
        await r.daemon.wait_for(lambda: r.stats("github-events").processed == 2, what="2 processed")
        await r.daemon.wait_delivered("github-events", 1)
    assert [line["id"] for line in lines(out)] == ["d-2"]


# -- route start failures --------------------------------------------------------------------


async def source_error(r: Any, route: str = "r") -> str:
    health = r.daemon.services.health
    await r.daemon.wait_for(
        lambda: (
            health.component(f"{route}/source").last_error
            or health.component(f"{route}/route").last_error
        ),
        what=f"route {route} to fail",
    )
    return str(
        health.component(f"{route}/source").last_error
        or health.component(f"{route}/route").last_error
    )


async def test_an_unknown_scheme_is_a_config_error_naming_the_known_ones(
    run_route, tmp_path
) -> None:
    from integrator.errors import ConfigError

    source = f'{PLAIN}\nverify = {{ scheme = "githib", secret = "s" }}'
    with pytest.raises(ConfigError) as caught:
        async with webhook_daemon(run_route, file_route(tmp_path / "o", source)):
            pass
    (problem,) = caught.value.problems
    assert "verify.scheme: unknown signature scheme 'githib'; known schemes: github" in problem


async def test_two_routes_cannot_share_a_path(run_route, tmp_path: Path) -> None:
    config = file_route(tmp_path / "a", PLAIN, route="a") + file_route(
        tmp_path / "b", PLAIN, route="b"
    )
    async with webhook_daemon(run_route, config) as r:
        error = await source_error(r, "b")
        assert "'/hooks/plain' is already served by route 'a'" in error
        assert r.server.paths == {"/hooks/plain": "a"}


# -- schemes from plugins --------------------------------------------------------------------


class TokenScheme(SignatureScheme):
    """A plugin's scheme: a shared token in a header (GitLab-style), compared as-is."""

    Options = SecretOptions

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        if headers.get("x-token", "").encode() not in self._keys:
            raise SignatureError("wrong token")
        return Verified(webhook_id=headers.get("x-event-uuid"))


class BrokenScheme(SignatureScheme):
    Options = SecretOptions

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        raise RuntimeError("bug in a plugin")


class SchemePlugin:
    @hookimpl
    def integrator_signatures(self, register: Any) -> None:
        register("token", TokenScheme)
        register("broken", BrokenScheme)


async def test_a_plugin_scheme_is_found_in_the_registry(run_route, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    source = f'{PLAIN}\nverify = {{ scheme = "token", secret = "t0ken" }}'
    async with webhook_daemon(run_route, file_route(out, source), SchemePlugin()) as r:
        assert (await r.post("/hooks/plain", BODY, {"X-Token": "nope"})).status == 401
        headers = {"X-Token": "t0ken", "X-Event-UUID": "e-1"}
        assert (await r.post("/hooks/plain", BODY, headers)).status == 202
        await r.daemon.wait_delivered("r", 1)
    assert [line["id"] for line in lines(out)] == ["e-1"]


async def test_a_crashing_scheme_gets_500_and_the_listener_keeps_serving(
    run_route, tmp_path: Path
) -> None:
    broken = 'path = "/hooks/broken"\nverify = { scheme = "broken", secret = "s" }'
    config = file_route(tmp_path / "a", broken, route="a") + file_route(
        tmp_path / "b", PLAIN, route="b"
    )
    async with webhook_daemon(run_route, config, SchemePlugin()) as r:
        reply = await r.post("/hooks/broken", BODY)
        assert reply.status == 500
        assert "bug in a plugin" not in reply.body.decode()
        assert (await r.post("/hooks/plain", BODY)).status == 202
