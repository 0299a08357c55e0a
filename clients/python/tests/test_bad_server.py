"""Bad input from a server: a garbage line, a socket closed in the middle of a frame. The
client says so in a `Disconnected` event and tries again; it never hangs."""

from __future__ import annotations

import asyncio
from typing import List

from vigil_fleet import AgentSpec, AsyncAgentClient, AsyncMonitor, Disconnected

WELCOME = b'{"type":"welcome","protocol":1,"session":"s","server":"fake/0","heartbeat_interval_ms":1000,"time":"2026-01-01T00:00:00.000Z"}\n'


async def fake_server(after_welcome: bytes) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # hello
        writer.write(WELCOME + after_welcome)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def disconnects(client_events, n: int) -> List[Disconnected]:
    out: List[Disconnected] = []
    while len(out) < n:
        e = await asyncio.wait_for(client_events(), 20)
        if isinstance(e, Disconnected):
            out.append(e)
    return out


def address(server: asyncio.AbstractServer) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


def test_an_agent_client_reports_a_garbage_line_and_tries_again() -> None:
    async def main() -> None:
        server = await fake_server(b"this is not json\n")
        client = AsyncAgentClient(address(server), [AgentSpec("a1")], backoff_min=0.01, backoff_max=0.05)
        client.start()
        seen = await disconnects(lambda: client.next_event(), 2)
        assert "not JSON" in seen[0].error, seen
        await client.abandon()
        server.close()

    asyncio.run(main())


def test_an_agent_client_reports_a_frame_cut_short() -> None:
    async def main() -> None:
        server = await fake_server(b'{"type":"registered","id":"a1"')
        client = AsyncAgentClient(address(server), [AgentSpec("a1")], backoff_min=0.01, backoff_max=0.05)
        client.start()
        seen = await disconnects(lambda: client.next_event(), 1)
        assert "middle of a frame" in seen[0].error, seen
        await client.abandon()
        server.close()

    asyncio.run(main())


def test_a_monitor_reports_a_garbage_line_and_tries_again() -> None:
    async def main() -> None:
        server = await fake_server(b"[1,2,3]\n")
        monitor = AsyncMonitor(address(server), backoff_min=0.01, backoff_max=0.05)
        items = monitor.__aiter__()
        seen = await disconnects(lambda: items.__anext__(), 2)
        assert "not a JSON object" in seen[0].error, seen
        monitor.close()
        server.close()

    asyncio.run(main())
