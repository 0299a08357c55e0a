"""Watching the fleet: :class:`AsyncMonitor`, a subscription that survives lost connections.

The monitor starts with a snapshot (or from a seq you give), then yields every event after it,
in seq order. It remembers the last seq it yielded: after a lost connection it connects again
and subscribes ``since`` that seq, so nothing is missed and nothing comes twice; ``lagged``
resumes the same way; ``resync_required`` (the events it missed are gone) starts again from a
snapshot, which it yields.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

from .connection import Connection, Tls, VigilError, backoff
from .events import Disconnected


@dataclass(frozen=True)
class Snapshot:
    """The fleet as of event ``seq``: every agent the filter selects, the unfinished jobs,
    the latest counts."""

    seq: int
    agents: List[Dict[str, Any]]
    jobs: List[Dict[str, Any]]
    stats: Dict[str, Any]


@dataclass(frozen=True)
class FleetEvent:
    """One event of the log (``frame`` as the server sent it: ``event``, ``agent``, ...)."""

    seq: int
    frame: Dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.frame.get("event"))


@dataclass(frozen=True)
class Stats:
    """The fleet's counts (topic ``stats``)."""

    frame: Dict[str, Any]


Item = Union[Snapshot, FleetEvent, Stats, Disconnected]

_FATAL = {"unauthorized", "unsupported_protocol", "forbidden", "invalid_field", "missing_field"}


class AsyncMonitor:
    """Iterate over it (``async for item in monitor``) to watch the fleet."""

    def __init__(
        self,
        addresses: Union[str, Sequence[str]],
        *,
        topics: Optional[Sequence[str]] = None,
        kinds: Sequence[str] = (),
        ids: Sequence[str] = (),
        statuses: Sequence[str] = (),
        since: Optional[int] = None,
        token: Optional[str] = None,
        tls: Optional[Tls] = None,
        client_name: str = "vigil-fleet-py/0.1",
        backoff_min: float = 0.1,
        backoff_max: float = 30.0,
    ) -> None:
        self._addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self._topics = list(topics) if topics is not None else None
        self._filter = {"kinds": list(kinds), "ids": list(ids), "statuses": list(statuses)}
        self.last_seq: Optional[int] = since
        self._token, self._tls, self._client_name = token, tls, client_name
        self._backoff_min, self._backoff_max = backoff_min, backoff_max
        self._conn: Optional[Connection] = None
        self._closed = False
        self._ref = 0

    def close(self) -> None:
        """Ends the iteration (and the connection)."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()

    def drop_connection(self) -> None:
        """Closes the connection as a network failure would (the monitor connects again)."""
        if self._conn is not None:
            self._conn.close()

    async def _subscribe(self, conn: Connection) -> None:
        self._ref += 1
        frame: Dict[str, Any] = {"type": "subscribe", "filter": self._filter, "ref": self._ref}
        if self._topics is not None:
            frame["topics"] = self._topics
        if self.last_seq is None:
            frame["snapshot"] = True
        else:
            frame["since"] = self.last_seq
        await conn.send(frame)

    async def __aiter__(self) -> AsyncIterator[Item]:
        attempt, n = 0, 0
        while not self._closed:
            address = self._addresses[n % len(self._addresses)]
            n += 1
            error = ""
            try:
                conn = await Connection.open(
                    address, "monitor", token=self._token, tls=self._tls, client=self._client_name
                )
            except VigilError as e:
                if e.code in _FATAL:
                    raise
                error = str(e)
            except (OSError, asyncio.TimeoutError) as e:
                error = f"{type(e).__name__}: {e}"
            else:
                self._conn = conn
                try:
                    await self._subscribe(conn)
                    while True:
                        frame = await conn.recv()
                        if frame is None:
                            error = "the server closed the connection"
                            break
                        kind = frame.get("type")
                        if kind == "ack" and frame.get("ref") == self._ref:
                            attempt = 0
                        elif kind == "snapshot":
                            self.last_seq = int(frame["seq"])
                            yield Snapshot(self.last_seq, frame.get("agents", []), frame.get("jobs", []), frame.get("stats", {}))
                        elif kind == "event":
                            seq = int(frame["seq"])
                            if self.last_seq is not None and seq <= self.last_seq:
                                continue  # yielded already
                            self.last_seq = seq
                            yield FleetEvent(seq, frame)
                        elif kind == "stats":
                            yield Stats(frame)
                        elif kind == "lagged":
                            if self.last_seq is None:
                                self.last_seq = int(frame.get("last_seq", 0))
                            await self._subscribe(conn)
                        elif kind == "resync_required":
                            self.last_seq = None
                            await self._subscribe(conn)
                        elif kind == "error" and frame.get("ref") == self._ref:
                            code, message = str(frame.get("code")), str(frame.get("message"))
                            if code in _FATAL:
                                raise VigilError(code, message)
                            error = f"subscribe refused: {code}: {message}"
                            break
                except (OSError, VigilError) as e:
                    if isinstance(e, VigilError) and e.code in _FATAL:
                        raise
                    error = str(e)
                finally:
                    self._conn = None
                    conn.close()
                    await conn.wait_closed()
            if self._closed:
                return
            delay = backoff(attempt, self._backoff_min, self._backoff_max)
            attempt += 1
            yield Disconnected(error, delay)
            await asyncio.sleep(delay)
