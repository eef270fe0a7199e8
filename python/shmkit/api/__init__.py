"""A VPP-style binary API over shared memory.

A data plane (:class:`Server`) and its control planes (:class:`Client`) exchange typed
messages through queues and message rings in one region: client registration with epoch
handles, keepalive pings with a dead-client reaper (plus immediate death detection with
pidfds), server restart recovery, a message table with CRCs, and an API trace.
"""

from __future__ import annotations

from shmkit.api.aio import AsyncClient
from shmkit.api.client import (
    Client,
    ConnectionDamagedError,
    ServerGoneError,
    ServerRestartedError,
    UnknownMessageError,
)
from shmkit.api.handle import Handle
from shmkit.api.messages import Message, MessageError, define, struct_type
from shmkit.api.server import ClientInfo, Server, ServerRunningError
from shmkit.api.show import NotAnApiError
from shmkit.api.sockclient import SockClient
from shmkit.api.trace import Trace

__all__ = [
    "AsyncClient",
    "Client",
    "ClientInfo",
    "ConnectionDamagedError",
    "Handle",
    "Message",
    "MessageError",
    "NotAnApiError",
    "Server",
    "ServerGoneError",
    "ServerRestartedError",
    "ServerRunningError",
    "SockClient",
    "Trace",
    "UnknownMessageError",
    "define",
    "struct_type",
]
