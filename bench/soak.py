"""``python -m bench soak``: a long steady load with faults; does anything leak?

    python -m bench soak [--duration 30m] [--rate R] [--streams 200] [--sample 10]
        [--warmup S] [--json FILE] [--log-dir DIR]

Starts the fake OpenAI upstream and ``gateway serve`` (one worker, a managed key with
RPM, TPM and credit, so every request is admitted, reserved and journaled: the
servers of `bench.targets`). Without --rate it first finds the knee: the gateway's
closed-loop req/s over 5 s at 32 connections, and runs at 70% of it. Then, for
--duration (``90s``, ``30m``, ``1h`` or seconds):

- --streams streams held open the whole time (a chunk every 5 s);
- an open-loop load at the rate: 98% plain answers, 1% answered by the upstream with
  a 500 (fake directive ``status=500``), 1% streams the upstream resets after two
  content chunks (``reset_after=3``);
- every --sample seconds: the gateway's RSS and open fds (its process tree, /proc),
  its pooled connections to the upstream (established TCP connections to the fake's
  port) and the ledger backlog (bytes of journal not yet moved into SQLite).

At the end the streams close, the gateway is stopped with SIGTERM (it drains its
ledger) and its SQLite ledger is read. The run fails if, after the warm-up (--warmup,
default a fifth of the run, at most 5 minutes), RSS grew by more than 10% (the mean of
the last three samples against the first three), open fds other than the client and
upstream connections grew (by more than 16 and 10%: connections follow the load in
flight, a leak does not), or fewer requests are in the ledger than got an answer
(every request that got an HTTP status, the held streams included, must have a final
row; but a 503 is the gateway shedding load before admission, which writes none: those
are counted apart). Everything listens on 127.0.0.1 and is stopped at the end. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from bench import targets
from bench.loadgen.client import Target
from bench.loadgen.hold import hold_streams
from bench.loadgen.runner import LoadConfig, LoadRun
from bench.processes import Processes, log_tail
from bench.procfs import fd_count, process_tree, tcp_connections, tree_memory
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

__all__ = ["SoakOptions", "add_parser", "format_report", "parse_duration", "run", "soak"]

PLAIN = "m"  # compare's json scenario
FAILING = "fake/m@status=500"  # the upstream answers 500
SHED_STATUS = 503  # refused before admission (docs/reliability.md R7): no ledger row
RESET = "fake/m@chunks=20&reset_after=3"  # the upstream resets the stream mid-way
HELD = "fake/m@chunks=100000&chunk_interval_ms=5000"  # a stream that outlasts the run
KNEE_CONNECTIONS = 32
KNEE_S = 5.0
FAULT_SHARE = 0.01  # of the load, each: upstream 500s, mid-stream resets
RSS_DRIFT = 0.10
FD_SLACK = 16


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``30m`` or ``1h``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration (90s, 30m, 1h): {text!r}")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be > 0")
    return value


@dataclass
class SoakOptions:
    duration_s: float = 1800.0
    rate: float | None = None  # None: 70% of the knee
    knee_fraction: float = 0.7
    streams: int = 200
    sample_s: float = 10.0
    warmup_s: float | None = None  # None: a fifth of the run, at most 300 s
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    echo: bool = True


@dataclass
class _Gauges:
    """Where the samples come from."""

    gateway_pid: int
    gateway_port: int
    upstream_port: int
    journal: Path


def _journal_bytes(journal: Path) -> int:
    """Bytes of journal files (rows not yet committed to SQLite, or not yet deleted)."""
    if journal.is_dir():
        files = list(journal.iterdir())
    else:
        files = list(journal.parent.glob(journal.name + "*"))
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    return total


def _sample(g: _Gauges, elapsed_s: float) -> dict[str, Any]:
    fds = sum(fd_count(pid) or 0 for pid in process_tree(g.gateway_pid))
    conns = tcp_connections([g.upstream_port, g.gateway_port])
    pooled = conns[f"remote:{g.upstream_port}"]
    clients = conns[f"local:{g.gateway_port}"]
    return {
        "t_s": round(elapsed_s, 1),
        "rss_bytes": tree_memory(g.gateway_pid)[1],
        "fds": fds,
        "pooled_connections": pooled,
        "client_connections": clients,
        # Descriptors that are neither a client's connection nor one to the upstream:
        # they follow the load up and down; what grows here is a leak.
        "other_fds": max(0, fds - pooled - clients),
        "journal_bytes": _journal_bytes(g.journal),
    }


def _load(url: str, key: str, model: str, rate: float, duration_s: float, stream: bool) -> LoadRun:
    return LoadRun(
        LoadConfig(
            url=url,
            model=model,
            stream=stream,
            rate=rate,
            duration_s=duration_s,
            api_key=key,
            prompt_tokens=32,
            max_tokens=32,
            timeout_s=30.0,
        )
    )


def _answered(run: LoadRun) -> int:
    """Requests the gateway admitted and answered: each must have its ledger row. A 503
    here is the gateway's own refusal before admission (overload shedding; the soak's
    upstream never answers 503), which has none."""
    return sum(1 for r in run.records if r.status > 0 and r.status != SHED_STATUS)


def _shed(run: LoadRun) -> int:
    return sum(1 for r in run.records if r.status == SHED_STATUS)


def _held_request(target: Target, key: str) -> tuple[h11.Request, bytes]:
    body = orjson.dumps(
        {"model": HELD, "messages": [{"role": "user", "content": "hold"}], "stream": True}
    )
    head = h11.Request(
        method="POST",
        target=target.path,
        headers=[
            ("host", target.host_header),
            ("authorization", f"Bearer {key}"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    return head, body


async def _drive(
    stack: targets.Stack, opts: SoakOptions, say: Callable[[str], None], journal: Path
) -> dict[str, Any]:
    gw = stack.gateway
    key = gw.api_key
    assert key is not None
    url = gw.base_url
    answered = shed = 0
    knee: float | None = None
    rate = opts.rate
    if rate is None:
        probe = LoadRun(
            LoadConfig(
                url=url,
                model=PLAIN,
                concurrency=KNEE_CONNECTIONS,
                duration_s=KNEE_S,
                api_key=key,
                prompt_tokens=32,
                max_tokens=32,
            )
        )
        await probe.run()
        answered += _answered(probe)
        shed += _shed(probe)
        knee = probe.ok / KNEE_S
        rate = max(1.0, knee * opts.knee_fraction)
        say(f"knee ~{knee:.0f} req/s; soaking at {rate:.0f} req/s")
    gauges = _Gauges(gw.proc.pid, gw.port, stack.upstream.port, journal)
    samples: list[dict[str, Any]] = []
    target = Target.from_base_url(url)
    head, body = _held_request(target, key)
    start = trio.current_time()
    runs = [
        _load(url, key, PLAIN, rate * (1 - 2 * FAULT_SHARE), opts.duration_s, False),
        _load(url, key, FAILING, rate * FAULT_SHARE, opts.duration_s, False),
        _load(url, key, RESET, rate * FAULT_SHARE, opts.duration_s, True),
    ]
    async with trio.open_nursery() as nursery:

        async def sampler() -> None:
            while True:
                elapsed = trio.current_time() - start
                samples.append(await trio.to_thread.run_sync(_sample, gauges, elapsed))
                s = samples[-1]
                say(
                    f"{elapsed:7.0f} s: RSS {s['rss_bytes'] / 2**20:.1f} MB, {s['fds']} fds, "
                    f"{s['pooled_connections']} pooled, journal {s['journal_bytes']} B"
                )
                await trio.sleep(opts.sample_s)

        held = 0
        held_failures: dict[str, int] = {}
        held_examples: dict[str, str] = {}
        async with hold_streams(
            target,
            head,
            body,
            opts.streams,
            ramp_per_s=100.0,
            max_pending=50,
            open_timeout_s=opts.duration_s,
        ) as state:
            nursery.start_soon(sampler)
            async with trio.open_nursery() as loads:
                for run in runs:
                    loads.start_soon(run.run)
            held = state.opened
            held_failures = dict(state.failed)
            held_examples = dict(state.examples)
        await trio.sleep(min(1.0, opts.sample_s))
        samples.append(await trio.to_thread.run_sync(_sample, gauges, trio.current_time() - start))
        nursery.cancel_scope.cancel()
    answered += sum(_answered(r) for r in runs) + held
    shed += sum(_shed(r) for r in runs)
    return {
        "knee_rps": knee,
        "rate_rps": rate,
        "held_streams": held,
        "held_failures": held_failures,
        "held_failure_examples": held_examples,
        "answered": answered,
        "shed": shed,
        "requests": {
            "plain": len(runs[0].records),
            "upstream_500": len(runs[1].records),
            "mid_stream_reset": len(runs[2].records),
        },
        "samples": samples,
    }


def _ledger_rows(sqlite_path: Path) -> dict[str, int]:
    """Final rows and rows still pending in the gateway's ledger."""
    with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as db:
        final = db.execute("SELECT count(*) FROM usage WHERE status != 'pending'").fetchone()[0]
        pending = db.execute("SELECT count(*) FROM usage WHERE status = 'pending'").fetchone()[0]
    return {"final": int(final), "pending": int(pending)}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def verdict(doc: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    """The checks of the run: RSS drift, fd growth, answered requests in the ledger."""
    after = [s for s in doc["samples"] if s["t_s"] >= warmup_s] or doc["samples"]
    first, last = after[:3], after[-3:]
    rss0, rss1 = _mean([s["rss_bytes"] for s in first]), _mean([s["rss_bytes"] for s in last])
    fd0, fd1 = _mean([s["other_fds"] for s in first]), _mean([s["other_fds"] for s in last])
    drift = rss1 / rss0 - 1 if rss0 else 0.0
    missing = doc["answered"] - doc["ledger"]["final"]
    checks = {
        "rss_drift": round(drift, 4),
        "rss_ok": drift <= RSS_DRIFT,
        "fds_first": round(fd0, 1),
        "fds_last": round(fd1, 1),
        "fds_ok": fd1 <= fd0 * 1.1 + FD_SLACK,
        "missing_from_ledger": max(0, missing),
        "ledger_ok": missing <= 0,
    }
    checks["ok"] = checks["rss_ok"] and checks["fds_ok"] and checks["ledger_ok"]
    return checks


def soak(opts: SoakOptions) -> dict[str, Any]:
    """Run the soak; return the document --json writes (with its `checks`)."""
    say = echo(opts.echo)
    warmup = opts.warmup_s if opts.warmup_s is not None else min(300.0, opts.duration_s / 5)
    with contextlib.ExitStack() as stack:
        log_dir = opts.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-soak-"))
        )
        procs = Processes(log_dir)
        stack.callback(procs.close)
        setup = targets.GatewaySetup(total_timeout_s=opts.duration_s + 600)
        servers = targets.start_stack(procs, opts.start_timeout_s, 1, setup, "bench-soak")
        try:
            journal = log_dir / "gateway.sqlite3.journal"  # the default next to the ledger
            doc = trio.run(_drive, servers, opts, say, journal)
            gw = servers.gateway.proc
            gw.send_signal(signal.SIGTERM)  # drains the ledger into SQLite
            try:
                gw.wait(timeout=opts.start_timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError("the gateway did not stop within the timeout") from None
        except BaseException:
            tail = log_tail(servers.gateway.log_path)
            if tail:
                say(f"--- gateway log tail:\n{tail}")
            raise
        doc["ledger"] = _ledger_rows(log_dir / "gateway.sqlite3")
    doc["source"] = gateway_source()
    doc["options"] = {
        "duration_s": opts.duration_s,
        "rate": opts.rate,
        "streams": opts.streams,
        "sample_s": opts.sample_s,
        "warmup_s": warmup,
    }
    doc["checks"] = verdict(doc, warmup)
    return doc


def format_report(doc: dict[str, Any]) -> str:
    """The samples as a table, then the checks."""
    lines = [
        f"{'t s':>7} {'RSS MB':>8} {'fds':>6} {'clients':>7} {'pooled':>7} {'other':>6} "
        f"{'journal B':>10}",
        "-" * 57,
    ]
    for s in doc["samples"]:
        lines.append(
            f"{s['t_s']:>7.0f} {s['rss_bytes'] / 2**20:>8.1f} {s['fds']:>6} "
            f"{s['client_connections']:>7} {s['pooled_connections']:>7} {s['other_fds']:>6} "
            f"{s['journal_bytes']:>10}"
        )
    c = doc["checks"]
    knee = f"{doc['knee_rps']:.0f}" if doc["knee_rps"] is not None else "-"
    lines += [
        "",
        f"knee {knee} req/s, rate {doc['rate_rps']:.1f} req/s, {doc['held_streams']} held "
        f"streams; requests {doc['requests']}",
        f"answered {doc['answered']} (and {doc['shed']} shed with 503 before admission), "
        f"in the ledger {doc['ledger']['final']} (+{doc['ledger']['pending']} pending)",
        f"RSS drift {c['rss_drift'] * 100:+.1f}% ({'ok' if c['rss_ok'] else 'FAIL'}), "
        f"other fds {c['fds_first']:.0f} -> {c['fds_last']:.0f} "
        f"({'ok' if c['fds_ok'] else 'FAIL'}), "
        f"missing from the ledger {c['missing_from_ledger']} "
        f"({'ok' if c['ledger_ok'] else 'FAIL'})",
        "PASS" if c["ok"] else "FAIL",
    ]
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``soak`` subcommand and return its parser."""
    parser = parser_for(subparsers, "soak", "a long load with faults: leaks?", __doc__)
    d = SoakOptions()
    parser.add_argument("--duration", type=parse_duration, default=d.duration_s,
                        dest="duration_s", metavar="D", help="90s, 30m, 1h")  # fmt: skip
    parser.add_argument("--rate", type=at_least(float, 0.1), default=None,
                        help="req/s (default: 70%% of the knee)")  # fmt: skip
    parser.add_argument("--streams", type=at_least(int, 1), default=d.streams,
                        help="streams held open")  # fmt: skip
    parser.add_argument("--sample", type=at_least(float, 0.1), default=d.sample_s,
                        dest="sample_s", metavar="S", help="seconds between samples")  # fmt: skip
    parser.add_argument("--warmup", type=parse_duration, default=None, dest="warmup_s",
                        metavar="D", help="not judged (default: a fifth, at most 5m)")  # fmt: skip
    parser.add_argument("--start-timeout", type=at_least(float, 1.0), default=d.start_timeout_s,
                        dest="start_timeout_s", metavar="S", help="server start-up")  # fmt: skip
    add_output_options(parser, "write the samples and checks here")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw the samples over time (needs matplotlib)")  # fmt: skip
    return parser


def plot_samples(doc: dict[str, Any], path: Path) -> None:
    """RSS, open fds, pooled upstream connections and the journal backlog over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = doc["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    panels = [
        ("RSS (MB)", [s["rss_bytes"] / 1e6 for s in samples]),
        ("open fds (all / not connections)", [s["fds"] for s in samples]),
        ("pooled upstream connections", [s["pooled_connections"] for s in samples]),
        ("journal backlog (KB)", [s["journal_bytes"] / 1e3 for s in samples]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 8), sharex=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.plot(minutes, values, linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
    axes[1].plot(minutes, [s["other_fds"] for s in samples], linewidth=1)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(
        f"bench soak: {doc['rate_rps']:.0f} req/s + {doc['held_streams']} held streams", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Execute ``soak``: print the samples and checks, write --json; 1 if a check fails."""
    opts = options_from(args, SoakOptions)
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    doc = run_measurement("soak", lambda: soak(opts))
    if isinstance(doc, int):
        return doc
    print(format_report(doc), flush=True)
    print(f"({time.monotonic() - started:.0f} s)")
    write_json(args.json, doc)
    if args.plot is not None:
        plot_samples(doc, args.plot)
    return 0 if doc["checks"]["ok"] else 1
