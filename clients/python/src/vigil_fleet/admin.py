"""Admin operations for scripts (``docs/protocol.md``, admin role): :class:`AsyncAdmin`."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .connection import Connection, Tls, VigilError


class AsyncAdmin:
    """One admin call per method, each on a connection of its own. A refusal raises
    :class:`VigilError` with the protocol's code (``unknown_agent``, ``invalid_field``, ...)."""

    def __init__(self, address: str, *, token: Optional[str] = None, tls: Optional[Tls] = None) -> None:
        self._address, self._token, self._tls = address, token, tls

    async def call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """Any admin operation; returns its ``data``."""
        conn = await Connection.open(self._address, "admin", token=self._token, tls=self._tls)
        try:
            await conn.send({"type": "admin", "op": op, "args": args or {}, "ref": 1})
            while True:
                frame = await conn.recv()
                if frame is None:
                    raise VigilError("closed", "the server closed the connection without answering")
                if frame.get("ref") != 1 and not (frame.get("type") == "error" and "ref" not in frame):
                    continue
                if frame.get("type") == "result" and frame.get("ok", True):
                    return frame.get("data")
                raise VigilError(str(frame.get("code", "error")), str(frame.get("message", frame.get("data"))))
        finally:
            conn.close()
            await conn.wait_closed()

    async def list(self, **filters: Any) -> List[Dict[str, Any]]:
        """Agents (``kind``, ``status``, ``limit``, ``after``)."""
        return await self.call("list", filters)

    async def get(self, id: str) -> Dict[str, Any]:
        """One agent's record."""
        return await self.call("get", {"id": id})

    async def events(self, id: Optional[str] = None, since: Optional[int] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Events of the log (of one agent with ``id``) after ``since``."""
        args = {k: v for k, v in {"id": id, "since": since, "limit": limit}.items() if v is not None}
        return await self.call("events", args)

    async def evict(self, id: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Evicts an agent: its connection loses it; it is ``left``."""
        return await self.call("evict", {"id": id, **({"reason": reason} if reason else {})})

    async def set_status(self, id: str, status: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Sets an agent's status by hand."""
        return await self.call("set_status", {"id": id, "status": status, **({"reason": reason} if reason else {})})

    async def maintenance(self, id: str, on: bool) -> Dict[str, Any]:
        """Puts an agent in maintenance (its deadlines pause) or takes it out."""
        return await self.call("maintenance", {"id": id, "on": on})
