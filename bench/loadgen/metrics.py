"""Figures of a load run: per-request records, percentiles and the run's summary.

Every time is in seconds since the start of the run, on one monotonic clock. A
request's latency and time to first token are measured from its *scheduled* time,
not from when the harness managed to send it: in an open-loop run a request that
waits (for the generator, or behind a full server) carries that wait in its figures,
which is what its user would have seen (no coordinated omission). In a closed-loop
run a request is scheduled when its worker sends it, so both times are the same.

Rates are per second of the whole run, from its start to the end of its last answer
(the drain of the requests in flight at the end included): a run of 16 streams that
all take 30 s did 16/30 requests per second, whatever its --duration.

Percentiles use the nearest-rank definition: the p-th percentile is the smallest
recorded value such that at least p% of the values are less than or equal to it. It
is always a value that was observed (no interpolation), so a p99 of 100 requests is
the 99th slowest one.

Pure module: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ERROR_KINDS",
    "Distribution",
    "RequestRecord",
    "RunCounters",
    "Summary",
    "TimelineBucket",
    "bucket_width",
    "percentile",
    "summarize",
    "timeline",
]

Mode = Literal["closed", "open"]

# Why a request failed, when it was not an HTTP error status ("status").
ERROR_KINDS: Mapping[str, str] = {
    "status": "the server answered with a non-2xx HTTP status",
    "connect": "no connection could be opened (refused, unreachable, DNS)",
    "timeout": "no complete answer within the request timeout",
    "reset": "the connection was closed or reset before the answer ended",
    "protocol": "the answer broke HTTP/1.1",
    "bad_response": "a 2xx answer whose body (or an SSE event) is not the expected JSON",
    "stream_error": "a stream carried an in-band error event",
    "truncated": "a 2xx stream ended without its final `data: [DONE]` event",
}


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request; times are seconds since the start of the run."""

    scheduled: float  # when it was due (open loop) or sent (closed loop)
    start: float  # when the harness began to send it
    end: float = 0.0  # when its answer ended, or it failed
    first_token: float | None = None  # arrival of the first content delta (streams)
    status: int = 0  # HTTP status, 0 when none arrived
    error: str | None = None  # None when ok; else a key of ERROR_KINDS
    output_tokens: int | None = None  # usage.completion_tokens, else counted deltas
    tokens_from_usage: bool = False  # output_tokens came from the answer's usage
    chunks: int = 0  # content deltas received (streams)

    @property
    def ok(self) -> bool:
        """Answered with a 2xx status and a well-formed, complete body."""
        return self.error is None

    @property
    def latency(self) -> float:
        """Seconds from the scheduled time to the end of the answer."""
        return self.end - self.scheduled

    @property
    def ttft(self) -> float | None:
        """Seconds from the scheduled time to the first content delta, if any came."""
        return None if self.first_token is None else self.first_token - self.scheduled


@dataclass(slots=True)
class RunCounters:
    """What the generator itself counted, beside the per-request records."""

    dropped: int = 0  # open loop: arrivals not sent because max-inflight were in flight
    cancelled: int = 0  # in flight when the run was interrupted (no record)
    connections: int = 0  # TCP connections opened
    retries: int = 0  # requests resent once on a fresh connection (stale keep-alive)
    cpu_s: float = 0.0  # CPU time of the harness's own thread during the run
    # The first reason seen for each kind of failure ("status 429", "connect", ...).
    error_examples: dict[str, str] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0-100) of values sorted ascending."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    # round() absorbs float noise such as 99 * 100 / 100 == 99.00000000000001.
    rank = math.ceil(round(q * len(sorted_values) / 100.0, 9))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class Distribution:
    """Count, mean and percentiles of a set of durations (seconds)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        """The distribution of `values`, or None when there are none."""
        ordered = sorted(values)
        if not ordered:
            return None
        return cls(
            count=len(ordered),
            mean=math.fsum(ordered) / len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
        )

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form; values stay in seconds."""
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one run. Durations in seconds, rates per second."""

    mode: Mode
    duration_s: float  # from the start of the run to the last answer's end
    requests: int  # sent (each has a record)
    ok: int
    failed: int
    dropped: int
    cancelled: int
    errors_by_status: dict[int, int]  # failed with an HTTP status: status -> count
    errors_by_kind: dict[str, int]  # failed for another reason: kind -> count
    error_examples: dict[str, str]  # "status 429" or a kind -> the first reason seen
    throughput_rps: float  # ok answers per second
    completed_rps: float  # answers of any outcome per second
    latency: Distribution | None  # ok requests, from their scheduled time
    ttft: Distribution | None  # ok requests with a first content delta
    itl: Distribution | None  # gaps between consecutive content deltas of ok streams
    output_tokens: int  # of ok requests
    output_tokens_per_s: float
    tokens_source: str  # "usage", "chunks", "mixed" or "none"
    offered_rps: float | None  # open loop: the arrival rate asked for
    achieved_rps: float | None  # open loop: the rate at which requests really went out
    send_lag: Distribution | None  # open loop: start - scheduled, the generator's delay
    connections: int
    retries: int
    client_cpu_s: float
    client_cpu_per_request_s: float | None
    shed_latency: Distribution | None = None  # 503 answers (an overloaded server shedding)
    # Stamped streams: each content delta's arrival minus its send time (relays included).
    transit: Distribution | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (status codes become string keys)."""
        return {
            "mode": self.mode,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "dropped": self.dropped,
            "cancelled": self.cancelled,
            "errors_by_status": {str(k): v for k, v in sorted(self.errors_by_status.items())},
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "error_examples": dict(sorted(self.error_examples.items())),
            "throughput_rps": self.throughput_rps,
            "completed_rps": self.completed_rps,
            "latency_s": _dist(self.latency),
            "ttft_s": _dist(self.ttft),
            "itl_s": _dist(self.itl),
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "tokens_source": self.tokens_source,
            "offered_rps": self.offered_rps,
            "achieved_rps": self.achieved_rps,
            "send_lag_s": _dist(self.send_lag),
            "connections": self.connections,
            "retries": self.retries,
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_per_request_s": self.client_cpu_per_request_s,
            "shed_latency_s": _dist(self.shed_latency),
            "transit_s": _dist(self.transit),
        }


