"""Reports of a load run: the text summary, the JSON document, the progress line, the plot.

The JSON document (`SCHEMA`) holds the run's configuration, its summary (durations in
seconds, rates per second), answers per time bucket, and one record per request::

    {"schema": "gateway-bench-load/1", "config": {...}, "interrupted": false,
     "summary": {...}, "timeline": [{"start_s", "width_s", "ok", "failed",
     "latency_p50_s", "output_tokens"}, ...],
     "requests": [{"scheduled_s", "start_s", "ttft_s", "end_s", "latency_s", "status",
                   "error", "tokens", "tokens_from_usage", "chunks"}, ...]}

Request times (``scheduled_s``, ``start_s``, ``end_s``) are seconds since the start of
the run; ``ttft_s`` and ``latency_s`` count from ``scheduled_s``.

matplotlib is imported only by `plot`, and `require_matplotlib` lets a caller check
for it before a run rather than after.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen.metrics import (
    Distribution,
    RequestRecord,
    bucket_width,
    percentile,
    timeline,
)
from bench.loadgen.runner import LoadResult, Progress

__all__ = [
    "SCHEMA",
    "format_progress",
    "format_report",
    "plot",
    "require_matplotlib",
    "to_document",
    "write_json",
]

SCHEMA = "gateway-bench-load/1"
_CPU_WARNING = 0.9  # a harness busier than this share of one core may bound the result
_DETAIL_CHARS = 160  # of an error's reason in the text report
_LAG_WARNING_S = 0.005  # open loop: p99 of (start - scheduled) above this taints latency


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _dist_line(dist: Distribution | None, *, parts: tuple[str, ...]) -> str:
    if dist is None:
        return "n/a"
    return "  ".join(f"{name} {_ms(getattr(dist, name))}" for name in parts)


def format_report(result: LoadResult) -> str:
    """The human summary printed at the end of a run."""
    config = result.config
    s = result.summary
    if config.concurrency is not None:
        shape = f"closed loop, {_plural(config.concurrency, 'connection')}"
    else:
        shape = f"open loop, {config.rate:g} req/s, max {config.max_inflight} in flight"
    kind = "stream" if config.stream else "non-stream"
    lines = [
        f"target      {result.target.url}",
        f"load        {config.model}, {kind}, {shape}, prompt ~{config.prompt_tokens} tokens, "
        f"max_tokens {config.max_tokens}",
    ]
    if result.interrupted:
        lines.append("interrupted partial figures; requests still in flight were not counted")
    lines.append(
        f"requests    {s.requests:,} sent in {s.duration_s:.2f} s: {s.ok:,} ok, {s.failed:,} failed"
        + (f", {s.cancelled:,} cancelled" if s.cancelled else "")
    )
    if s.errors_by_status or s.errors_by_kind:
        errors = [f"status {k}: {v:,}" for k, v in sorted(s.errors_by_status.items())]
        errors += [f"{k}: {v:,}" for k, v in sorted(s.errors_by_kind.items())]
        lines.append("errors      " + ", ".join(errors))
        for key, detail in sorted(s.error_examples.items()):
            shown = detail if len(detail) <= _DETAIL_CHARS else detail[: _DETAIL_CHARS - 3] + "..."
            lines.append(f"  first {key}: {shown}")
    lines.append(
        f"throughput  {s.throughput_rps:,.1f} req/s ok ({s.completed_rps:,.1f} req/s answered)"
    )
    if s.offered_rps is not None:
        achieved = f"{s.achieved_rps:,.1f}" if s.achieved_rps is not None else "n/a"
        lines.append(
            f"rate        offered {s.offered_rps:,.1f} req/s, achieved {achieved} req/s, "
            f"dropped {s.dropped:,} (max {config.max_inflight} in flight)"
        )
    lines.append("latency     " + _dist_line(s.latency, parts=("p50", "p90", "p99", "max", "mean")))
    if s.shed_latency is not None:
        lines.append("503 latency " + _dist_line(s.shed_latency, parts=("p50", "p90", "p99")))
    if config.stream:
        lines.append("ttft        " + _dist_line(s.ttft, parts=("p50", "p90", "p99")))
        lines.append("itl         " + _dist_line(s.itl, parts=("mean", "p99")))
    source = {"usage": "from usage", "chunks": "counted deltas", "mixed": "usage or deltas"}
    if s.tokens_source in source:
        lines.append(
            f"tokens      {s.output_tokens:,} out ({source[s.tokens_source]}), "
            f"{s.output_tokens_per_s:,.1f} tokens/s"
        )
    else:
        lines.append("tokens      n/a (no usage in the answers)")
    cpu_share = s.client_cpu_s / s.duration_s if s.duration_s > 0 else 0.0
    per_request = (
        f", {s.client_cpu_per_request_s * 1e6:,.0f} us per request"
        if s.client_cpu_per_request_s is not None
        else ""
    )
    lines.append(
        f"harness     cpu {s.client_cpu_s:.2f} s ({cpu_share:.0%} of a core){per_request}, "
        f"{_plural(s.connections, 'connection')} opened, "
        f"{s.retries:,} resent on stale connections"
    )
    if cpu_share > _CPU_WARNING:
        lines.append(
            "warning     the harness used most of a CPU core: it may be what limits these figures"
        )
    if s.send_lag is not None and s.send_lag.p99 > _LAG_WARNING_S:
        lines.append(
            f"warning     the harness sent late (p99 {_ms(s.send_lag.p99)} after schedule); "
            "latencies include that delay"
        )
    return "\n".join(lines)


def format_progress(view: Progress) -> str:
    """The live one-line status shown on a terminal."""
    p50 = _ms(view.window_p50_s) if view.window_p50_s is not None else "-"
    dropped = f"  dropped {view.dropped:,}" if view.dropped else ""
    return (
        f"{view.elapsed_s:7.1f}s  sent {view.sent:,}  ok {view.ok:,}  failed {view.failed:,}"
        f"  in flight {view.inflight:,}{dropped}  {view.window_rps:,.0f} req/s  p50 {p50}"
    )


def _record(record: RequestRecord) -> dict[str, Any]:
    return {
        "scheduled_s": record.scheduled,
        "start_s": record.start,
        "ttft_s": record.ttft,
        "end_s": record.end,
        "latency_s": record.latency,
        "status": record.status,
        "error": record.error,
        "tokens": record.output_tokens,
        "tokens_from_usage": record.tokens_from_usage,
        "chunks": record.chunks,
    }


def to_document(result: LoadResult) -> dict[str, Any]:
    """The JSON document of a run (see the module doc)."""
    config = result.config
    width = bucket_width(result.summary.duration_s)
    return {
        "schema": SCHEMA,
        "config": {
            "url": result.target.url,
            "model": config.model,
            "stream": config.stream,
            "mode": config.mode,
            "concurrency": config.concurrency,
            "rate": config.rate,
            "duration_s": config.duration_s,
            "requests": config.requests,
            "prompt_tokens": config.prompt_tokens,
            "max_tokens": config.max_tokens,
            "max_inflight": config.max_inflight,
            "timeout_s": config.timeout_s,
            "extra_body": dict(config.extra_body),
        },
        "interrupted": result.interrupted,
        "summary": result.summary.to_dict(),
        "timeline": [
            {
                "start_s": b.start,
                "width_s": b.width,
                "ok": b.ok,
                "failed": b.failed,
                "latency_p50_s": b.latency_p50,
                "output_tokens": b.output_tokens,
            }
            for b in timeline(result.records, width)
        ],
        "requests": [_record(r) for r in result.records],
    }


def write_json(result: LoadResult, path: Path) -> None:
    """Write the run's JSON document to `path`."""
    path.write_bytes(orjson.dumps(to_document(result)))


