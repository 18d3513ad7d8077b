"""What every upstream transport provides.

A transport only does I/O: it opens one HTTP exchange and hands back the status,
the headers and the body piece by piece. Deadlines and translation belong to
`relay.Relay`, retries to the routing chain (`chain.py`). A transport raises only
gateway errors; a broken connection is an `UpstreamConnectionError` that says whether
the whole request had been sent, and a connect timeout an `UpstreamConnectTimeout`:
what may be retried depends on it (docs/reliability.md R1).

Implementations: `h11_pool.H11Transport` (the default: a lean HTTP/1.1 pool on trio),
`httpx_transport.HttpxTransport` (httpx: honours proxy environment variables) and
`local.LocalTransport` (the in-process mock).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from gateway.errors import InternalError
from gateway.providers.base import CallContext, UpstreamRequest

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # lower-case names

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        ...


class Transport(Protocol):
    def open(
        self, req: UpstreamRequest, ctx: CallContext
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """One exchange; leaving the context closes or recycles its connection."""
        ...

    async def aclose(self) -> None: ...

    def prune_idle(self) -> None:
        """Close pooled connections that have been idle too long or that the server
        closed; called on a timer (gateway/state.py), not only when the pool is used."""
        ...

    def connections(self) -> tuple[int, int] | None:
        """(busy, idle) pooled connections now, for the metrics; None if not known."""
        ...


def out_of_resources(error: BaseException) -> InternalError | None:
    """The gateway's own failure if `error`, or anything that caused it, is this process
    running out of file descriptors or memory (EMFILE when connecting upstream, say):
    a 500 of ours, not the upstream's 502 (docs/reliability.md R7). None otherwise."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in OUT_OF_RESOURCES:
            return InternalError(
                "The gateway is out of resources (open files or memory); retry shortly.",
                code="out_of_resources",
            )
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return None
