"""One request's facts, filled in as it goes, and its id.

The app opens a `RequestRecord` when a request arrives and makes it the current one
(a context variable: trio copies it into the request's child tasks and worker
threads, so every log line of the request can name it); the routes fill it in (the
key, the model, the deployment, the usage, the status); the relay counts its upstream
attempts on it. When the request has ended (its last byte written), the observer turns
it into the access-log line, the metrics and the end of its span.

The request id is the client's `x-request-id` when it is short and printable ASCII
(so a client can follow its own id through our logs and the upstream's), else one we
make: `req_` and 24 hex digits. It is not the completion id (`chatcmpl-...`, the `id`
of a chat completion and the row key of the usage ledger): a client may send the same
request id twice, a completion id is ours and unique.

Pure module: no I/O.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from typing import Any, Final, Protocol

from gateway.errors import GatewayError

MAX_REQUEST_ID: Final = 128
_PRINTABLE: Final = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_REQUEST_ID)


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def request_id_from(value: bytes | None) -> str:
    """The client's `x-request-id` if it is 1-128 printable ASCII characters (no
    spaces), else a new one."""
    if value is not None and _PRINTABLE.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


class AttemptSpan(Protocol):
    """An upstream attempt's span (observability/traces.py)."""

    def traceparent(self) -> str | None:
        """The W3C `traceparent` to send upstream for this attempt (None: none of ours)."""
        ...

    def end(self, status: int, outcome: str, error_code: str | None) -> None: ...


class RequestSpan(Protocol):
    """A request's span (observability/traces.py)."""

    def attempt(self, request: RequestRecord, deployment: str) -> AttemptSpan:
        """A child span for one upstream attempt."""
        ...

    def end(self, request: RequestRecord) -> None:
        """The request has ended: its attributes from the record, then the span ends."""
        ...


class UpstreamAttempt(Protocol):
    """One upstream attempt, as the relay sees it (observability/observer.py)."""

    status: int  # the upstream's HTTP status once its response head arrived; 0 before

    def headers(self) -> dict[str, str]:
        """What to add to the upstream request (`x-request-id`, `traceparent`)."""
        ...

    def end(self, outcome: str, error_code: str | None = None) -> None: ...


class AttemptSource(Protocol):
    def attempt(self, request: RequestRecord, deployment: str) -> UpstreamAttempt: ...


class RequestRecord:
    """What happened to one request: written by the routes, read once it has ended.

    Times are `time.monotonic()` seconds. `model` and `provider` stay "" until the
    model is resolved; `status` is the HTTP status sent (200 for a stream that failed
    after its first byte: then `error` says how it ended).
    """

    __slots__ = (
        "attempts",
        "cached_tokens",
        "client",
        "completion_id",
        "completion_tokens",
        "cost_micros",
        "deployment",
        "ended",
        "error",
        "error_code",
        "first_byte",
        "key_id",
        "key_name",
        "method",
        "model",
        "observer",
        "path",
        "prompt_tokens",
        "provider",
        "provider_kind",
        "quiet",
        "request_id",
        "response_model",
        "span",
        "started",
        "status",
        "stream",
        "traceparent",
        "wall_start",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        client: str | None,
        started: float,
        wall_start: float,
        span: RequestSpan,
        *,
        traceparent: bytes | None = None,
        quiet: bool = False,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.client = client
        self.started = started
        self.wall_start = wall_start  # unix seconds
        self.span = span
        self.traceparent = traceparent  # the client's, as sent
        self.quiet = quiet  # a probe or a scrape: its access line is DEBUG
        self.observer: AttemptSource | None = None  # who counts its upstream attempts
        self.first_byte: float | None = None  # a stream's first body bytes went out
        self.ended = 0.0
        self.status = 0
        self.error: GatewayError | None = None
        self.error_code: str | None = None  # the error's code, or how the request ended
        self.key_id: str | None = None
        self.key_name: str | None = None
        self.model = ""
        self.provider = ""
        self.provider_kind = ""
        self.deployment = ""
        self.completion_id = ""
        self.response_model = ""
        self.stream = False
        self.attempts = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.cost_micros = 0

    def fail(self, error: GatewayError) -> None:
        """The request ended with `error` (the last one set wins)."""
        self.error = error
        self.error_code = error.code or error.type

    def usage(self, prompt: int, completion: int, cached: int, cost_micros: int) -> None:
        """What the request used and cost, as the ledger recorded it."""
        self.prompt_tokens = prompt
        self.completion_tokens = completion
        self.cached_tokens = cached
        self.cost_micros = cost_micros

    def fields(self) -> dict[str, Any]:
        """The access-log line's fields (never a secret nor any content)."""
        latency_s = self.ended - self.started
        first = self.first_byte
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "error_code": self.error_code,
            "key_id": self.key_id,
            "key_name": self.key_name,
            "model": self.model or None,
            "provider": self.provider or None,
            "deployment": self.deployment or None,
            "stream": self.stream,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": self.cost_micros / 1e6,
            "latency_ms": round(latency_s * 1000, 2),
            "ttft_ms": None if first is None else round((first - self.started) * 1000, 2),
            "client": self.client,
        }


CURRENT: ContextVar[RequestRecord | None] = ContextVar("gateway_request", default=None)


def current_request() -> RequestRecord | None:
    """The request this task (or thread) works for, if any."""
    return CURRENT.get()


def begin_attempt(deployment: str) -> UpstreamAttempt | None:
    """Count an upstream attempt on the current request; None outside of one."""
    request = CURRENT.get()
    if request is None or request.observer is None:
        return None
    request.attempts += 1
    return request.observer.attempt(request, deployment)
