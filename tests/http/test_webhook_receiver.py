"""The webhook source over real loopback HTTP: what each kind of request gets back, and
what reaches the store.

Requests are signed with the ``standardwebhooks`` library (an independent
implementation of the scheme) or with GitHub's published example.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import anyio
import msgspec
import pytest
import standardwebhooks
from aiohttp import StreamReader
from aiohttp.test_utils import make_mocked_request

from integrator.builtin.webhook import WebhookOptions, WebhookSource, _Receiver
from integrator.components import Context
from integrator.http.problem import HTTPProblem
from integrator.testing import RecordingIntake
from tests.http.webhook_support import HelperPlugins, file_route, lines, webhook_daemon

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNED = f"""
    path = "/hooks/sw"
    verify = {{ scheme = "standard-webhooks", secret = "{SECRET}" }}
"""
PLAIN = 'path = "/hooks/plain"'
BODY = b'{"type": "invoice.paid", "amount": 4200}'


def signed(body: bytes, msg_id: str = "msg_p5jXN8AQM9LWM0D4loKWxJek") -> dict[str, str]:
    """Standard Webhooks headers made by the reference library, timestamped now."""
    ts = int(time.time())
    signature = standardwebhooks.Webhook(SECRET).sign(
        msg_id, datetime.fromtimestamp(ts, UTC), body.decode()
    )
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


# -- accepted -------------------------------------------------------------------------------


async def test_signed_webhook_is_acknowledged_and_delivered(run_route, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with webhook_daemon(run_route, file_route(out, SIGNED)) as r:
        headers = {**signed(BODY), "Authorization": "Bearer proxy-token", "Cookie": "s=1"}
        reply = await r.request("POST", "/hooks/sw?tenant=acme&tag=a&tag=b", BODY, headers)
        assert reply.status == 202
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert message["id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert message["body"] == {"type": "invoice.paid", "amount": 4200}
    assert message["headers"]["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert "authorization" not in message["headers"] and "cookie" not in message["headers"]
    assert message["attributes"] == {
        "method": "POST",
        "path": "/hooks/sw",
        "query": {"tenant": "acme", "tag": ["a", "b"]},
        "remote": "127.0.0.1",
    }


@pytest.mark.parametrize("target", ["/hooks/plain", "/hooks/plain?"])
async def test_a_request_without_query_parameters_has_an_empty_query(
    run_route, tmp_path: Path, target: str
) -> None:
    out = tmp_path / "out.jsonl"
    async with webhook_daemon(run_route, file_route(out, PLAIN)) as r:
        assert (await r.request("POST", target, BODY)).status == 202
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert message["attributes"]["query"] == {}


async def test_repeated_headers_are_joined_and_hop_by_hop_ones_left_out(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with webhook_daemon(run_route, file_route(out, PLAIN)) as r:
        async with await anyio.connect_tcp("127.0.0.1", r.server.port or 0) as stream:
            await stream.send(
                b"POST /hooks/plain HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"X-Tag: a\r\nx-tag: b\r\nTE: trailers\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
            )
            with anyio.fail_after(5):
                head = await stream.receive()
        assert head.startswith(b"HTTP/1.1 202 ")
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert message["headers"]["x-tag"] == "a, b"
    assert message["headers"]["content-type"] == "application/json"
    assert "te" not in message["headers"] and "connection" not in message["headers"]


async def test_a_hop_by_hop_header_is_left_out_when_no_header_repeats(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with webhook_daemon(run_route, file_route(out, PLAIN)) as r:
        reply = await r.request("POST", "/hooks/plain", BODY, {"Keep-Alive": "timeout=5"})
        assert reply.status == 202
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert "keep-alive" not in message["headers"]
    assert message["headers"]["content-type"] == "application/json"


async def test_github_published_example_is_accepted(run_route, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    source = """
        path = "/hooks/github"
        verify = { scheme = "github", secret = "It's a Secret to Everybody" }
        content_types = []
        require_json = false
    """
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    async with webhook_daemon(run_route, file_route(out, source)) as r:
        headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "72d3162e-cc78"}
        reply = await r.post("/hooks/github", b"Hello, World!", headers, "text/plain")
        assert reply.status == 202
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert (message["id"], message["body"]) == ("72d3162e-cc78", "Hello, World!")


async def test_2xx_is_sent_only_once_the_message_is_in_the_store(run_route) -> None:
    route = f"""
        [routes.r]
        sinks = [{{ type = "stuck" }}]
        [routes.r.source]
        type = "webhook"
        {PLAIN}
    """
    async with webhook_daemon(run_route, route, HelperPlugins()) as r:
        assert (await r.post("/hooks/plain", BODY)).status == 202
        # The sink never delivers, so the message is still in the store, wherever it waits.
        assert sum((await r.store.depths()).values()) == 1


# -- refused: nothing is stored -------------------------------------------------------------


async def test_tampered_body_is_refused_and_nothing_is_stored(run_route, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with webhook_daemon(run_route, file_route(out, SIGNED)) as r:
        reply = await r.post("/hooks/sw", BODY.replace(b"4200", b"9999"), signed(BODY))
        assert reply.status == 401
        assert reply.problem == {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "signature verification failed: no matching signature",
            "instance": "/hooks/sw",
        }
        assert "WWW-Authenticate" in reply.headers
        assert SECRET.encode() not in reply.body and SECRET[6:].encode() not in reply.body
        assert r.store.pending() == 0 and r.stats().received == 0
    assert lines(out) == []


async def test_missing_signature_is_refused(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", SIGNED)) as r:
        headers = signed(BODY)
        del headers["webhook-signature"]
        reply = await r.post("/hooks/sw", BODY, headers)
        assert reply.status == 401
        assert reply.problem["detail"].endswith("missing header webhook-signature")
        assert r.store.pending() == 0


async def test_oversized_body_with_content_length_gets_413(run_route, tmp_path: Path) -> None:
    source = f'{PLAIN}\nmax_body = "1KiB"'
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", source)) as r:
        reply = await r.post("/hooks/plain", b'{"pad": "' + b"x" * 2000 + b'"}')
        assert reply.status == 413
        assert reply.problem["detail"] == "the body is larger than 1024 bytes"
        assert r.store.pending() == 0


async def _chunks(size: int, piece: int = 256) -> AsyncIterator[bytes]:
    """A JSON body of about ``size`` bytes sent chunked (aiohttp sends no Content-Length)."""
    yield b'{"pad": "'
    for _ in range(size // piece):
        yield b"x" * piece
    yield b'"}'


async def test_chunked_body_is_measured_while_read(run_route, tmp_path: Path) -> None:
    source = f'{PLAIN}\nmax_body = "1KiB"'
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", source)) as r:
        assert (await r.post("/hooks/plain", _chunks(512))).status == 202
        reply = await r.post("/hooks/plain", _chunks(4096))
        assert reply.status == 413
        assert r.stats().received == 1


async def test_wrong_content_type_gets_415(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        reply = await r.post(
            "/hooks/plain", b"a=1", content_type="application/x-www-form-urlencoded"
        )
        assert reply.status == 415
        assert reply.headers["Accept-Post"] == "application/json"
        assert r.store.pending() == 0


async def test_content_type_parameters_and_case_do_not_matter(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        reply = await r.post("/hooks/plain", BODY, content_type="Application/JSON; charset=utf-8")
        assert reply.status == 202


async def test_a_wildcard_content_type_accepts_the_types_it_matches(
    run_route, tmp_path: Path
) -> None:
    source = f'{PLAIN}\ncontent_types = ["application/*+json"]'
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", source)) as r:
        accepted = await r.post("/hooks/plain", BODY, content_type="application/vnd.api+json")
        refused = await r.post("/hooks/plain", BODY, content_type="application/json")
        assert (accepted.status, refused.status) == (202, 415)
        assert refused.headers["Accept-Post"] == "application/*+json"


async def test_each_content_type_keeps_its_own_answer_request_after_request(
    run_route, tmp_path: Path
) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        statuses = [
            (await r.post("/hooks/plain", BODY, content_type=content_type)).status
            for content_type in ["application/json", "text/plain"] * 3
        ]
        assert statuses == [202, 415] * 3
        assert r.stats().received == 3


async def test_a_request_without_content_type_gets_415(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        async with await anyio.connect_tcp("127.0.0.1", r.server.port or 0) as stream:
            await stream.send(
                b"POST /hooks/plain HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
            )
            with anyio.fail_after(5):
                head = await stream.receive()
        assert head.startswith(b"HTTP/1.1 415 ")
        assert b"'application/octet-stream' is not accepted here" in head
        assert r.store.pending() == 0


def test_a_sender_cycling_through_content_types_cannot_grow_the_receivers_memory() -> None:
    source = WebhookSource(msgspec.convert({"path": "/hooks/x"}, WebhookOptions), Context("r"))
    receiver = _Receiver(source, intake=None)  # type: ignore[arg-type]  # not reached
    for n in range(200):
        request = make_mocked_request("POST", "/hooks/x", headers={"Content-Type": f"x/{n}"})
        with pytest.raises(HTTPProblem):
            receiver._check_content_type(request)
    assert len(receiver._accepted_types) <= 64


async def test_the_json_text_received_is_handed_to_the_store_as_received() -> None:
    handed: list[object] = []

    class Intake(RecordingIntake):  # checks that each text decodes to its message's body
        async def submit(self, messages, *, json_bodies=None):  # type: ignore[no-untyped-def]
            handed.append(json_bodies)
            return await super().submit(messages, json_bodies=json_bodies)

    source = WebhookSource(msgspec.convert({"path": "/hooks/x"}, WebhookOptions), Context("r"))
    body = b'{ "amount" : 4200 }'
    payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    request = make_mocked_request(
        "POST", "/hooks/x", headers={"Content-Type": "application/json"}, payload=payload
    )
    intake = Intake()
    reply = await _Receiver(source, intake).handle(request)
    assert reply.status == 202
    assert handed == [[body]]
    assert intake.committed[0].body == {"amount": 4200}


async def test_integers_beyond_64_bits_arrive_exact_through_a_changing_chain(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    chain = 'middleware = [{ type = "map", set = { "body.seen" = "`true`" } }]'
    big = b'{"id": 18446744073709551616, "debt": -1180591620717411303424}'
    async with webhook_daemon(run_route, file_route(out, PLAIN, extra=chain)) as r:
        assert (await r.post("/hooks/plain", big)).status == 202
        await r.daemon.wait_delivered("r", 1)
    [message] = lines(out)
    assert message["body"] == {"id": 2**64, "debt": -(2**70), "seen": True}


async def test_malformed_json_gets_400(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        reply = await r.post("/hooks/plain", b'{"amount": 42')
        assert reply.status == 400
        assert reply.problem["detail"].startswith("the body is not valid JSON")
        assert r.store.pending() == 0


async def test_unknown_path_gets_404(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        reply = await r.post("/hooks/elsewhere", BODY)
        assert (reply.status, reply.problem["instance"]) == (404, "/hooks/elsewhere")


async def test_wrong_method_gets_405_with_allow(run_route, tmp_path: Path) -> None:
    source = f'{PLAIN}\nmethods = ["post", "PUT"]'
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", source)) as r:
        reply = await r.request("GET", "/hooks/plain")
        assert (reply.status, reply.headers["Allow"]) == (405, "POST, PUT")
        assert (await r.request("PUT", "/hooks/plain/", BODY)).status == 202


# -- replays, backpressure, store failures ----------------------------------------------------


async def test_replayed_webhook_id_is_acknowledged_but_processed_once(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    route = file_route(out, SIGNED, extra='dedupe_window = "1h"')
    async with webhook_daemon(run_route, route) as r:
        headers = signed(BODY)
        first = await r.post("/hooks/sw", BODY, headers)
        again = await r.post("/hooks/sw", BODY, headers)
        assert (first.status, again.status) == (202, 202)
        assert (r.stats().received, r.stats().duplicates) == (1, 1)
        await r.daemon.wait_delivered("r", 1)
    assert len(lines(out)) == 1


async def test_signed_route_without_dedupe_window_warns_at_start(
    run_route, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="integrator.webhooks"):
        async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", SIGNED)):
            pass
    assert "route r: redelivered webhooks will be processed again: set dedupe_window" in caplog.text


async def test_over_high_water_mark_gets_503_with_retry_after(run_route) -> None:
    config = f"""
        [webhooks]
        listen = "127.0.0.1:0"
        retry_after = "7s"
        [store]
        high_water = 1
        low_water = 0
        [routes.r]
        sinks = [{{ type = "stuck" }}]
        [routes.r.source]
        type = "webhook"
        {PLAIN}
    """
    async with webhook_daemon(run_route, config, HelperPlugins()) as r:
        assert (await r.post("/hooks/plain", BODY)).status == 202
        reply = await r.post("/hooks/plain", BODY)
        assert (reply.status, reply.headers["Retry-After"]) == (503, "7")
        assert reply.problem["detail"] == "the receiver is over capacity; retry later"
        assert r.stats().received == 1


async def test_store_failure_gets_503_never_2xx(run_route, tmp_path: Path) -> None:
    config = '[store]\ntype = "failing"\n' + file_route(tmp_path / "o.jsonl", PLAIN)
    async with webhook_daemon(run_route, config, HelperPlugins()) as r:
        reply = await r.post("/hooks/plain", BODY)
        assert reply.status == 503
        assert reply.problem["detail"] == "the webhook could not be stored; retry later"
        assert "Retry-After" in reply.headers


async def test_paused_route_gets_503_until_resumed(run_route, tmp_path: Path) -> None:
    async with webhook_daemon(run_route, file_route(tmp_path / "o.jsonl", PLAIN)) as r:
        route = r.daemon.daemon.routes["r"]
        route.pause()
        await r.daemon.wait_for(lambda: "/hooks/plain" not in r.server.paths, what="pause")
        reply = await r.post("/hooks/plain", BODY)
        assert (reply.status, "Retry-After" in reply.headers) == (503, True)
        route.resume()
        await r.daemon.wait_for(lambda: "/hooks/plain" in r.server.paths, what="resume")
        assert (await r.post("/hooks/plain", BODY)).status == 202


async def test_a_body_that_stalls_gets_408(run_route, tmp_path: Path) -> None:
    config = '[webhooks]\nlisten = "127.0.0.1:0"\nread_timeout = "200ms"\n'
    config += file_route(tmp_path / "o.jsonl", PLAIN)
    async with webhook_daemon(run_route, config) as r:
        async with await anyio.connect_tcp("127.0.0.1", r.server.port or 0) as stream:
            await stream.send(
                b"POST /hooks/plain HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"amount": '
            )
            with anyio.fail_after(5):
                head = await stream.receive()
        assert head.startswith(b"HTTP/1.1 408 ")
        assert r.store.pending() == 0
