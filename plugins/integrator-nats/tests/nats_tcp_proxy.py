"""A loopback TCP forwarder whose connections a test can cut and restore.

It stands between the daemon and the machine's shared NATS server, so a test can
make an outage (every connection dropped, new ones refused) without ever stopping
the shared service that other tests use.
"""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; :meth:`cut` and :meth:`restore` the link."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self._open = True
        self._links: set[anyio.CancelScope] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    async def __aenter__(self) -> TcpProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None and self._listener is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        await self._listener.aclose()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until :meth:`restore`."""
        self._open = False
        for link in list(self._links):
            link.cancel()

    def restore(self) -> None:
        self._open = True

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        if not self._open:
            await anyio.aclose_forcefully(client)
            return
        try:
            upstream = await anyio.connect_tcp(*self.target)
        except OSError:
            await anyio.aclose_forcefully(client)
            return
        self.connections += 1
        with anyio.CancelScope() as link:
            self._links.add(link)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, client, upstream, tg.cancel_scope)
                    tg.start_soon(_pump, upstream, client, tg.cancel_scope)
            finally:
                self._links.discard(link)
                with anyio.CancelScope(shield=True):  # the link may be cancelled: close both
                    await client.aclose()
                    await upstream.aclose()


async def _pump(
    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope
) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # either side went away: the link is over
    finally:
        scope.cancel()
