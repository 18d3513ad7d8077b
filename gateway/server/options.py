"""What the built-in server is told: its options, and whom it tells of a shutdown."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["FD_RESERVE", "Draining", "ServerOptions", "default_max_connections"]

FD_RESERVE = 64  # open files kept for all but client connections (files, stores, listeners)


def default_max_connections() -> int:
    """Half of the open-file limit that FD_RESERVE leaves: a client connection may need
    an upstream connection too (docs/reliability.md R7)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, (soft - FD_RESERVE) // 2)


@dataclass(frozen=True)
class ServerOptions:
    keep_alive_timeout_s: float = 10.0  # idle connection, and the arrival of a request head
    graceful_timeout_s: float = 30.0  # in-flight requests at shutdown
    max_head_bytes: int = 16 * 1024  # request line + headers (docs/reliability.md R8)
    backlog: int = 1024
    send_timeout_s: float = 60.0  # a write that cannot progress this long: the client is gone
    body_timeout_s: float = 30.0  # a whole request body, from the app's first read (R9)
    max_connections: int = field(default_factory=default_max_connections)  # R7
    drain_delay_s: float = 0.0  # SIGTERM: still accepting this long, with readiness off (R10)
    server_header: str = (
        ""  # the `server` header of every response ("": none), e.g. "gateway/0.1.0"
    )


class Draining(Protocol):
    """What the app hears of a shutdown besides the ASGI lifespan, which comes only
    after the last connection: the two moments it can still act on (R10)."""

    def drain_started(self) -> None:
        """Draining has begun: say not ready from now on (before the listener closes)."""

    def grace_ended(self) -> None:
        """graceful_timeout_s is over: end what still runs now, each with a final answer
        (the server cuts what is left FINAL_WORDS_S later)."""
