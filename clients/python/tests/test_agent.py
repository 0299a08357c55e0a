"""The asyncio agent client against a real `vigil serve`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional, Type

from vigil_fleet import (
    AgentSpec,
    AsyncAgentClient,
    Connected,
    Connection,
    Evicted,
    Registered,
)
from vigil_fleet.events import Event

# With the server's 500 ms grace, a beat has 750 ms to spare (it leaves 250 ms early).
INTERVAL_MS = 1000


async def admin(address: str, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
    conn = await Connection.open(address, "admin")
    try:
        await conn.send({"type": "admin", "op": op, "args": args or {}, "ref": 1})
        while True:
            frame = await conn.recv()
            assert frame is not None, "the server closed the admin connection"
            if frame.get("ref") == 1:
                assert frame["type"] == "result", frame
                return frame["data"]
    finally:
        conn.close()


async def events_of(address: str, id: str) -> List[Dict[str, Any]]:
    return await admin(address, "events", {"id": id, "limit": 1000})


async def until(what: Type[Event], client: AsyncAgentClient, timeout: float = 20.0) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        e = await client.next_event(max(0.01, deadline - time.monotonic()))
        if isinstance(e, what):
            return e


def spec(id: str) -> AgentSpec:
    return AgentSpec(id, kind="worker", heartbeat_interval_ms=INTERVAL_MS)


def test_beats_keep_an_agent_online(server) -> None:
    async def main() -> None:
        async with AsyncAgentClient(server.address, [spec("py-1")]) as client:
            reg = await until(Registered, client)
            assert (reg.id, reg.heartbeat_interval_ms) == ("py-1", INTERVAL_MS)
            # Five intervals of beats: the agent must never have been late.
            await asyncio.sleep(5 * INTERVAL_MS / 1000)
            kinds = [e["event"] for e in await events_of(server.address, "py-1")]
            assert kinds == ["registered"], kinds
            assert (await admin(server.address, "get", {"id": "py-1"}))["status"] == "online"

    asyncio.run(main())


def test_an_agent_that_stops_beating_goes_degraded_then_offline(server) -> None:
    async def main() -> None:
        client = AsyncAgentClient(server.address, [spec("py-2")])
        client.start()
        await until(Registered, client)
        await client.abandon()
        # The log holds only durable events (the status may show a change a moment before).
        deadline = time.monotonic() + 20
        steps: list = []
        while not any(to == "offline" for _, to in steps):
            assert time.monotonic() < deadline, f"not offline in time: {steps}"
            await asyncio.sleep(0.05)
            steps = [(e.get("from"), e.get("to")) for e in await events_of(server.address, "py-2") if e["event"] == "transition"]
        assert steps == [("online", "degraded"), ("degraded", "offline")], steps

    asyncio.run(main())


def test_a_takeover_from_another_connection_is_an_evicted_event(server) -> None:
    async def main() -> None:
        async with AsyncAgentClient(server.address, [spec("py-3")]) as client:
            await until(Registered, client)
            other = await Connection.open(server.address, "agent")
            await other.send({"type": "register", "id": "py-3", "takeover": True, "ref": 1})
            ev = await until(Evicted, client)
            assert (ev.id, ev.reason) == ("py-3", "taken_over")
            other.close()

    asyncio.run(main())


def test_reports_are_coalesced_and_recorded_once(server) -> None:
    async def main() -> None:
        async with AsyncAgentClient(server.address, [spec("py-4")]) as client:
            await until(Registered, client)
            for _ in range(3):
                client.activity("py-4", "working")
            client.job("py-4", "j1", "running", progress=0.5)
            client.job("py-4", "j1", "running", progress=0.501)  # below the step: not sent
            client.job("py-4", "j1", "completed", progress=1.0)
            deadline = time.monotonic() + 20
            while True:
                evs = await events_of(server.address, "py-4")
                if any(e["event"] == "job" and e.get("to") == "completed" for e in evs):
                    break
                assert time.monotonic() < deadline, evs
                await asyncio.sleep(0.05)
            activity = [e["to"] for e in evs if e["event"] == "activity"]
            assert activity == ["working"], activity
            jobs = [(e["job"], e["to"]) for e in evs if e["event"] == "job"]
            assert jobs.count(("j1", "completed")) == 1, jobs
            assert jobs[0] == ("j1", "running"), jobs

    asyncio.run(main())


def test_a_server_restart_is_survived_without_a_transition(server) -> None:
    async def main() -> None:
        async with AsyncAgentClient(server.address, [spec("py-5")]) as client:
            first = await until(Registered, client)
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            await asyncio.get_running_loop().run_in_executor(None, server.start)
            again = await until(Registered, client)
            assert again.incarnation == first.incarnation + 1
            await asyncio.sleep(5 * INTERVAL_MS / 1000)
            kinds = [e["event"] for e in await events_of(server.address, "py-5")]
            assert kinds == ["registered", "registered"], kinds

    asyncio.run(main())


def test_stop_deregisters(server) -> None:
    async def main() -> None:
        client = AsyncAgentClient(server.address, [spec("py-6")])
        client.start()
        ev = await until(Connected, client)
        assert not ev.reconnect
        await until(Registered, client)
        await client.stop()
        assert (await admin(server.address, "get", {"id": "py-6"}))["status"] == "left"

    asyncio.run(main())


def test_tls_with_a_ca_file_and_a_server_name(tls_server) -> None:
    from conftest import TLS_DIR
    from vigil_fleet import Tls

    async def main() -> None:
        tls = Tls(ca_file=str(TLS_DIR / "ca.pem"), server_name="localhost")
        async with AsyncAgentClient(tls_server.address, [spec("tls-1")], tls=tls) as client:
            assert (await until(Registered, client)).id == "tls-1"
        # Without the CA the certificate is not trusted: the client says so and tries again.
        plain = AsyncAgentClient(tls_server.address, [spec("tls-2")], tls=Tls(server_name="localhost"))
        plain.start()
        from vigil_fleet import Disconnected

        seen = await until(Disconnected, plain)
        assert "CERTIFICATE" in seen.error.upper(), seen.error
        await plain.abandon()

    asyncio.run(main())
