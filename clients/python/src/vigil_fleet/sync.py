"""For programs without asyncio: :class:`AgentClient` runs an :class:`AsyncAgentClient` on an
event loop in a thread of its own, and :class:`Admin` makes one admin call per method."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .admin import AsyncAdmin
from .agent import AgentSpec, AsyncAgentClient
from .connection import Tls
from .events import Event


class AgentClient:
    """The agent client for synchronous programs (workers, scripts)::

        client = AgentClient("127.0.0.1:7400", [AgentSpec("worker-1", kind="worker")])
        client.start()
        client.activity("worker-1", "working")
        ...
        client.stop()

    Every method may be called from any thread. It takes the arguments of
    :class:`AsyncAgentClient`.
    """

    def __init__(
        self,
        addresses: Union[str, Sequence[str]],
        agents: Sequence[AgentSpec] = (),
        **options: Any,
    ) -> None:
        self._args = (addresses, list(agents))
        self._options = options
        self._events: "queue.Queue[Event]" = queue.Queue()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Optional[AsyncAgentClient] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._done: Optional[asyncio.Event] = None

    def start(self) -> None:
        """Starts the client's thread; returns once it runs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="vigil-agent-client", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._client = AsyncAgentClient(*self._args, **self._options)
        self._client.start()
        self._ready.set()
        forward = asyncio.get_running_loop().create_task(self._forward())
        await self._done.wait()
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)

    async def _forward(self) -> None:
        assert self._client is not None
        while True:
            self._events.put(await self._client.next_event())

    def _call(self, f: Callable[[AsyncAgentClient], None]) -> None:
        if self._loop is None or self._client is None:
            raise RuntimeError("the client is not started")
        client = self._client
        self._loop.call_soon_threadsafe(f, client)

    def add(self, spec: AgentSpec) -> None:
        """Adds an agent (registered at once when connected)."""
        self._call(lambda c: c.add(spec))

    def activity(self, id: str, activity: str, detail: Optional[str] = None) -> None:
        """As :meth:`AsyncAgentClient.activity`."""
        self._call(lambda c: c.activity(id, activity, detail))

    def job(self, id: str, job: str, state: str, **fields: Any) -> None:
        """As :meth:`AsyncAgentClient.job`."""
        self._call(lambda c: c.job(id, job, state, **fields))

    def health(self, id: str, status: str = "healthy", metrics: Optional[Dict[str, float]] = None) -> None:
        """As :meth:`AsyncAgentClient.health`."""
        self._call(lambda c: c.health(id, status, metrics))

    def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next event; ``queue.Empty`` after ``timeout`` seconds."""
        return self._events.get(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Deregisters every agent and stops the thread."""
        if self._loop is None or self._client is None or self._thread is None:
            return
        client, done = self._client, self._done
        assert done is not None

        async def stop() -> None:
            await client.stop(timeout)
            done.set()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout + 5)
        self._thread.join(timeout + 5)


class Admin:
    """Admin calls for scripts, one connection per call::

        Admin("127.0.0.1:7400", token="…").evict("worker-7", reason="decommissioned")
    """

    def __init__(self, address: str, *, token: Optional[str] = None, tls: Optional[Tls] = None) -> None:
        self._admin = AsyncAdmin(address, token=token, tls=tls)

    def call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """Any admin operation; returns its ``data``."""
        return asyncio.run(self._admin.call(op, args))

    def list(self, **filters: Any) -> List[Dict[str, Any]]:
        return asyncio.run(self._admin.list(**filters))

    def get(self, id: str) -> Dict[str, Any]:
        return asyncio.run(self._admin.get(id))

    def events(self, id: Optional[str] = None, since: Optional[int] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        return asyncio.run(self._admin.events(id, since, limit))

    def evict(self, id: str, reason: Optional[str] = None) -> Dict[str, Any]:
        return asyncio.run(self._admin.evict(id, reason))

    def set_status(self, id: str, status: str, reason: Optional[str] = None) -> Dict[str, Any]:
        return asyncio.run(self._admin.set_status(id, status, reason))

    def maintenance(self, id: str, on: bool) -> Dict[str, Any]:
        return asyncio.run(self._admin.maintenance(id, on))
