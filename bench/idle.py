"""``python -m bench idle``: the memory of N concurrent idle streams through the gateway.

    python -m bench idle [--streams 10000] [--workers 2] [--hold 10] [--ramp-per-s 2000]
        [--max-pending 128] [--retries 0] [--json FILE] [--log-dir DIR] [--open-timeout S]

An idle stream is a client holding an open streaming chat completion whose upstream
sent the first chunk and then goes quiet (a slow generation): the gateway holds a client
connection, an upstream connection and the request's state. This command starts a fake
OpenAI upstream (``python -m bench upstream``), a ``redis-server`` when --workers > 1,
and ``gateway serve`` with a generated config and a managed key with RPM, TPM and
prepaid credit on a priced model (auth, limits and accounting on, as in ``compare``),
each in its own process group. Then, from this process (the load generator's held
streams, `bench.loadgen.hold`), it opens N streaming requests at --ramp-per-s (at most
--max-pending being opened at once), each on its own connection, to a model whose
upstream sends the role and first content chunk at once and the next chunk only
``hold + 60`` s later; once the 200 and the first content event have come, the
connection stays idle.

Once all N are open (or --open-timeout has passed) it waits a moment and samples the
gateway's process tree (sum of VmRSS and VmHWM, per process: RSS, PSS, anonymous RSS,
open fds), the fake upstream and Redis apart, and the loopback connections of the
gateway; again at the end of --hold. RSS per stream is ``(rss_with - rss_before) /
opened``. Then it closes every client connection, waits until the gateway has let go
of its client and upstream connections, samples again and checks that a normal
request (JSON and stream) still succeeds.

File descriptors: each gateway worker needs about 2 per stream (client and upstream),
the fake upstream and this process 1 each. The soft RLIMIT_NOFILE is raised to the
hard limit here (the servers inherit it); if N streams cannot fit under the hard limit
the command refuses up front and says how many fit.

Everything listens on 127.0.0.1; every process started is stopped at the end (also on
Ctrl-C or an error). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from bench import targets
from bench.loadgen.client import Connection, JSONSink, StreamSink, Target, TransportError
from bench.loadgen.hold import hold_streams
from bench.loadgen.metrics import RequestRecord, percentile
from bench.processes import HOST, log_tail, server_processes
from bench.procfs import fd_count, own_rss_bytes, process_figures, tcp_connections, tree_memory
from bench.scenarios import UPSTREAM_MODEL
from bench.subcommand import (
    add_output_options,
    at_least,
    echo,
    gateway_source,
    options_from,
    parser_for,
    run_measurement,
    write_json,
)

__all__ = [
    "IdleOptions",
    "add_parser",
    "chat_request",
    "fd_needs",
    "format_table",
    "gateway_setup",
    "idle",
    "max_streams",
    "normal_request",
    "run",
]

JSON_MODEL = "m"  # a plain non-streamed answer
STREAM_MODEL = "m-stream"  # a short stream, answered at once
IDLE_MODEL = "m-idle"  # first chunk at once, the next one after the hold
EXTRA_FDS_SERVER = 256  # listening sockets, Redis/SQLite, pipes, libraries
EXTRA_FDS_CLIENT = 128
WORKER_SKEW = 1.1  # the kernel does not spread connections exactly evenly over workers


@dataclass
class IdleOptions:
    """One run; the fields the parser sets are its dests (`options_from`)."""

    streams: int = 10_000
    workers: int = 2
    hold_s: float = 10.0
    ramp_per_s: float = 2000.0
    max_pending: int = 128  # streams being opened at once (connecting, waiting for chunk 1)
    retries: int = 0  # a stream refused with 503 is asked again this many times
    open_timeout_s: float | None = None  # None: streams / ramp + 60 s
    http_server: str | None = None  # [server] http_server; None: the gateway's default
    settle_s: float = 2.0  # after all are open, before the first sample
    release_timeout_s: float = 60.0  # for the gateway to let go of the connections
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    echo: bool = True


# -- file descriptors ------------------------------------------------------------


def fd_needs(streams: int, workers: int) -> dict[str, int]:
    """Open files each process needs for `streams` idle streams."""
    per_worker = 2 * streams / workers * (WORKER_SKEW if workers > 1 else 1.0)
    return {
        "gateway_worker": math.ceil(per_worker) + EXTRA_FDS_SERVER,
        "fake_upstream": streams + EXTRA_FDS_SERVER,
        "load_generator": streams + EXTRA_FDS_CLIENT,
    }


def max_streams(limit: int, workers: int) -> int:
    """The most streams whose fd needs all fit under `limit` open files per process."""
    lo, hi = 0, max(limit, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if max(fd_needs(mid, workers).values()) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _raise_fd_limit(streams: int, workers: int) -> tuple[int, int] | str:
    """Raise the soft RLIMIT_NOFILE as needed; return the previous limits, or why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needs = fd_needs(streams, workers)
    need = max(needs.values())
    ceiling = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    if need > ceiling:
        parts = ", ".join(f"{k} {v}" for k, v in needs.items())
        return (
            f"{streams} idle streams with {workers} worker(s) need {need} open files in one "
            f"process ({parts}; a gateway worker holds 2 per stream) but RLIMIT_NOFILE is "
            f"{soft} (hard {hard}): at most {max_streams(ceiling, workers)} streams fit with "
            f"{workers} worker(s); use more --workers, fewer --streams or raise `ulimit -Hn`"
        )
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    return soft, hard


