"""What the fake vendor upstreams share: control, observation, serving, `fail_rate`.

`FakeUpstream` holds the state every fake keeps (key, models, recorded requests,
behaviour defaults, request and disconnect counters, the `fail_rate` decision) and its
thread-safe control and observation API; a subclass answers requests in `_dispatch`
and builds its request records in `_recorded`. `run_fake` runs one on a free loopback
port in a background thread. `failure_positions`, `StreamOut` and `write_paced` serve
the fakes' streaming loops.
"""

from __future__ import annotations

import itertools
import random
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar

import orjson
import trio

from bench.fakes.directives import Behaviour, apply_knobs
from bench.fakes.server import CoarseTimer, Headers, Reply, Request, serve_http

FAILURE_GAP_S: Final = 0.005  # pause between the events before an injected failure and it
R = TypeVar("R")
F = TypeVar("F", bound="FakeUpstream[Any]")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it; `time` is `time.monotonic()` at arrival."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body; None when absent or not JSON
    time: float

    @classmethod
    def of(cls, request: Request, body: Any) -> RecordedRequest:
        """The record of `request`, whose parsed body is `body`, arriving now."""
        return cls(request.method, request.path, request.headers, body, time.monotonic())


class FakeUpstream(ABC, Generic[R]):
    """A fake vendor upstream recording requests of type `R`; `handle` is its handler."""

    default_key: ClassVar[str]
    default_models: ClassVar[Sequence[str]]
    base_path: ClassVar[str]  # the base URL's path, e.g. "/v1"
    thread_name: ClassVar[str]  # the background thread's name in `run_fake`

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        seed: int | None = None,
        record: bool = True,
        **knobs: object,
    ) -> None:
        """`api_key` and `models` default to the class's. `knobs` are behaviour defaults
        (see `configure`). `seed` makes `fail_rate` random (seeded); without it exactly
        every 1/fail_rate-th request fails. `record=False` keeps `requests` empty (long
        benchmarks)."""
        self.api_key = self.default_key if api_key is None else api_key
        self.models = tuple(self.default_models if models is None else models)
        self.record = record
        self.defaults = Behaviour()
        self.requests: list[R] = []
        self._rng = random.Random(seed) if seed is not None else None
        self._fail_credit = 0.0
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._request_count = 0
        self._disconnects = 0
        self._timer = CoarseTimer()
        self.configure(**knobs)

    # -- control and observation (thread-safe) --------------------------------

    def configure(self, **knobs: object) -> None:
        """Change the default behaviour for the requests that arrive from now on."""
        self.defaults = apply_knobs(self.defaults, knobs)

    @property
    def request_count(self) -> int:
        """Requests received so far (recorded or not)."""
        return self._request_count

    @property
    def disconnects(self) -> int:
        """Clients that went away before their response was complete."""
        return self._disconnects

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until `count` requests have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._request_count >= count, timeout_s)

    def wait_for_disconnects(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until `count` client disconnects were seen; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._disconnects >= count, timeout_s)

    # -- serving ---------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on host:port until cancelled (HTTPS with `ssl_context`); reports the
        bound port via task_status."""
        await serve_http(self.handle, host, port, ssl_context=ssl_context, task_status=task_status)

    async def handle(self, request: Request, reply: Reply) -> None:
        """Record and answer one HTTP request; count the client as gone if it left early."""
        try:
            await self._dispatch(request, self._record(request), reply)
        finally:
            if reply.client_gone:
                with self._cond:
                    self._disconnects += 1
                    self._cond.notify_all()

    @abstractmethod
    async def _dispatch(self, request: Request, body: Any, reply: Reply) -> None:
        """Answer `request`, whose parsed JSON body (None if none) is `body`."""

    @abstractmethod
    def _recorded(self, request: Request, body: Any) -> R:
        """The entry `requests` gets for `request`."""

    def _record(self, request: Request) -> Any:
        """Count the request, record it when asked, and return its parsed JSON body."""
        body: Any = None
        if request.body:
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                body = None
        with self._cond:
            self._request_count += 1
            if self.record:
                self.requests.append(self._recorded(request, body))
            self._cond.notify_all()
        return body

    def _should_fail(self, rate: float) -> bool:
        """Pick the requests `fail_rate` fails: seeded random, or evenly spread."""
        if rate <= 0.0:
            return False
        if self._rng is not None:
            return self._rng.random() < rate
        self._fail_credit += rate
        if self._fail_credit >= 1.0 - 1e-9:
            self._fail_credit -= 1.0
            return True
        return False


@contextmanager
def run_fake(cls: type[F], **defaults: Any) -> Iterator[tuple[F, str]]:
    """Run a `cls(**defaults)` on a free loopback port; yield it and its base URL."""
    # Imported here: bench.fakes.threaded imports bench.fakes.openai, which imports this.
    from bench.fakes.threaded import BackgroundTrio

    fake = cls(**defaults)
    with BackgroundTrio[int](fake.serve, name=cls.thread_name) as port:
        yield fake, f"http://127.0.0.1:{port}{cls.base_path}"


def failure_positions(b: Behaviour, end: int) -> tuple[int | None, int | None]:
    """(reset_at, fail_at) of a stream of `end` events: where ``reset_after`` resets it
    and where it first fails (reset or ``error_after``), capped at `end`; None if never."""
    reset_at = None if b.reset_after is None else min(b.reset_after, end)
    error_at = None if b.error_after is None else min(b.error_after, end)
    failures = [at for at in (reset_at, error_at) if at is not None]
    return reset_at, min(failures) if failures else None


class StreamOut:
    """The writes of one streamed 200 response: the first sends the status and `headers`."""

    def __init__(self, reply: Reply, headers: Headers) -> None:
        self.reply = reply
        self._headers = headers

    async def flush(self, data: bytes) -> None:
        """Start the response with `data`, or write `data` when it is not empty."""
        if not self.reply.started:
            await self.reply.start(200, self._headers, data)
        elif data:
            await self.reply.write(data)


# A stamped stream's content pieces (the `stamp` directive) are this placeholder,
# replaced as each write goes out by its time: CLOCK_MONOTONIC in nanoseconds, 20
# digits, the same clock in every process of the machine. A client subtracts it from
# its own reading on arrival: the piece's transit, relays included (`StreamSink`).
STAMP_HOLE: Final = b"@" * 20


def stamped(data: bytes) -> bytes:
    """`data` with each `STAMP_HOLE` replaced by the time now."""
    return data.replace(STAMP_HOLE, b"%020d" % time.monotonic_ns()) if data else data


async def write_paced(
    out: StreamOut,
    timer: CoarseTimer,
    events: Sequence[bytes],
    *,
    start: float,
    interval: float,
    paced: range,
    reset_at: int | None,
    fail_at: int | None,
    jitter: float = 0.0,
    stamp: bool = False,
) -> bytes:
    """Write `events` from `start` up to `fail_at`; return what is left unwritten.

    With an `interval`, each event in `paced` goes in a write of its own, the k-th of
    them (from 0) at ``start + (k + 1) * interval``, the events before it travelling
    with it; the rest wait for the next write. With a `jitter`, each gap is instead
    `interval` plus a uniform draw within +-`jitter` (and at least 0). When events
    came before `fail_at`, `FAILURE_GAP_S` passes after their write; if the failure
    is the reset, the connection is reset there (after writing what is pending).
    With `stamp`, each write's `STAMP_HOLE`s become its time (`stamped`).
    """
    pending = b""
    due = start
    for position in range(len(events) + 1):
        is_paced = interval > 0 and position in paced
        if is_paced or (position == fail_at and position > 0):
            await out.flush(stamped(pending) if stamp else pending)
            pending = b""
            if jitter > 0:
                due = slot = due + max(0.0, interval + random.uniform(-jitter, jitter))
            else:
                slot = start + (position - paced.start + 1) * interval
            await timer.sleep_until(slot if is_paced else trio.current_time() + FAILURE_GAP_S)
        if position == fail_at:
            break
        if position < len(events):
            pending += events[position]
    if fail_at is not None and fail_at == reset_at:
        await out.flush(pending)
        out.reply.abort()
    return pending
