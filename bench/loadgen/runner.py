"""The load schedulers: closed loop (fixed concurrency) and open loop (fixed arrival rate).

Closed loop: `concurrency` workers, each with its own keep-alive connection, send the
next request as soon as the last one ends. The server sets the pace, so this finds
its throughput at that concurrency but hides queueing: a slow answer delays the
requests that would have been sent meanwhile.

Open loop: requests are due on a fixed schedule, ``rate`` per second, whatever the
server does, each one in its own task, on a connection taken from a pool of idle
keep-alive connections (a new one when none is idle). Latency counts from the due
time, so a server that falls behind shows it as growing latency. At most
`max_inflight` requests are in flight; an arrival beyond that is dropped and counted.

Both stop issuing at `duration_s` (or after `requests`), then let the requests in
flight end, each bounded by `timeout_s`. Cancelling `LoadRun.run` (Ctrl-C) stops at
once; `LoadRun.result` then summarises what was recorded.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from bench.loadgen.client import Connection, JSONSink, StreamSink, Target, TransportError
from bench.loadgen.metrics import (
    Mode,
    RequestRecord,
    RunCounters,
    Summary,
    percentile,
    summarize,
)
from bench.loadgen.workload import Workload
from bench.tls import client_context

__all__ = ["LoadConfig", "LoadResult", "LoadRun", "Progress", "run_load"]


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run. Exactly one of concurrency/rate, and one of duration_s/requests."""

    url: str  # base URL, e.g. http://127.0.0.1:8080/v1
    model: str
    stream: bool = False
    concurrency: int | None = None  # closed loop: number of workers (connections)
    rate: float | None = None  # open loop: arrivals per second
    duration_s: float | None = None  # stop issuing after this long...
    requests: int | None = None  # ...or after this many requests (arrivals, open loop)
    prompt_tokens: int = 64
    max_tokens: int = 128
    api_key: str | None = None
    max_inflight: int = 1024  # open loop: cap on requests in flight
    timeout_s: float = 60.0  # per request, from its send to the end of its answer
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # merged into each body
    ca_file: str | None = None  # https: trust only this CA file (None: the system's CAs)

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of concurrency (closed loop) and rate (open loop)")
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of duration and requests")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not (0 < self.rate < math.inf):
            raise ValueError(f"rate must be a positive number, got {self.rate}")
        if self.duration_s is not None and not (0 < self.duration_s < math.inf):
            raise ValueError(f"duration must be a positive number, got {self.duration_s}")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if self.prompt_tokens < 0:
            raise ValueError(f"prompt tokens must be >= 0, got {self.prompt_tokens}")
        if self.max_tokens < 1:
            raise ValueError(f"max tokens must be >= 1, got {self.max_tokens}")
        if self.max_inflight < 1:
            raise ValueError(f"max in-flight must be >= 1, got {self.max_inflight}")
        if not (0 < self.timeout_s < math.inf):
            raise ValueError(f"timeout must be a positive number, got {self.timeout_s}")

    @property
    def mode(self) -> Mode:
        return "closed" if self.concurrency is not None else "open"


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view of a run, for the progress line."""

    elapsed_s: float
    sent: int
    ok: int
    failed: int
    inflight: int
    dropped: int
    window_rps: float  # answers (any outcome) per second since the previous view
    window_p50_s: float | None  # median latency of the ok answers since the previous view


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A finished (or interrupted) run: its summary and raw figures."""

    config: LoadConfig
    target: Target
    summary: Summary
    records: list[RequestRecord]
    gaps: array[float]  # inter-token gaps of the ok streams, seconds
    interrupted: bool