def _dist(value: Distribution | None) -> dict[str, float | int] | None:
    return None if value is None else value.to_dict()


def summarize(
    records: Sequence[RequestRecord],
    gaps: Iterable[float],
    counters: RunCounters,
    *,
    mode: Mode,
    offered_rps: float | None = None,
    elapsed_s: float = 0.0,
    transits: Iterable[float] = (),
) -> Summary:
    """Summarise a run from its records, the inter-token gaps of its ok streams and counters.

    `elapsed_s` is the run's wall time so far; the duration is the later of it and
    the last answer's end, so that an empty or interrupted run still has a duration.
    """
    ok_records = [r for r in records if r.ok]
    by_status: dict[int, int] = {}
    by_kind: dict[str, int] = {}
    for record in records:
        if record.error == "status":
            by_status[record.status] = by_status.get(record.status, 0) + 1
        elif record.error is not None:
            by_kind[record.error] = by_kind.get(record.error, 0) + 1
    last_end = max((r.end for r in records), default=0.0)
    duration = max(last_end, elapsed_s)
    per_s = 1.0 / duration if duration > 0 else 0.0

    tokens = 0
    from_usage = from_chunks = 0
    for record in ok_records:
        if record.output_tokens is not None:
            tokens += record.output_tokens
            if record.tokens_from_usage:
                from_usage += 1
            else:
                from_chunks += 1
    if from_usage and from_chunks:
        source = "mixed"
    else:
        source = "usage" if from_usage else "chunks" if from_chunks else "none"

    achieved = None
    send_lag = None
    if mode == "open":
        send_lag = Distribution.of(r.start - r.scheduled for r in records)
        if offered_rps and records:
            # The window ends one arrival interval after the last send, so a run
            # that kept its schedule exactly reports the offered rate.
            window = max(r.start for r in records) + 1.0 / offered_rps
            achieved = len(records) / window

    return Summary(
        mode=mode,
        duration_s=duration,
        requests=len(records),
        ok=len(ok_records),
        failed=len(records) - len(ok_records),
        dropped=counters.dropped,
        cancelled=counters.cancelled,
        errors_by_status=by_status,
        errors_by_kind=by_kind,
        error_examples=dict(counters.error_examples),
        throughput_rps=len(ok_records) * per_s,
        completed_rps=len(records) * per_s,
        latency=Distribution.of(r.latency for r in ok_records),
        ttft=Distribution.of(t for r in ok_records if (t := r.ttft) is not None),
        itl=Distribution.of(gaps),
        transit=Distribution.of(transits),
        output_tokens=tokens,
        output_tokens_per_s=tokens * per_s,
        tokens_source=source,
        offered_rps=offered_rps if mode == "open" else None,
        achieved_rps=achieved,
        send_lag=send_lag,
        connections=counters.connections,
        retries=counters.retries,
        client_cpu_s=counters.cpu_s,
        client_cpu_per_request_s=counters.cpu_s / len(records) if records else None,
        shed_latency=Distribution.of(r.latency for r in records if r.status == 503),
    )


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """Answers that ended within [start, start + width) seconds of the run."""

    start: float
    width: float
    ok: int
    failed: int
    latency_p50: float | None  # of the ok answers in the bucket
    output_tokens: int

    @property
    def ok_rps(self) -> float:
        return self.ok / self.width

    @property
    def failed_rps(self) -> float:
        return self.failed / self.width


_NICE_WIDTHS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def bucket_width(duration_s: float, max_buckets: int = 200) -> float:
    """The smallest of a few round widths that cuts `duration_s` into <= `max_buckets`."""
    for width in _NICE_WIDTHS_S:
        if duration_s / width <= max_buckets:
            return width
    return math.ceil(duration_s / max_buckets)


def timeline(records: Iterable[RequestRecord], width_s: float) -> list[TimelineBucket]:
    """Answers per time bucket by end time, from 0 to the last answer; no gaps in the list."""
    if width_s <= 0:
        raise ValueError("bucket width must be positive")
    ok: dict[int, int] = {}
    failed: dict[int, int] = {}
    latencies: dict[int, list[float]] = {}
    tokens: dict[int, int] = {}
    last = -1
    for record in records:
        index = int(record.end // width_s)
        last = max(last, index)
        if record.ok:
            ok[index] = ok.get(index, 0) + 1
            latencies.setdefault(index, []).append(record.latency)
            tokens[index] = tokens.get(index, 0) + (record.output_tokens or 0)
        else:
            failed[index] = failed.get(index, 0) + 1
    buckets = []
    for index in range(last + 1):
        values = sorted(latencies.get(index, ()))
        buckets.append(
            TimelineBucket(
                start=index * width_s,
                width=width_s,
                ok=ok.get(index, 0),
                failed=failed.get(index, 0),
                latency_p50=percentile(values, 50) if values else None,
                output_tokens=tokens.get(index, 0),
            )
        )
    return buckets
