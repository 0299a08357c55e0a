"""Clients for vigil, the supervision runtime for fleets of agents (protocol v1).

- :class:`AsyncAgentClient`: agents registered and beating from an asyncio program;
  :class:`AgentClient` the same for synchronous programs (a thread of its own).
- :class:`AsyncMonitor`: the fleet's events from a snapshot on, across lost connections.
- :class:`AsyncAdmin`, :class:`Admin`: admin calls for scripts.
- :class:`Connection`: one connection after the handshake.
"""

from .admin import AsyncAdmin
from .agent import PROGRESS_STEP, AgentSpec, AsyncAgentClient
from .connection import PROTOCOL, Connection, Tls, VigilError
from .monitor import AsyncMonitor, FleetEvent, Snapshot, Stats
from .sync import Admin, AgentClient
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
    "Admin",
    "AgentClient",
    "AgentSpec",
    "AsyncAdmin",
    "AsyncAgentClient",
    "AsyncMonitor",
    "FleetEvent",
    "Snapshot",
    "Stats",
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
