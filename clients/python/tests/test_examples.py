"""The examples run as a user would run them, against a real `vigil serve`, and what they
report is recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vigil_fleet import Admin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(example: str, address: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent / "src"))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / example), address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_the_sync_worker_example(server) -> None:
    run("sync_worker.py", server.address)
    events = Admin(server.address).events("sync-worker-1")
    completed = [e["job"] for e in events if e["event"] == "job" and e["to"] == "completed"]
    assert completed == [f"job-{n}" for n in range(5)], events
    assert events[-1]["event"] == "deregistered"


def test_the_ai_agent_example(server) -> None:
    run("ai_agent.py", server.address)
    events = Admin(server.address).events("research-agent-1")
    completed = [e["job"] for e in events if e["event"] == "job" and e["to"] == "completed"]
    assert completed == ["task-0", "task-1", "task-2"], events
    activities = [e["to"] for e in events if e["event"] == "activity"]
    assert "tool_calling" in activities and activities[-1] == "idle", activities
