"""A synchronous worker: no asyncio in sight. It takes jobs from a list and reports them.

    python clients/python/examples/sync_worker.py 127.0.0.1:7400
"""

import sys
import time

from vigil_fleet import AgentClient, AgentSpec, Registered


def main(address: str) -> None:
    client = AgentClient(address, [AgentSpec("sync-worker-1", kind="worker", heartbeat_interval_ms=5000)])
    client.start()
    while not isinstance(client.next_event(timeout=30), Registered):
        pass
    for n in range(5):
        job = f"job-{n}"
        client.job("sync-worker-1", job, "running", progress=0.0)
        client.activity("sync-worker-1", "working", detail=job)
        time.sleep(0.5)  # the work
        client.job("sync-worker-1", job, "completed", progress=1.0)
    client.activity("sync-worker-1", "idle")
    client.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400")
