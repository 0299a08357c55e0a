"""Clients for vigil, the supervision runtime for fleets of agents (protocol v1).

- :class:`AsyncAgentClient`: agents registered and beating from an asyncio program.
- :class:`Connection`: one connection after the handshake, for monitors and scripts.
"""

from .agent import PROGRESS_STEP, AgentSpec, AsyncAgentClient
from .connection import PROTOCOL, Connection, Tls, VigilError
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

__all__ = [
    "AgentSpec",
    "AsyncAgentClient",
    "Connected",
    "Connection",
    "Deregistered",
    "Disconnected",
    "Event",
    "Evicted",
    "PROGRESS_STEP",
    "PROTOCOL",
    "RateLimited",
    "Registered",
    "Rejected",
    "Tls",
    "VigilError",
]
__version__ = "0.1.0"
