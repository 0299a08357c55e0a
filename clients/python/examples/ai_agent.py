"""An "AI agent" loop: one agent that reports what it is doing and a job with progress.

    python clients/python/examples/ai_agent.py 127.0.0.1:7400

(with `vigil serve` running; watch it with `vigil watch`).
"""

import asyncio
import sys

from vigil_fleet import AgentSpec, AsyncAgentClient, Registered


async def main(address: str) -> None:
    spec = AgentSpec("research-agent-1", kind="llm-agent", name="Research agent",
                     capabilities=["search", "summarize"], heartbeat_interval_ms=5000)
    async with AsyncAgentClient(address, [spec]) as client:
        async for event in client.events():
            print(event)
            if isinstance(event, Registered):
                break
        for task in range(3):
            job = f"task-{task}"
            client.activity(spec.id, "working", detail=f"planning {job}")
            client.job(spec.id, job, "running", progress=0.0)
            for step in range(1, 11):
                client.activity(spec.id, "tool_calling", detail="search")
                await asyncio.sleep(0.3)  # the model or the tool at work
                client.job(spec.id, job, "running", progress=step / 10)
            client.job(spec.id, job, "completed", progress=1.0)
        client.activity(spec.id, "idle")
        await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400"))
