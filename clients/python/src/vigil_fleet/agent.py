"""Agents kept registered and beating by an asyncio task: :class:`AsyncAgentClient`.

Heartbeat timing: the server counts a beat as missed when none arrived within the agent's
interval. A client that beat exactly every interval would be late whenever the network or
either scheduler hiccups, so each agent beats every ``interval × beat_ratio`` (0.75), each
period drawn with ±``jitter`` (10%) so that agents started together spread out; the first
beat comes within a quarter period of the registration.

After a lost connection the client connects again (the addresses in turn, exponential
backoff with full jitter) and registers its agents again with ``takeover``, so a half-open
old connection cannot keep them.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

from .connection import Connection, Tls, VigilError, backoff
from .events import (
    Connected,
    Deregistered,
    Disconnected,
    Event,
    Evicted,
    RateLimited,
    Registered,
    Rejected,
)

#: Progress reports closer than this to the last one sent are not sent (the server's step).
PROGRESS_STEP = 0.01
#: Codes after which connecting again cannot help.
_FATAL = {"unauthorized", "unsupported_protocol", "forbidden"}


@dataclass
class AgentSpec:
    """One agent: its id (1-128 of ``A-Za-z0-9._:-``) and what it registers with."""

    id: str
    name: Optional[str] = None
    kind: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    capabilities: List[str] = field(default_factory=list)
    heartbeat_interval_ms: Optional[int] = None

    def register_frame(self, takeover: bool) -> Dict[str, Any]:
        f: Dict[str, Any] = {"type": "register", "id": self.id, "ref": f"register:{self.id}"}
        if self.name is not None:
            f["name"] = self.name
        if self.kind is not None:
            f["kind"] = self.kind
        if self.metadata:
            f["metadata"] = dict(self.metadata)
        if self.capabilities:
            f["capabilities"] = list(self.capabilities)
        if self.heartbeat_interval_ms is not None:
            f["heartbeat_interval_ms"] = self.heartbeat_interval_ms
        if takeover:
            f["takeover"] = True
        return f


@dataclass
class _Agent:
    spec: AgentSpec
    interval: float = 0.0
    next_beat: Optional[float] = None  # loop time; None until registered
    health: str = "healthy"
    metrics: Optional[Dict[str, float]] = None
    activity: Optional[tuple] = None  # (activity, detail) wanted
    activity_sent: Optional[tuple] = None
    jobs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # job -> last frame sent
    jobs_pending: List[Dict[str, Any]] = field(default_factory=list)  # in order


class AsyncAgentClient:
    """Keeps any number of agents registered and beating on one connection.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`::

        async with AsyncAgentClient("127.0.0.1:7400", [AgentSpec("worker-1", kind="worker")]) as c:
            async for event in c.events():
                ...
    """

    def __init__(
        self,
        addresses: Union[str, Sequence[str]],
        agents: Sequence[AgentSpec] = (),
        *,
        token: Optional[str] = None,
        tls: Optional[Tls] = None,
        client_name: str = "vigil-fleet-py/0.1",
        takeover: bool = False,
        beat_ratio: float = 0.75,
        jitter: float = 0.1,
        backoff_min: float = 0.1,
        backoff_max: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self._addresses:
            raise ValueError("no server address")
        self._agents: Dict[str, _Agent] = {a.id: _Agent(a) for a in agents}
        self._token, self._tls, self._client_name = token, tls, client_name
        self._takeover = takeover
        self._beat_ratio, self._jitter = beat_ratio, jitter
        self._backoff_min, self._backoff_max = backoff_min, backoff_max
        self._connect_timeout = connect_timeout
        self._events: "asyncio.Queue[Event]" = asyncio.Queue()
        self._wake = asyncio.Event()
        self._conn: Optional[Connection] = None
        self._registered: set = set()
        self._stopping = False
        self._abandoned = False
        self._task: Optional["asyncio.Task[None]"] = None
        self._next_address = 0

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout: float = 5.0) -> None:
        """Deregisters every agent (waiting at most ``timeout`` for the server's answers) and
        closes the connection."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def abandon(self) -> None:
        """Stops at once, as if the process had died: nothing is deregistered, the server's
        deadlines for the agents run on."""
        self._abandoned = self._stopping = True
        if self._conn is not None:
            self._conn.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> "AsyncAgentClient":
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the caller sees and says ------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """What happens, as it happens (ends when the client has stopped and every event has
        been taken)."""
        while True:
            if self._task is not None and self._task.done() and self._events.empty():
                return
            try:
                yield await asyncio.wait_for(self._events.get(), 0.2)
            except asyncio.TimeoutError:
                continue

    async def next_event(self, timeout: Optional[float] = None) -> Event:
        """The next event; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self._events.get(), timeout)

    def add(self, spec: AgentSpec) -> None:
        """Adds an agent; it is registered at once when connected."""
        if spec.id not in self._agents:
            self._agents[spec.id] = _Agent(spec)
            self._wake.set()

    def health(self, id: str, status: str = "healthy", metrics: Optional[Dict[str, float]] = None) -> None:
        """What the agent's next heartbeats report: ``healthy``, ``degraded`` or ``unhealthy``,
        and metrics."""
        a = self._agents[id]
        a.health, a.metrics = status, metrics

    def activity(self, id: str, activity: str, detail: Optional[str] = None) -> None:
        """Reports what the agent is doing (``idle``, ``working``, ``tool_calling``, ``error``,
        ``completed`` or another short string). The same activity again sends nothing."""
        a = self._agents[id]
        if a.activity != (activity, detail):
            a.activity = (activity, detail)
            self._wake.set()

    def job(
        self,
        id: str,
        job: str,
        state: str,
        *,
        progress: Optional[float] = None,
        result: Any = None,
        error: Optional[str] = None,
    ) -> None:
        """Reports a job's state (``submitted``, ``assigned``, ``running``, ``completed``,
        ``failed``) and progress (0..1). Progress that moved less than 0.01 since the last
        report of the same state sends nothing (unless it reaches 1)."""
        a = self._agents[id]
        frame: Dict[str, Any] = {"type": "job", "id": id, "job": job, "state": state}
        if progress is not None:
            frame["progress"] = max(0.0, min(1.0, float(progress)))
        if result is not None:
            frame["result"] = result
        if error is not None:
            frame["error"] = error
        pending = [f for f in a.jobs_pending if f["job"] == job]
        last = pending[-1] if pending else a.jobs.get(job)
        same_state = last is not None and last.get("state") == state and result is None and error is None
        if same_state:
            assert last is not None
            p0, p1 = last.get("progress"), frame.get("progress")
            if p0 == p1 or (
                p0 is not None and p1 is not None and abs(p1 - p0) < PROGRESS_STEP and p1 < 1.0
            ):
                return
        if same_state and pending:
            # Only the progress moved: the newer report replaces the one not yet sent.
            a.jobs_pending[a.jobs_pending.index(pending[-1])] = frame
        else:
            # A change of state is always sent, in order.
            a.jobs_pending.append(frame)
        self._wake.set()

    # -- the task ---------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.put_nowait(event)

    def _period(self, a: _Agent) -> float:
        return a.interval * self._beat_ratio * random.uniform(1 - self._jitter, 1 + self._jitter)

    async def _connect(self) -> Connection:
        error: BaseException = OSError("no address tried")
        for _ in range(len(self._addresses)):
            address = self._addresses[self._next_address % len(self._addresses)]
            self._next_address += 1
            try:
                return await Connection.open(
                    address,
                    "agent",
                    token=self._token,
                    tls=self._tls,
                    client=self._client_name,
                    timeout=self._connect_timeout,
                )
            except VigilError as e:
                if e.code in _FATAL:
                    raise
                error = e
            except (OSError, asyncio.TimeoutError) as e:
                error = e
        raise error

    async def _run(self) -> None:
        attempt, connected_before = 0, False
        while not self._stopping:
            try:
                conn = await self._connect()
            except VigilError as e:
                if e.code in _FATAL:
                    self._emit(Rejected(e.code, e.message))
                    return
                error = str(e)
            except (OSError, asyncio.TimeoutError) as e:
                error = f"{type(e).__name__}: {e}"
            else:
                self._emit(Connected(conn.address, conn.welcome.get("session"), connected_before))
                takeover = connected_before or self._takeover
                connected_before = True
                try:
                    if await self._session(conn, takeover):
                        return
                    attempt = 0
                    error = "the server closed the connection"
                except (OSError, VigilError) as e:
                    error = str(e)
                finally:
                    conn.close()
                    await conn.wait_closed()
            if self._stopping:
                return
            delay = backoff(attempt, self._backoff_min, self._backoff_max)
            attempt += 1
            self._emit(Disconnected(error, delay))
            try:
                await asyncio.wait_for(self._wait_stop(), delay)
                return
            except asyncio.TimeoutError:
                pass

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _session(self, conn: Connection, takeover: bool) -> bool:
        """Registers the agents and beats until the connection is lost (False) or the client
        has stopped (True)."""
        self._conn = conn
        self._registered = set()
        sent_register: set = set()
        for a in self._agents.values():
            a.next_beat, a.activity_sent = None, None
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(conn))
        waiter: Optional["asyncio.Task[Any]"] = None
        deregistering = False
        try:
            while True:
                # Cleared before the work: a report made during it wakes the wait below.
                self._wake.clear()
                if reader.done():
                    return reader.result()
                if not deregistering:
                    if not self._stopping:
                        for a in list(self._agents.values()):
                            if a.spec.id not in sent_register:
                                sent_register.add(a.spec.id)
                                await conn.send(a.spec.register_frame(takeover))
                    now = loop.time()
                    for a in list(self._agents.values()):
                        if a.spec.id not in self._registered:
                            continue
                        if not self._stopping and a.next_beat is not None and a.next_beat <= now:
                            beat: Dict[str, Any] = {"type": "heartbeat", "id": a.spec.id}
                            if a.health != "healthy":
                                beat["status"] = a.health
                            if a.metrics:
                                beat["metrics"] = a.metrics
                            await conn.send(beat)
                            a.next_beat = now + self._period(a)
                        # Reports go out before a stop's deregistration: the last ones count.
                        if a.activity is not None and a.activity != a.activity_sent:
                            f: Dict[str, Any] = {"type": "activity", "id": a.spec.id, "activity": a.activity[0]}
                            if a.activity[1] is not None:
                                f["detail"] = a.activity[1]
                            await conn.send(f)
                            a.activity_sent = a.activity
                        while a.jobs_pending:
                            frame = a.jobs_pending.pop(0)
                            await conn.send(frame)
                            a.jobs[frame["job"]] = frame
                if self._stopping and not deregistering:
                    deregistering = True
                    for id in list(self._registered):
                        await conn.send({"type": "deregister", "id": id})
                    if not self._registered:
                        return True
                waits = [a.next_beat for a in self._agents.values() if a.next_beat is not None]
                timeout = max(0.0, min(waits) - loop.time()) if waits else 1.0
                if waiter is None or waiter.done():
                    waiter = loop.create_task(self._wake.wait())
                await asyncio.wait([reader, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._conn = None
            if waiter is not None and not waiter.done():
                waiter.cancel()
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, conn: Connection) -> bool:
        """Takes the server's frames; returns when the connection ends (True: the client is
        done, every agent deregistered)."""
        loop = asyncio.get_running_loop()
        while True:
            frame = await conn.recv()
            if frame is None:
                return self._stopping and not self._registered
            kind, id = frame.get("type"), frame.get("id")
            if kind == "registered" and id in self._agents:
                a = self._agents[id]
                a.interval = max(0.001, int(frame.get("heartbeat_interval_ms", 1000)) / 1000)
                a.next_beat = loop.time() + self._period(a) / 4
                self._registered.add(id)
                self._emit(Registered(id, int(frame.get("incarnation", 0)), int(frame.get("heartbeat_interval_ms", 0))))
            elif kind == "evicted":
                self._agents.pop(id, None)
                self._registered.discard(id)
                self._emit(Evicted(str(id), str(frame.get("reason"))))
            elif kind == "deregistered":
                self._registered.discard(id)
                self._agents.pop(id, None)
                self._emit(Deregistered(str(id)))
                if self._stopping and not self._registered:
                    return True
            elif kind == "error":
                code, message = str(frame.get("code")), str(frame.get("message"))
                ref = frame.get("ref")
                agent = ref[len("register:"):] if isinstance(ref, str) and ref.startswith("register:") else None
                if code == "rate_limited":
                    self._emit(RateLimited(message))
                else:
                    if agent is not None:
                        # Refused registration: the agent is not supervised by this client.
                        self._agents.pop(agent, None)
                    self._emit(Rejected(code, message, agent))
            self._wake.set()