class LoadRun:
    """One run of `config`: `await run()`, then `result()` (also after a cancellation)."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.target = Target.from_base_url(config.url)
        self._ssl = client_context(config.ca_file) if config.ca_file is not None else None
        self.workload = Workload(
            host=self.target.host_header,
            path=self.target.path,
            model=config.model,
            stream=config.stream,
            prompt_tokens=config.prompt_tokens,
            max_tokens=config.max_tokens,
            api_key=config.api_key,
            extra_body=config.extra_body,
        )
        self.records: list[RequestRecord] = []
        self.gaps: array[float] = array("d")
        self.transits: array[float] = array("d")  # stamped streams' content transits
        self.counters = RunCounters()
        self.ok = 0
        self.failed = 0
        self.inflight = 0
        self._issued = 0  # requests sent (the next request's number)
        self._origin = 0.0  # trio time of the start
        self._elapsed_s: float | None = None
        self._cpu_start = 0.0

    # -- public ------------------------------------------------------------------

    async def run(
        self,
        *,
        progress: Callable[[Progress], None] | None = None,
        progress_interval_s: float = 0.5,
    ) -> None:
        """Drive the load until it is done (or the caller cancels)."""
        if self._elapsed_s is not None or self._issued:
            raise RuntimeError("a LoadRun runs once")
        self._origin = trio.current_time()
        self._cpu_start = time.thread_time()
        try:
            async with trio.open_nursery() as nursery:
                if progress is not None:
                    nursery.start_soon(self._report_progress, progress, progress_interval_s)
                if self.config.concurrency is not None:
                    await self._closed_loop(self.config.concurrency)
                else:
                    assert self.config.rate is not None
                    await self._open_loop(self.config.rate)
                nursery.cancel_scope.cancel()
        finally:
            self._elapsed_s = trio.current_time() - self._origin
            self.counters.cpu_s = time.thread_time() - self._cpu_start

    def result(self, *, interrupted: bool = False) -> LoadResult:
        """Summarise what was recorded so far."""
        summary = summarize(
            self.records,
            self.gaps,
            self.counters,
            mode=self.config.mode,
            offered_rps=self.config.rate,
            elapsed_s=self._elapsed_s or 0.0,
            transits=self.transits,
        )
        return LoadResult(self.config, self.target, summary, self.records, self.gaps, interrupted)

    # -- closed loop ---------------------------------------------------------------

    async def _closed_loop(self, concurrency: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        config = self.config
        deadline = self._origin + (config.duration_s or math.inf)
        limit = config.requests if config.requests is not None else math.inf
        conn = self._connection()
        try:
            while self._issued < limit:
                now = trio.current_time()
                if now >= deadline:
                    break
                self.inflight += 1
                try:
                    await self._send(conn, now - self._origin)
                finally:
                    self.inflight -= 1
        finally:
            conn.close()

    # -- open loop -------------------------------------------------------------------

    async def _open_loop(self, rate: float) -> None:
        config = self.config
        interval = 1.0 / rate
        horizon = config.duration_s if config.duration_s is not None else math.inf
        arrivals = config.requests if config.requests is not None else math.inf
        pool: list[Connection] = []
        try:
            async with trio.open_nursery() as nursery:
                index = 0
                while index < arrivals:
                    due = index * interval
                    if due >= horizon:
                        break
                    index += 1
                    # Sleep only when ahead: arrivals already due go out in one burst,
                    # without a trip through the scheduler each.
                    if self._origin + due > trio.current_time():
                        await trio.sleep_until(self._origin + due)
                    if self.inflight >= config.max_inflight:
                        self.counters.dropped += 1
                        continue
                    self.inflight += 1
                    nursery.start_soon(self._open_request, pool, due)
        finally:
            for conn in pool:
                conn.close()

    async def _open_request(self, pool: list[Connection], scheduled: float) -> None:
        conn = pool.pop() if pool else self._connection()
        try:
            await self._send(conn, scheduled)
        finally:
            self.inflight -= 1
            pool.append(conn)  # closed ones reconnect on their next use

    # -- one request -------------------------------------------------------------------

    def _connection(self) -> Connection:
        return Connection(
            self.target, on_connect=self._on_connect, on_retry=self._on_retry, ssl_context=self._ssl
        )

    def _on_connect(self) -> None:
        self.counters.connections += 1

    def _on_retry(self) -> None:
        self.counters.retries += 1

    async def _send(self, conn: Connection, scheduled: float) -> None:
        """Send one request on `conn`, record its outcome; a cancellation counts it lost."""
        origin = self._origin
        number = self._issued
        self._issued += 1
        record = RequestRecord(scheduled=scheduled, start=trio.current_time() - origin)
        sink = StreamSink(record, origin) if self.config.stream else JSONSink(record)
        try:
            with trio.move_on_after(self.config.timeout_s) as scope:
                try:
                    await conn.post(self.workload.head, self.workload.body(number), sink)
                except TransportError as exc:
                    sink.fail(exc.kind, exc.detail)
            if scope.cancelled_caught:
                sink.fail("timeout", f"no complete answer within {self.config.timeout_s:g} s")
            record.end = trio.current_time() - origin
        except BaseException:
            self.counters.cancelled += 1
            raise
        self.records.append(record)
        if record.error is None:
            self.ok += 1
            if isinstance(sink, StreamSink) and sink.gaps:
                self.gaps.extend(sink.gaps)
                self.transits.extend(sink.transits)
        else:
            self.failed += 1
            key = f"status {record.status}" if record.error == "status" else record.error
            self.counters.error_examples.setdefault(key, sink.detail)

    # -- progress ------------------------------------------------------------------------

    async def _report_progress(self, progress: Callable[[Progress], None], interval: float) -> None:
        seen = 0
        last = self._origin
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            window = self.records[seen:]
            seen = len(self.records)
            latencies = sorted(r.latency for r in window if r.error is None)
            progress(
                Progress(
                    elapsed_s=now - self._origin,
                    sent=self._issued,
                    ok=self.ok,
                    failed=self.failed,
                    inflight=self.inflight,
                    dropped=self.counters.dropped,
                    window_rps=len(window) / (now - last) if now > last else 0.0,
                    window_p50_s=percentile(latencies, 50) if latencies else None,
                )
            )
            last = now


async def run_load(
    config: LoadConfig, *, progress: Callable[[Progress], None] | None = None
) -> LoadResult:
    """Run `config` to its end and return the result."""
    load = LoadRun(config)
    await load.run(progress=progress)
    return load.result()
