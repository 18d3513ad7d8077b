"""The start and end of each request and of each upstream attempt, for one worker.

`Observer.begin` opens a request's record (its id, its span) and makes it current;
`Observer.end`, once the last byte is out, counts it in the metrics, ends its span and
writes its access line. `Observer.attempt` (through `record.begin_attempt`, which the
relay calls once per attempt in `upstream/observed.py`) gives an attempt its span and
the headers to send upstream (`x-request-id`, `traceparent`), and counts how it ended.

Operator events that clients can cause are throttled (one line per kind every
EVENT_EVERY_S, saying how many were left out): authentication failures (the key's
public id only, never the secret) and upstream failures (deployment, status, outcome,
latency; never the upstream's body, which may echo a key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextvars import Token
from typing import Any, Final

from gateway.config import ObservabilityConfig
from gateway.observability import logs
from gateway.observability.metrics import Metrics
from gateway.observability.record import CURRENT, RequestRecord, request_id_from
from gateway.observability.traces import NO_SPAN, NO_TRACER, AttemptSpan, Tracer

QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})  # access lines at DEBUG
EVENT_EVERY_S: Final = 10.0
CLIENT_GONE: Final = 499  # nginx's status for a client that left before the response

log = logging.getLogger("gateway.events")


class Throttle:
    """At most one event per kind every `every_s` seconds."""

    __slots__ = ("_every_s", "_last", "_left_out")

    def __init__(self, every_s: float = EVENT_EVERY_S) -> None:
        self._every_s = every_s
        self._last: dict[object, float] = {}
        self._left_out: dict[object, int] = {}

    def allow(self, kind: object) -> int | None:
        """None if an event of `kind` went out within every_s (it is counted), else how
        many were left out since the last one."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return None
        if len(self._last) > 1024:  # kinds come from clients' requests: bound them
            self._last.clear()
        self._last[kind] = now
        return self._left_out.pop(kind, 0)


class Attempt:
    """One upstream attempt of the current request."""

    __slots__ = ("deployment", "observer", "request", "span", "started", "status")

    def __init__(
        self, observer: Observer, request: RequestRecord, deployment: str, span: AttemptSpan
    ) -> None:
        self.observer = observer
        self.request = request
        self.deployment = deployment
        self.span = span
        self.started = time.monotonic()
        self.status = 0  # the upstream's HTTP status, once its response head arrived

    def headers(self) -> dict[str, str]:
        """What to add to the upstream request: our request id, and this attempt's
        `traceparent` (with traces off, the client's, passed on)."""
        out = {"x-request-id": self.request.request_id}
        traceparent = self.span.traceparent()
        if traceparent is None and self.request.traceparent is not None:
            traceparent = self.request.traceparent.decode("latin-1")
        if traceparent:
            out["traceparent"] = traceparent
        return out

    def end(self, outcome: str, error_code: str | None = None) -> None:
        observer = self.observer
        if observer.metrics is not None:
            observer.metrics.attempt(self.deployment, outcome)
        self.span.end(self.status, outcome, error_code)
        if outcome not in ("ok", "cancelled"):
            observer.upstream_failed(self, outcome, error_code)


class Observer:
    """One worker's request and attempt hooks, over its metrics, tracer and logs."""

    def __init__(
        self,
        config: ObservabilityConfig,
        *,
        metrics: Metrics | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.access_log = config.access_log
        self.metrics = metrics
        self.tracer = tracer
        self._auth_events = Throttle()
        self._upstream_events = Throttle()

    def begin(self, scope: Mapping[str, Any]) -> tuple[RequestRecord, Token[RequestRecord | None]]:
        """A new request's record, made current (`end` with the token undoes that)."""
        request_id = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"traceparent":
                traceparent = value
        client = scope.get("client")
        path = scope["path"]
        request = RequestRecord(
            request_id_from(request_id),
            scope["method"],
            path,
            client[0] if client else None,
            time.monotonic(),
            time.time(),
            NO_SPAN,
            traceparent=traceparent,
            quiet=path in QUIET_PATHS,
        )
        request.observer = self
        if not request.quiet:
            request.span = self.tracer.start(request)
        return request, CURRENT.set(request)

    def end(self, request: RequestRecord, token: Token[RequestRecord | None]) -> None:
        """The request's last byte is out (or it failed): count it, end its span, log it."""
        request.ended = time.monotonic()
        if request.status == 0:
            request.status = CLIENT_GONE
            request.error_code = request.error_code or "client_gone"
        try:
            if self.metrics is not None and not request.quiet:
                self.metrics.request(request)  # probes and scrapes are not traffic
            request.span.end(request)
            if self.access_log:
                logs.access(request)
            if request.status in (401, 403):
                self._auth_failed(request)
        finally:
            CURRENT.reset(token)

    def attempt(self, request: RequestRecord, deployment: str) -> Attempt:
        """An upstream attempt of `request` (counted by `record.begin_attempt`)."""
        return Attempt(self, request, deployment, request.span.attempt(request, deployment))

    def _auth_failed(self, request: RequestRecord) -> None:
        left_out = self._auth_events.allow(request.status)
        if left_out is None:
            return
        logs.event(
            log,
            logging.WARNING,
            "authentication failed" if request.status == 401 else "permission denied",
            status=request.status,
            error_code=request.error_code,
            key_id=request.key_id,  # a managed key's public id, never its secret
            key_name=request.key_name,
            path=request.path,
            client=request.client,
            left_out=left_out,
        )

    def upstream_failed(self, attempt: Attempt, outcome: str, error_code: str | None) -> None:
        left_out = self._upstream_events.allow((attempt.deployment, outcome))
        if left_out is None:
            return
        logs.event(
            log,
            logging.WARNING,
            "upstream attempt failed",
            deployment=attempt.deployment,
            outcome=outcome,
            status=attempt.status or None,
            error_code=error_code,
            latency_ms=round((time.monotonic() - attempt.started) * 1000, 2),
            attempt=attempt.request.attempts,
            left_out=left_out,
        )
