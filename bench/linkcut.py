"""A TCP proxy on loopback that drops every link through it on demand, as a failing network
does: the tests and the client bench cut WebSocket connections mid-turn with it."""

from __future__ import annotations

import asyncio
import contextlib


class LinkCutter:
    """A TCP proxy on loopback whose `cut()` aborts every link through it, as a dropped
    network does: no close frame, no FIN to wait for."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # While set, what clients send (drop_up) or what the server sends (drop_down) is
        # dropped on the floor: a message "sent" just before the link fails that the
        # server never gets, or one it got whose answer never arrives.
        self.drop_up = False
        self.drop_down = False
        self.dropped = 0  # bytes dropped so far
        self.server: asyncio.Server | None = None
        self.url = ""  # ws:// URL of the proxy, once started by `async with`

    async def __aenter__(self) -> LinkCutter:
        port = await self.start()
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            upstream = dst is up_writer
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if self.drop_up if upstream else self.drop_down:
                        self.dropped += len(data)
                        continue
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    def cut(self) -> None:
        for writer in tuple(self.links):
            writer.transport.abort()

    async def close(self) -> None:
        """Cut every link and wait (bounded) for their pipes to end."""
        assert self.server is not None
        self.server.close()
        self.cut()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2.0)