def require_matplotlib() -> str | None:
    """None when matplotlib can be imported, else a message saying how to get it."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return (
            "--plot needs matplotlib, which is not installed; "
            "install it with: pip install 'gateway[bench]' (or pip install matplotlib)"
        )
    return None


def plot(result: LoadResult, path: Path) -> None:
    """Draw the latency distribution and the throughput over time into a PNG at `path`."""
    from matplotlib.figure import Figure  # lazy: matplotlib is an optional extra

    summary = result.summary
    fig = Figure(figsize=(10, 8), layout="constrained")
    top, bottom = fig.subplots(2, 1)

    latencies_ms = sorted(r.latency * 1000 for r in result.records if r.ok)
    if latencies_ms:
        top.hist(latencies_ms, bins=min(100, max(10, len(latencies_ms) // 20)), color="tab:blue")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            value = percentile(latencies_ms, q)
            top.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.1f} ms")
        top.legend()
    else:
        top.text(0.5, 0.5, "no successful requests", ha="center", transform=top.transAxes)
    top.set_xlabel("latency (ms, from scheduled time)")
    top.set_ylabel("requests")
    top.set_title(f"{result.config.model} at {result.target.url}: latency distribution")

    buckets = timeline(result.records, bucket_width(summary.duration_s))
    times = [b.start + b.width / 2 for b in buckets]
    bottom.plot(times, [b.ok_rps for b in buckets], color="tab:green", label="ok req/s")
    if any(b.failed for b in buckets):
        bottom.plot(times, [b.failed_rps for b in buckets], color="tab:red", label="failed req/s")
    if summary.offered_rps is not None:
        bottom.axhline(summary.offered_rps, color="gray", linestyle="--", label="offered req/s")
    bottom.set_xlabel("time since start (s)")
    bottom.set_ylabel("answers per second")
    bottom.set_ylim(bottom=0)
    right = bottom.twinx()
    p50s = [
        (t, b.latency_p50 * 1000)
        for t, b in zip(times, buckets, strict=True)
        if b.latency_p50 is not None
    ]
    if p50s:
        right.plot(*zip(*p50s, strict=True), color="tab:blue", alpha=0.6, label="p50 latency")
    right.set_ylabel("p50 latency (ms)")
    right.set_ylim(bottom=0)
    handles, labels = bottom.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    bottom.legend(handles + more_handles, labels + more_labels, loc="upper left")
    bottom.set_title("throughput over time")
    fig.savefig(path, dpi=100)
