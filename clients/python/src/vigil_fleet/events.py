"""What happens to a client's agents and connection, as typed events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class Connected:
    """The client connected (or connected again) and said hello."""

    address: str
    session: Optional[str]
    reconnect: bool


@dataclass(frozen=True)
class Registered:
    """The server registered an agent (durably); it is supervised now."""

    id: str
    incarnation: int
    heartbeat_interval_ms: int


@dataclass(frozen=True)
class Evicted:
    """The connection lost an agent: ``taken_over`` by another connection, or ``evicted`` by
    an operator. The client forgets it (it does not register it again)."""

    id: str
    reason: str


@dataclass(frozen=True)
class Deregistered:
    """An agent left at the client's request."""

    id: str


@dataclass(frozen=True)
class Rejected:
    """The server refused a frame (``code`` is the protocol's error code; ``id`` the agent it
    concerned, when known)."""

    code: str
    message: str
    id: Optional[str] = None


@dataclass(frozen=True)
class RateLimited:
    """The connection sent faster than its rate limit; the client slows down by itself."""

    message: str


@dataclass(frozen=True)
class Disconnected:
    """The connection was lost or could not be made; the client tries again in ``retry_in``
    seconds."""

    error: str
    retry_in: float


Event = Union[Connected, Registered, Evicted, Deregistered, Rejected, RateLimited, Disconnected]
