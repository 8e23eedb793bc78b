"""A loopback TCP proxy that a test can cut, freeze and restore.

A connector has to survive its server going away, but the machine's RabbitMQ,
Redis, PostgreSQL… are shared by every test running side by side and must never be
stopped. A test points the component at a :class:`TcpProxy` in front of the real
server instead, and makes the outage there::

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@{proxy.host_port}/"
        ...
        proxy.cut()       # the server went away: connections dropped, new ones refused
        proxy.freeze()    # or: a silently dead network, found only by heartbeats
        proxy.restore()   # back to normal

Enter it inside the test itself, not in an async fixture: it holds a task group,
which must be entered and left by the same task.
"""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` while it is entered."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        #: The port the proxy listens on (known once entered).
        self.port = 0
        #: Connections forwarded to the target so far.
        self.connections = 0
        #: Whether :meth:`cut` is in force.
        self.is_cut = False
        #: Whether :meth:`freeze` is in force.
        self.frozen = False
        self._links: set[anyio.CancelScope] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    @property
    def host_port(self) -> str:
        """``127.0.0.1:<port>``, to put in the component's URL."""
        return f"127.0.0.1:{self.port}"

    @property
    def open_links(self) -> int:
        """Client connections being forwarded right now."""
        return len(self._links)

    async def __aenter__(self) -> TcpProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        tg.start_soon(listener.serve, self._handle)
        self._tg, self._listener = tg, listener
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None and self._listener is not None
        tg, listener, self._tg, self._listener = self._tg, self._listener, None, None
        tg.cancel_scope.cancel()
        # The block's own exception goes on as it is, not wrapped in an ExceptionGroup.
        await tg.__aexit__(None, None, None)
        await listener.aclose()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until :meth:`restore`."""
        self.is_cut = True
        for link in list(self._links):
            link.cancel()

    def freeze(self) -> None:
        """Keep every connection open but pass no more data (what arrives is dropped)
        until :meth:`restore`: a network that died without closing anything."""
        self.frozen = True

    def restore(self) -> None:
        """Forward again; connections dropped by :meth:`cut` stay dropped."""
        self.is_cut = False
        self.frozen = False

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        if self.is_cut:
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
            if self.is_cut:  # cut while this one was connecting upstream
                link.cancel()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                    tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
            finally:
                self._links.discard(link)
                with anyio.CancelScope(shield=True):  # the link may be cancelled: close both
                    await client.aclose()
                    await upstream.aclose()

    async def _pump(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                if not self.frozen:
                    await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # either side went away: the link is over
        finally:
            scope.cancel()
