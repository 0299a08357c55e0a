"""One connection to a vigil server: TCP or TLS, one JSON object per line, after the
``hello``/``welcome`` handshake (protocol v1, ``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

PROTOCOL = 1
#: The longest frame the client reads (the server's own frames are far smaller).
MAX_FRAME = 16 * 1024 * 1024


class VigilError(Exception):
    """The server refused (``code`` is the protocol's error code), or spoke out of turn."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Tls:
    """TLS to the server: the CA to trust (a PEM file; ``None``: the system's) and the name
    the certificate must carry (``None``: the host connected to)."""

    ca_file: Optional[str] = None
    server_name: Optional[str] = None

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def backoff(attempt: int, low: float, high: float) -> float:
    """How long to wait before try ``attempt`` + 1: exponential from ``low`` to ``high``
    seconds, with full jitter, so that clients that lost one server do not return in one wave."""
    return random.uniform(0, min(high, low * (2 ** min(attempt, 30))))


def split_address(address: str) -> Tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    return host.strip("[]"), int(port)


class Connection:
    """A connection after the handshake: ``send`` frames, ``recv`` the server's."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        welcome: Dict[str, Any],
        address: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.welcome = welcome
        self.address = address

    @classmethod
    async def open(
        cls,
        address: str,
        role: str,
        *,
        token: Optional[str] = None,
        tls: Optional[Tls] = None,
        client: str = "vigil-fleet-py/0.1",
        timeout: float = 10.0,
    ) -> "Connection":
        """Connects to ``address`` and says hello as ``role``; raises :class:`VigilError`
        when the server refuses, ``OSError`` or ``asyncio.TimeoutError`` when it cannot be
        reached in ``timeout`` seconds."""
        host, port = split_address(address)
        ctx = tls.context() if tls else None
        server_hostname = (tls.server_name or host) if tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=server_hostname, limit=MAX_FRAME
            ),
            timeout,
        )
        hello: Dict[str, Any] = {"type": "hello", "protocol": PROTOCOL, "role": role, "client": client}
        if token is not None:
            hello["token"] = token
        conn = cls(reader, writer, {}, address)
        try:
            await conn.send(hello)
            first = await asyncio.wait_for(conn.recv(), timeout)
        except BaseException:
            conn.close()
            raise
        if first is None:
            conn.close()
            raise VigilError("closed", "the server closed the connection during the handshake")
        if first.get("type") == "error":
            conn.close()
            raise VigilError(str(first.get("code")), str(first.get("message")))
        if first.get("type") != "welcome":
            conn.close()
            raise VigilError("bad_frame", f"expected welcome, got {first!r}")
        conn.welcome = first
        return conn

    async def send(self, frame: Dict[str, Any]) -> None:
        """Sends one frame (one line)."""
        self._writer.write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
        await self._writer.drain()

    async def recv(self) -> Optional[Dict[str, Any]]:
        """The next frame; ``None`` when the server closed the connection. A line that is not
        a JSON object raises :class:`VigilError` (``bad_frame``)."""
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    raise VigilError("bad_frame", "the connection closed in the middle of a frame")
                return None
            except asyncio.LimitOverrunError:
                raise VigilError("frame_too_large", f"a frame over {MAX_FRAME} bytes")
            if not line.strip():
                continue
            try:
                frame = json.loads(line)
            except ValueError:
                raise VigilError("bad_frame", f"not JSON: {line[:80]!r}")
            if not isinstance(frame, dict):
                raise VigilError("bad_frame", f"not a JSON object: {line[:80]!r}")
            return frame

    def close(self) -> None:
        """Closes the socket (without waiting)."""
        self._writer.close()

    async def wait_closed(self) -> None:
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
