"""The thread-based agent client and the admin calls, against a real `vigil serve`."""

from __future__ import annotations

import queue
import time

import pytest

from vigil_fleet import Admin, AgentClient, AgentSpec, Evicted, Registered, VigilError


def next_of(client: AgentClient, kind: type, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            e = client.next_event(max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {kind.__name__} within {timeout} s")
        if isinstance(e, kind):
            return e


def test_a_synchronous_worker_registers_reports_and_is_evicted_by_an_operator(server) -> None:
    admin = Admin(server.address)
    client = AgentClient(server.address, [AgentSpec("sync-1", kind="worker", heartbeat_interval_ms=1000)])
    client.start()
    try:
        assert next_of(client, Registered).id == "sync-1"
        client.activity("sync-1", "working", detail="batch 7")
        deadline = time.monotonic() + 20
        while admin.get("sync-1").get("activity") != "working":
            assert time.monotonic() < deadline, admin.get("sync-1")
            time.sleep(0.05)
        assert [a["id"] for a in admin.list(kind="worker")] == ["sync-1"]
        admin.maintenance("sync-1", True)
        assert admin.get("sync-1")["status"] == "maintenance"
        admin.maintenance("sync-1", False)
        admin.evict("sync-1", reason="decommissioned")
        ev = next_of(client, Evicted)
        assert (ev.id, ev.reason) == ("sync-1", "evicted")
        assert admin.get("sync-1")["status"] == "left"
        kinds = [e["event"] for e in admin.events("sync-1")]
        assert kinds[0] == "registered" and kinds[-1] == "deregistered", kinds
    finally:
        client.stop()


def test_an_admin_refusal_carries_the_protocol_code(server) -> None:
    with pytest.raises(VigilError) as refused:
        Admin(server.address).get("nobody")
    assert refused.value.code == "unknown_agent"
