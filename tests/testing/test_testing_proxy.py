"""``TcpProxy``: forwards loopback TCP, and makes outages on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from integrator.testing import TcpProxy


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A loopback server that sends back what it receives; yields its port."""

    async def echo(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                async for chunk in stream:
                    await stream.send(chunk)
            except (anyio.BrokenResourceError, OSError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def roundtrip(stream: anyio.abc.SocketStream, data: bytes) -> bytes:
    await stream.send(data)
    received = b""
    with anyio.fail_after(2):
        while len(received) < len(data):
            received += await stream.receive()
    return received


async def closed_by_peer(stream: anyio.abc.SocketStream) -> bool:
    """Whether the other end has closed (or reset) the connection."""
    with anyio.fail_after(2):
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return True
    return False


async def test_bytes_go_through_both_ways_and_connections_are_counted() -> None:
    async with echo_server() as port, TcpProxy("127.0.0.1", port) as proxy:
        assert proxy.host_port == f"127.0.0.1:{proxy.port}" and proxy.port != port
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
            assert await roundtrip(stream, b"hello") == b"hello"
            assert (proxy.connections, proxy.open_links) == (1, 1)


async def test_cut_drops_open_connections_and_refuses_new_ones_until_restore() -> None:
    async with echo_server() as port, TcpProxy("127.0.0.1", port) as proxy:
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as before:
            await roundtrip(before, b"x")
            proxy.cut()
            assert await closed_by_peer(before)
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as during:
            assert await closed_by_peer(during)

        proxy.restore()
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as after:
            assert await roundtrip(after, b"back") == b"back"
        assert proxy.connections == 2  # the refused one never reached the server


async def test_freeze_keeps_the_connection_open_but_passes_nothing() -> None:
    async with (
        echo_server() as port,
        TcpProxy("127.0.0.1", port) as proxy,
        await anyio.connect_tcp("127.0.0.1", proxy.port) as stream,
    ):
        await roundtrip(stream, b"x")
        proxy.freeze()
        await stream.send(b"lost")
        with anyio.move_on_after(0.2) as silent:
            await stream.receive()
        assert silent.cancelled_caught, "data went through a frozen proxy"
        assert proxy.open_links == 1

        proxy.restore()
        assert await roundtrip(stream, b"again") == b"again"


async def test_a_target_that_is_down_looks_like_a_closed_connection() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    dead_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with TcpProxy("127.0.0.1", dead_port) as proxy:
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
            assert await closed_by_peer(stream)
        assert proxy.connections == 0


async def test_an_error_in_the_block_comes_out_as_it_is() -> None:
    with pytest.raises(ValueError, match="the test failed"):
        async with TcpProxy("127.0.0.1", 9):
            raise ValueError("the test failed")


async def test_the_port_is_free_again_after_the_block() -> None:
    async with TcpProxy("127.0.0.1", 9) as proxy:
        port = proxy.port
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", port)