# -- the servers -----------------------------------------------------------------


def gateway_setup(
    streams: int, hold_s: float, http_server: str | None = None
) -> targets.GatewaySetup:
    """The gateway's config for `streams` streams held `hold_s`: a pool and timeouts that
    keep them all, and the models a run asks for."""
    quiet_s = hold_s + 60.0
    return targets.GatewaySetup(
        models={
            JSON_MODEL: UPSTREAM_MODEL,
            STREAM_MODEL: f"{UPSTREAM_MODEL}@chunks=5",
            IDLE_MODEL: f"{UPSTREAM_MODEL}@chunks=2&chunk_interval_ms={quiet_s * 1000:.0f}",
        },
        http_server=http_server,
        # Default 512: it would cap the concurrent upstream streams of each worker.
        max_connections=max(512, streams + 64),
        # The default, from RLIMIT_NOFILE, keeps room for an upstream connection per
        # client one: just under `streams` at the limit this raises (fd_needs).
        server_max_connections=streams + 64,
        idle_timeout_s=max(300.0, quiet_s + 60.0),
        total_timeout_s=max(900.0, quiet_s + 120.0),
    )


# -- the client ------------------------------------------------------------------


def chat_request(target: Target, key: str, model: str, stream: bool) -> tuple[h11.Request, bytes]:
    """The head and body of the chat completion that every run sends (the same as ever,
    so that runs compare): a short prompt, at most 64 tokens back, no usage asked."""
    body = orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say something slowly."}],
            "stream": stream,
            "max_tokens": 64,
        }
    )
    head = h11.Request(
        method="POST",
        target=target.path,
        headers=[
            ("host", target.host_header),
            ("authorization", f"Bearer {key}"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if stream else "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    return head, body


async def normal_request(target: Target, key: str, model: str, stream: bool) -> str:
    """One plain request to `model` (JSON or a stream, read to its end) on a connection
    of its own: "ok", or why it failed."""
    head, body = chat_request(target, key, model, stream)
    record = RequestRecord(scheduled=0.0, start=0.0)
    sink = StreamSink(record, 0.0) if stream else JSONSink(record)
    conn = Connection(target)
    try:
        await conn.post(head, body, sink)
    except TransportError as exc:
        sink.fail(exc.kind, exc.detail)
    finally:
        conn.close()
    if record.error is None:
        return "ok"
    if record.error == "status":
        return f"HTTP {record.status}: {sink.detail}"
    return f"{record.error}: {sink.detail}"


async def normal_requests(target: Target, key: str, timeout_s: float = 30.0) -> dict[str, str]:
    """`normal_request` of a JSON answer and of a short stream, each within `timeout_s`."""
    out = {}
    for model, stream in ((JSON_MODEL, False), (STREAM_MODEL, True)):
        out[model] = f"timeout: no complete answer within {timeout_s:g} s"
        with trio.move_on_after(timeout_s):
            out[model] = await normal_request(target, key, model, stream)
    return out


# -- the run ---------------------------------------------------------------------


def _sample(stack: targets.Stack) -> dict[str, Any]:
    """What the servers hold now: memory and fds of each, connections of the gateway."""
    gw_hwm, gw_rss = tree_memory(stack.gateway.proc.pid)
    procs = process_figures(stack.gateway.proc.pid)
    up_hwm, up_rss = tree_memory(stack.upstream.proc.pid)
    ports = [stack.gateway.port, stack.upstream.port]
    conns = tcp_connections(ports)
    sample: dict[str, Any] = {
        "gateway_rss_bytes": gw_rss,
        "gateway_hwm_bytes": gw_hwm,
        "gateway_pss_bytes": sum(p["pss_bytes"] or 0 for p in procs),
        "gateway_rss_anon_bytes": sum(p["rss_anon_bytes"] for p in procs),
        "gateway_processes": procs,
        "upstream_rss_bytes": up_rss,
        "upstream_hwm_bytes": up_hwm,
        "upstream_fds": fd_count(stack.upstream.proc.pid),
        "redis_rss_bytes": (
            tree_memory(stack.redis.proc.pid)[1] if stack.redis is not None else None
        ),
        "client_rss_bytes": own_rss_bytes(),
        # Established connections seen at each end (both ends are on loopback).
        "gateway_client_connections": conns[f"local:{stack.gateway.port}"],
        "gateway_upstream_connections": conns[f"remote:{stack.upstream.port}"],
        "at": time.time(),
    }
    return sample


async def _warm_up(target: Target, key: str, workers: int) -> None:
    """A few plain requests and short streams over several connections, so that every
    worker has imported, connected and cached what a first request needs."""
    failures: list[str] = []

    async def warm() -> None:
        failures.extend(v for v in (await normal_requests(target, key)).values() if v != "ok")

    async with trio.open_nursery() as nursery:
        for _ in range(4 * workers):
            nursery.start_soon(warm)
    if failures:
        raise RuntimeError(f"the gateway fails normal requests: {failures[0]}")


async def _let_go(
    stack: targets.Stack, upstream_before: int, timeout_s: float
) -> tuple[float | None, list[tuple[float, int, int]]]:
    """Seconds until the gateway has closed its client connections and its upstream ones
    are back to `upstream_before` (None: not within `timeout_s`), and the counts on the
    way: (s since the release, client, upstream)."""
    client, upstream = f"local:{stack.gateway.port}", f"remote:{stack.upstream.port}"
    t_release = trio.current_time()
    curve: list[tuple[float, int, int]] = []
    while trio.current_time() - t_release < timeout_s:
        counts = await trio.to_thread.run_sync(
            tcp_connections, [stack.gateway.port, stack.upstream.port]
        )
        curve.append((round(trio.current_time() - t_release, 2), counts[client], counts[upstream]))
        if counts[client] == 0 and counts[upstream] <= upstream_before:
            return trio.current_time() - t_release, curve
        await trio.sleep(0.25)
    return None, curve


async def _drive(
    stack: targets.Stack, opts: IdleOptions, say: Callable[[str], None]
) -> dict[str, Any]:
    """Warm up, sample, open and hold the streams, sample, let go, sample, check."""
    n = opts.streams
    key = stack.gateway.api_key
    assert key is not None  # start_gateway creates one
    target = Target.from_base_url(stack.gateway.base_url)
    await _warm_up(target, key, opts.workers)
    await trio.sleep(1.0)
    before = await trio.to_thread.run_sync(_sample, stack)
    say(
        f"before: gateway RSS {before['gateway_rss_bytes'] / 2**20:.1f} MB; "
        f"opening {n} streams at {opts.ramp_per_s:g}/s, at most {opts.max_pending} at once"
    )

    head, body = chat_request(target, key, IDLE_MODEL, True)
    open_timeout = opts.open_timeout_s
    if open_timeout is None:
        open_timeout = n / opts.ramp_per_s + 60.0
    async with hold_streams(
        target,
        head,
        body,
        n,
        ramp_per_s=opts.ramp_per_s,
        max_pending=opts.max_pending,
        open_timeout_s=open_timeout,
        retries=opts.retries,
    ) as state:
        while not state.all_done.is_set():
            with trio.move_on_after(2.0):
                await state.all_done.wait()
            if not state.all_done.is_set():
                elapsed = trio.current_time() - state.start
                say(
                    f"  {elapsed:5.1f} s: {state.opened} open, {state.failures} failed, "
                    f"{state.retried} 503s asked again"
                )
        last = state.last_open_at
        open_time = last - state.start if last is not None else None
        say(f"{state.opened} streams open, {state.failures} failed; holding")
        settle = min(opts.settle_s, opts.hold_s)
        await trio.sleep(settle)
        with_streams = await trio.to_thread.run_sync(_sample, stack)
        await trio.sleep(max(0.0, opts.hold_s - settle))
        end_of_hold = await trio.to_thread.run_sync(_sample, stack)
    say("closed every client connection; waiting for the gateway to let go")

    let_go_s, let_go_curve = await _let_go(
        stack, before["gateway_upstream_connections"], opts.release_timeout_s
    )
    await trio.sleep(1.0)
    released = await trio.to_thread.run_sync(_sample, stack)
    after_checks = await normal_requests(target, key)

    opened = state.opened
    grow = end_of_hold["gateway_rss_bytes"] - before["gateway_rss_bytes"]
    grow_pss = end_of_hold["gateway_pss_bytes"] - before["gateway_pss_bytes"]
    grow_up = end_of_hold["upstream_rss_bytes"] - before["upstream_rss_bytes"]
    lat = sorted(state.open_latencies)
    return {
        "streams_requested": n,
        "streams_opened": opened,
        "streams_failed": state.failures,
        "retried_503": state.retried,
        "failed_by_reason": dict(state.failed),
        "failure_examples": state.examples,
        "time_to_open_s": open_time,
        "open_latency_s": {
            "p50": statistics.median(lat) if lat else None,
            "p90": percentile(lat, 90) if lat else None,
            "p99": percentile(lat, 99) if lat else None,
            "max": lat[-1] if lat else None,
        },
        "rss_per_stream_bytes": grow / opened if opened else None,
        "pss_per_stream_bytes": grow_pss / opened if opened else None,
        "upstream_rss_per_stream_bytes": grow_up / opened if opened else None,
        "let_go_s": let_go_s,
        "let_go_curve": let_go_curve,
        "after_checks": after_checks,
        "samples": {
            "before": before,
            "with_streams": with_streams,
            "end_of_hold": end_of_hold,
            "after_close": released,
        },
    }


def idle(opts: IdleOptions) -> dict[str, Any]:
    """Run the measurement; return the document --json writes."""
    say = echo(opts.echo)
    refused = _raise_fd_limit(opts.streams, opts.workers)
    if isinstance(refused, str):
        raise RuntimeError(refused)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with server_processes(opts.log_dir, "bench-idle-") as procs:
            setup = gateway_setup(opts.streams, opts.hold_s, opts.http_server)
            servers = targets.start_stack(
                procs, opts.start_timeout_s, opts.workers, setup, "bench-idle"
            )
            say(
                f"gateway on {HOST}:{servers.gateway.port} ({opts.workers} worker(s)), "
                f"fake upstream on {servers.upstream.port}"
                + (f", redis on {servers.redis.port}" if servers.redis is not None else "")
            )
            try:
                result = trio.run(_drive, servers, opts, say)
            except BaseException:
                for name, path in servers.logs.items():
                    tail = log_tail(path)
                    if tail:
                        say(f"--- {name} log tail:\n{tail}")
                raise
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, refused)
    return {
        "gateway_source": gateway_source(),
        "options": {
            "streams": opts.streams,
            "workers": opts.workers,
            "hold_s": opts.hold_s,
            "ramp_per_s": opts.ramp_per_s,
            "max_pending": opts.max_pending,
            "retries": opts.retries,
            "http_server": opts.http_server,
            "open_timeout_s": opts.open_timeout_s,
            "rlimit_nofile": list(nofile),
            "fd_needs": fd_needs(opts.streams, opts.workers),
        },
        **result,
    }


# -- report ----------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MB"


def format_table(doc: dict[str, Any]) -> str:
    """The figures of `doc` as the table printed at the end of a run."""
    s = doc["samples"]
    before, with_, after = s["before"], s["end_of_hold"], s["after_close"]
    failed = doc["failed_by_reason"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(failed.items())) if failed else "none"
    per = doc["rss_per_stream_bytes"]
    pss = doc["pss_per_stream_bytes"]
    up_per = doc["upstream_rss_per_stream_bytes"]
    opened = doc["time_to_open_s"]
    lat = doc["open_latency_s"]
    rows = [
        ("streams requested", f"{doc['streams_requested']:,}"),
        ("streams opened", f"{doc['streams_opened']:,}"),
        ("streams failed", f"{doc['streams_failed']:,} ({reasons})"),
        ("503s asked again", f"{doc.get('retried_503', 0):,}"),
        (
            "gateway workers",
            f"{doc['options']['workers']} (http server: "
            f"{doc['options']['http_server'] or 'default'})",
        ),
        (
            "time to open",
            "-"
            if opened is None
            else f"{opened:.1f} s (per stream p50 "
            f"{(lat['p50'] or 0) * 1000:.0f} ms, p99 {(lat['p99'] or 0) * 1000:.0f} ms)",
        ),
        ("gateway RSS before", _mb(before["gateway_rss_bytes"])),
        (
            "gateway RSS with streams",
            f"{_mb(with_['gateway_rss_bytes'])} (peak {_mb(with_['gateway_hwm_bytes'])}, "
            f"PSS {_mb(with_['gateway_pss_bytes'])})",
        ),
        (
            "gateway RSS after close",
            f"{_mb(after['gateway_rss_bytes'])} (let go in "
            + ("-" if doc["let_go_s"] is None else f"{doc['let_go_s']:.1f} s")
            + f", {after['gateway_client_connections']} client / "
            f"{after['gateway_upstream_connections']} upstream connections left)",
        ),
        (
            "gateway per stream",
            "-" if per is None else f"{per / 1024:.1f} KB RSS, {(pss or 0) / 1024:.1f} KB PSS",
        ),
        (
            "fake upstream RSS",
            f"{_mb(with_['upstream_rss_bytes'])} with streams"
            + ("" if up_per is None else f" ({up_per / 1024:.1f} KB per stream)"),
        ),
        ("redis RSS", _mb(with_["redis_rss_bytes"])),
        ("load generator RSS", _mb(with_["client_rss_bytes"])),
        (
            "normal request after",
            ", ".join(f"{k}: {v}" for k, v in doc["after_checks"].items()),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    out += ["", "gateway processes with streams:"]
    out.append(f"  {'pid':>7} {'RSS MB':>8} {'PSS MB':>8} {'anon MB':>8} {'fds':>6}  command")
    for p in with_["gateway_processes"]:
        out.append(
            f"  {p['pid']:>7} {p['rss_bytes'] / 2**20:>8.1f} "
            f"{(p['pss_bytes'] or 0) / 2**20:>8.1f} {p['rss_anon_bytes'] / 2**20:>8.1f} "
            f"{p['fds'] if p['fds'] is not None else '-':>6}  {p['command']}"
        )
    return "\n".join(out)


# -- command line ----------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``idle`` subcommand and return its parser."""
    parser = parser_for(
        subparsers, "idle", "memory of N concurrent idle streams through the gateway", __doc__
    )
    defaults = IdleOptions()

    def number(flag: str, field: str, metavar: str, kind: Any, text: str) -> None:
        """An option for IdleOptions' `field` of type `kind`, with its default."""
        default = getattr(defaults, field)
        parser.add_argument(
            flag, type=kind, default=default, dest=field, metavar=metavar,
            help=f"{text} (default {default:g})",
        )  # fmt: skip

    count = at_least(int, 1)
    seconds = at_least(float, 0.0)
    positive = at_least(float, 0.0, strict=True)
    number("--streams", "streams", "N", count, "idle streams to open")
    number(
        "--workers", "workers", "N", count, "gateway worker processes; N > 1 starts a redis-server"
    )
    number("--hold", "hold_s", "S", seconds, "seconds to hold every stream idle once all are open")
    number("--ramp-per-s", "ramp_per_s", "R", positive, "new streams per second")
    number(
        "--max-pending", "max_pending", "N", count,
        "streams being opened at once: many more than the gateway's accept backlog "
        "(hypercorn: 100) make the kernel drop SYNs, retried after 1, 3, 7 s",
    )  # fmt: skip
    number(
        "--retries", "retries", "N", at_least(int, 0),
        "a stream refused with 503 (the gateway shedding load) is asked again after 1 s, "
        "up to N times, as the OpenAI SDK would",
    )  # fmt: skip
    parser.add_argument(
        "--http-server", choices=["builtin", "hypercorn"], default=None,
        help="the gateway's [server] http_server (default: the gateway's own default)",
    )  # fmt: skip
    parser.add_argument(
        "--open-timeout", type=positive, default=None, dest="open_timeout_s", metavar="S",
        help="give up on streams not open after S (default: streams / ramp + 60)",
    )  # fmt: skip
    add_output_options(parser, "write the figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``idle`` with parsed `args`: print the table, write --json."""
    opts = options_from(args, IdleOptions)

    doc = run_measurement("idle", lambda: idle(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc), flush=True)
    write_json(args.json, doc)
    ok = (
        doc["streams_opened"] == doc["streams_requested"]
        and all(v == "ok" for v in doc["after_checks"].values())
        and doc["let_go_s"] is not None
    )
    return 0 if ok else 1
