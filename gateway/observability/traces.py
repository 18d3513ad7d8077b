"""Spans: one per request, a child per upstream attempt; a no-op unless turned on.

Without `[observability] traces` (or without the `otel` extra) the tracer is
`NO_TRACER`: every request shares one do-nothing span, so the hot path pays an
attribute lookup and a method call, no allocation. The client's W3C `traceparent` is
then passed upstream as it came. With traces on, `otel.OtelTracer` makes real spans
with the OpenTelemetry GenAI semantic-convention attributes, continues the client's
trace, and sends each attempt's own `traceparent` upstream.

Pure module: no I/O.
"""

from __future__ import annotations

from typing import Protocol

from gateway.observability.record import AttemptSpan, RequestRecord, RequestSpan

__all__ = ["NO_SPAN", "NO_TRACER", "AttemptSpan", "RequestSpan", "Tracer"]


class Tracer(Protocol):
    def start(self, request: RequestRecord) -> RequestSpan:
        """The request's span (its parent is the client's `traceparent`, if any)."""
        ...

    def shutdown(self) -> None:
        """Export what is left (at the end of the worker's life)."""
        ...


class _NoSpan:
    """Shared by every request when tracing is off."""

    __slots__ = ()

    def traceparent(self) -> str | None:
        return None

    def attempt(self, request: RequestRecord, deployment: str) -> _NoSpan:
        return self

    def end(self, *args: object) -> None:
        pass


NO_SPAN = _NoSpan()


class _NoTracer:
    __slots__ = ()

    def start(self, request: RequestRecord) -> _NoSpan:
        return NO_SPAN

    def shutdown(self) -> None:
        pass


NO_TRACER = _NoTracer()
