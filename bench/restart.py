"""``python -m bench restart``: what clients see while a gateway worker is replaced.

    python -m bench restart [--workers 2] [--rounds 3] [--baseline 1] [--during 4]
        [--interval-ms 20] [--json FILE] [--log-dir DIR] [--start-timeout S]

Starts the fake OpenAI upstream, a redis-server and ``gateway serve --workers N``
(`bench.targets`, as ``compare`` does). Each round it sends chat completions one at a
time, each on a new connection so that the kernel spreads them over the workers'
SO_REUSEPORT sockets, --interval-ms apart: for --baseline seconds, then, after a
SIGKILL to one worker, for --during seconds while the supervisor starts its
replacement. A replacement that joined the port's group before its app had started
would be handed connections that wait for its whole start-up (0.25-0.39 s at worst,
measured when it listened early); one that joins once started (`gateway.server.serve`
opens its socket after the lifespan startup) costs nothing (~0.04 s at worst). The
table gives per phase the requests, failures, p50, p99 and the slowest one.

Everything listens on 127.0.0.1; every process started is stopped at the end. Linux
only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import targets
from bench.processes import HOST, Processes, log_tail
from bench.procfs import live_children
from bench.subcommand import (
    add_output_options,
    options_from,
    parser_for,
    run_measurement,
    write_json,
)

__all__ = ["RestartOptions", "add_parser", "format_table", "restart", "run", "summarise"]

MODEL = "m"  # compare's json scenario: a plain non-streamed answer


@dataclass
class RestartOptions:
    workers: int = 2
    rounds: int = 3
    baseline_s: float = 1.0
    during_s: float = 4.0  # the replacement's whole start-up fits in it (~1-2 s)
    interval_ms: float = 20.0
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    echo: bool = True


def _send_for(
    client: httpx.Client, url: str, key: str, seconds: float, interval_s: float
) -> tuple[list[float], int]:
    """Requests one at a time for `seconds`: (latencies in seconds, failures)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    latencies: list[float] = []
    failed = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            ok = client.post(url, json=body, headers=headers).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append(time.monotonic() - started)
        else:
            failed += 1
        time.sleep(interval_s)
    return latencies, failed


def summarise(phase: str, latencies: list[float], failed: int) -> dict[str, Any]:
    """One row of the table: counts and latencies in ms."""
    ordered = sorted(latencies)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else None
    return {
        "phase": phase,
        "requests": len(latencies) + failed,
        "failed": failed,
        "p50_ms": ms(statistics.median(ordered)) if ordered else None,
        "p99_ms": ms(p99),
        "max_ms": ms(ordered[-1]) if ordered else None,
    }


def _kill_one(gateway_pid: int, timeout_s: float) -> float:
    """SIGKILL the first worker; seconds until the supervisor has started another."""
    before = live_children(gateway_pid)
    if not before:
        raise RuntimeError("the gateway has no worker processes")
    os.kill(before[0], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < timeout_s:
        if set(live_children(gateway_pid)) - set(before):
            return time.monotonic() - killed
        time.sleep(0.01)
    raise RuntimeError(f"no replacement worker within {timeout_s:g} s")


def restart(opts: RestartOptions) -> dict[str, Any]:
    """Run the measurement; return the document --json writes."""

    def say(text: str) -> None:
        if opts.echo:
            print(text, file=sys.stderr, flush=True)

    binary = targets.find_redis_server()
    if binary is None:
        raise RuntimeError(
            "--workers > 1 needs redis-server on PATH (apt-get install redis-server)"
        )
    rounds: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        log_dir = opts.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-restart-"))
        )
        procs = Processes(log_dir)
        stack.callback(procs.close)
        upstream = targets.start_upstream(procs, opts.start_timeout_s)
        redis = targets.start_redis(procs, binary, opts.start_timeout_s)
        gateway = targets.start_gateway(
            procs, upstream, opts.start_timeout_s, opts.workers, redis.url, key_name="bench-restart"
        )
        assert gateway.api_key is not None
        url = f"{gateway.base_url}/chat/completions"
        say(f"gateway on {HOST}:{gateway.port} ({opts.workers} workers)")
        # No keep-alive: each request on a new connection, spread by the kernel.
        limits = httpx.Limits(max_keepalive_connections=0)
        interval_s = opts.interval_ms / 1000
        try:
            with httpx.Client(timeout=30, limits=limits) as client:
                _send_for(client, url, gateway.api_key, 0.5, interval_s)  # warm-up
                for i in range(opts.rounds):
                    base = _send_for(client, url, gateway.api_key, opts.baseline_s, interval_s)
                    replaced_s = _kill_one(gateway.proc.pid, opts.start_timeout_s)
                    during = _send_for(client, url, gateway.api_key, opts.during_s, interval_s)
                    rounds.append(
                        {
                            "round": i + 1,
                            "replacement_started_s": round(replaced_s, 3),
                            "baseline": summarise("baseline", *base),
                            "during": summarise("during", *during),
                        }
                    )
                    say(f"round {i + 1}: slowest during {rounds[-1]['during']['max_ms']} ms")
        except BaseException:
            tail = log_tail(gateway.log_path)
            if tail:
                say(f"--- gateway log tail:\n{tail}")
            raise
    return {
        "options": {
            "workers": opts.workers,
            "rounds": opts.rounds,
            "baseline_s": opts.baseline_s,
            "during_s": opts.during_s,
            "interval_ms": opts.interval_ms,
        },
        "rounds": rounds,
    }


def format_table(doc: dict[str, Any]) -> str:
    """The rounds as a table, one line per phase."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"{'round':>5} {'phase':<9} {'requests':>8} {'failed':>6} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}",
        "-" * 58,
    ]
    for r in doc["rounds"]:
        for row in (r["baseline"], r["during"]):
            lines.append(
                f"{r['round']:>5} {row['phase']:<9} {row['requests']:>8} {row['failed']:>6} "
                f"{cell(row['p50_ms']):>8} {cell(row['p99_ms']):>8} {cell(row['max_ms']):>8}"
            )
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``restart`` subcommand and return its parser."""
    parser = parser_for(
        subparsers, "restart", "client latency while a gateway worker is replaced", __doc__
    )
    defaults = RestartOptions()
    for flag, field, metavar, text in (
        ("--workers", "workers", "N", "gateway worker processes (at least 2)"),
        ("--rounds", "rounds", "N", "workers killed, one per round"),
        ("--baseline", "baseline_s", "S", "seconds of requests before each kill"),
        ("--during", "during_s", "S", "seconds of requests after each kill"),
        ("--interval-ms", "interval_ms", "MS", "pause between requests"),
        ("--start-timeout", "start_timeout_s", "S", "for each server to start"),
    ):
        default = getattr(defaults, field)
        parser.add_argument(
            flag, type=type(default), default=default, dest=field, metavar=metavar,
            help=f"{text} (default {default:g})",
        )  # fmt: skip
    add_output_options(parser, "write the figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``restart`` with parsed `args`: print the table, write --json."""
    if args.workers < 2 or args.rounds < 1 or args.baseline_s < 0 or args.during_s <= 0:
        print(
            "python -m bench restart: --workers >= 2, --rounds >= 1, --baseline >= 0, --during > 0",
            file=sys.stderr,
        )
        return 2
    opts = options_from(args, RestartOptions)
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)
    doc = run_measurement("restart", lambda: restart(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc), flush=True)
    write_json(args.json, doc)
    return 0 if all(r["during"]["failed"] == 0 for r in doc["rounds"]) else 1
