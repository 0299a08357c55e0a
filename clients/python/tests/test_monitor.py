"""The monitor against a real `vigil serve`: a snapshot, then every event once, across a
lost connection."""

from __future__ import annotations

import asyncio
from typing import List

from vigil_fleet import AsyncMonitor, Connection, Disconnected, FleetEvent, Snapshot


async def register(address: str, ids: List[str]) -> Connection:
    conn = await Connection.open(address, "agent")
    for i, id in enumerate(ids):
        await conn.send({"type": "register", "id": id, "heartbeat_interval_ms": 60000, "ref": i})
    seen = 0
    while seen < len(ids):
        frame = await conn.recv()
        assert frame is not None and frame["type"] == "registered", frame
        seen += 1
    return conn


def test_a_snapshot_then_every_event_once_across_a_lost_connection(server) -> None:
    async def main() -> None:
        before = await register(server.address, ["m-0"])
        monitor = AsyncMonitor(server.address, topics=["agents"])
        items = monitor.__aiter__()
        first = await asyncio.wait_for(items.__anext__(), 20)
        assert isinstance(first, Snapshot), first
        assert [a["id"] for a in first.agents] == ["m-0"]
        agents = await register(server.address, ["m-1", "m-2"])
        got: List[FleetEvent] = []
        while len(got) < 2:
            item = await asyncio.wait_for(items.__anext__(), 20)
            if isinstance(item, FleetEvent):
                got.append(item)
        # The connection drops; events happen meanwhile; nothing is missed or doubled.
        monitor.drop_connection()
        more = await register(server.address, ["m-3", "m-4", "m-5"])
        dropped = False
        while len(got) < 5:
            item = await asyncio.wait_for(items.__anext__(), 20)
            if isinstance(item, Disconnected):
                dropped = True
            elif isinstance(item, FleetEvent):
                got.append(item)
        assert dropped, "the lost connection is said"
        seqs = [e.seq for e in got]
        assert seqs == list(range(first.seq + 1, first.seq + 6)), seqs
        assert [e.frame["agent"] for e in got] == ["m-1", "m-2", "m-3", "m-4", "m-5"]
        assert all(e.kind == "registered" for e in got)
        monitor.close()
        for c in (before, agents, more):
            c.close()

    asyncio.run(main())
