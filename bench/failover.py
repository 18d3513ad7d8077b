"""``python -m bench failover``: routing under upstream failure, against all healthy.

    python -m bench failover [--rate 200 | --concurrency N] [--duration 5] [--rounds 3]
        [--stream] [--json FILE] [--log-dir DIR] [--start-timeout S]

Starts the fake OpenAI upstream (``python -m bench upstream``) and ``gateway serve``
with three models, each spread evenly (``strategy = "weighted"``, weight 1 each) over
three deployments of that upstream:

- ``healthy``: three healthy deployments (the baseline);
- ``flaky``: one of them fails 20% of its requests with a 500 (the fake's
  ``fail_rate=0.2``: every fifth request it gets);
- ``flaky-dead``: as ``flaky``, and the third deployment is a provider nobody listens
  on (connection refused).

Each deployment has an id of its own (a directive without effect, ``retry_after=...``,
tells them apart), so health state is not shared between the models. Then, for each
round, it runs the load of ``python -m bench load`` (bench.loadgen) against each model in
turn for --duration seconds, the order rotating from round to round, and prints per
model the medians over the rounds of:
requests, the share that succeeded, p50 and p99, the p50 and p99 added over
``healthy`` in the same round, and the upstream attempts per request, read from the
gateway's usage ledger (its ``attempts`` column). The gateway runs with the default
``[routing]`` (3 attempts, retry budget 0.2 + 3/s, passive health), one worker, and a
key from the config file (no limits: routing is what is measured).

The load is open loop by default (--rate: arrivals on a fixed schedule, well below
saturation, so that latency shows the work a request costs, not queueing on a shared
machine); --concurrency N runs the closed loop instead (N connections, each sending its
next request when the last one ends), which finds throughput but mixes queueing into
the latency.

Everything listens on 127.0.0.1; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench import targets
from bench.loadgen.runner import LoadConfig, LoadRun
from bench.processes import (
    HOST,
    Processes,
    free_port,
    log_tail,
    server_processes,
    venv_bin,
    wait_listening,
)
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

__all__ = ["FailoverOptions", "add_parser", "failover", "format_table", "gateway_config", "run"]

KEY = "sk-bench-failover-0123456789"
MODELS = ("healthy", "flaky", "flaky-dead")
FLAKY = "fail_rate=0.2"


@dataclass
class FailoverOptions:
    rate: float | None = 200.0  # open loop; None: closed loop with `concurrency`
    concurrency: int = 16
    duration_s: float = 5.0
    rounds: int = 3
    stream: bool = False
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    json: Path | None = None
    echo: bool = True


def _deployment(model: str, i: int, extra: str = "") -> str:
    return f"fake/fake-model@chunks=5&retry_after={model}{i}{extra}"


def gateway_config(port: int, upstream_url: str, dead_port: int, sqlite_path: Path) -> str:
    """The gateway's TOML: the fake and a dead provider, three models over them."""
    targets_of = {
        "healthy": [_deployment("healthy", i) for i in range(3)],
        "flaky": [
            _deployment("flaky", 0),
            _deployment("flaky", 1, "&" + FLAKY),
            _deployment("flaky", 2),
        ],
        "flaky-dead": [
            _deployment("flaky-dead", 0),
            _deployment("flaky-dead", 1, "&" + FLAKY),
            "dead/fake-model",
        ],
    }
    lines = [
        "[server]",
        f'host = "{HOST}"',
        f"port = {port}",
        "[state]",
        f'sqlite_path = "{sqlite_path}"',
        "[providers.fake]",
        'kind = "openai"',
        f'base_url = "{upstream_url}"',
        f'api_key = "{targets.UPSTREAM_KEY}"',
        "[providers.dead]",
        'kind = "openai"',
        f'base_url = "http://{HOST}:{dead_port}/v1"',
        'api_key = "unused"',
    ]
    for model, ids in targets_of.items():
        lines += [f'[models."{model}"]', 'strategy = "weighted"', "targets = ["]
        lines += [f'  {{ model = "{d}", weight = 1 }},' for d in ids]
        lines.append("]")
    lines += ["[[keys]]", 'name = "bench"', f'key = "{KEY}"']
    return "\n".join(lines) + "\n"


def _attempts(sqlite_path: Path) -> dict[str, tuple[int, int]]:
    """model -> (final ledger rows, their attempts summed)."""
    with sqlite3.connect(sqlite_path) as db:
        rows = db.execute(
            "SELECT model, COUNT(*), SUM(attempts) FROM usage WHERE status != 'pending' "
            "GROUP BY model"
        ).fetchall()
    return {model: (n, total or 0) for model, n, total in rows}


def _one_run(url: str, model: str, opts: FailoverOptions) -> dict[str, Any]:
    config = LoadConfig(
        url=url,
        model=model,
        stream=opts.stream,
        concurrency=None if opts.rate else opts.concurrency,
        rate=opts.rate or None,
        duration_s=opts.duration_s,
        api_key=KEY,
        max_tokens=16,
        timeout_s=30.0,
    )
    load = LoadRun(config)
    trio.run(load.run)
    s = load.result().summary
    latency = s.latency
    return {
        "model": model,
        "requests": s.requests,
        "ok": s.ok,
        "failed": s.failed,
        "errors_by_status": {str(k): v for k, v in s.errors_by_status.items()},
        "p50_ms": None if latency is None else latency.p50 * 1000,
        "p99_ms": None if latency is None else latency.p99 * 1000,
    }


def failover(opts: FailoverOptions) -> dict[str, Any]:
    """Run the measurement; return the document --json writes."""
    say = echo(opts.echo)
    runs: list[dict[str, Any]] = []
    with server_processes(opts.log_dir, "bench-failover-") as procs:
        upstream = targets.start_upstream(procs, opts.start_timeout_s)
        sqlite_path = procs.log_dir / "gateway.sqlite3"
        gateway = _start_gateway(procs, upstream.base_url, sqlite_path, opts.start_timeout_s)
        url = f"http://{HOST}:{gateway}/v1"
        try:
            for model in MODELS:  # warm-up: connections, and health learns
                warmup = FailoverOptions(rate=opts.rate, concurrency=opts.concurrency, duration_s=1)
                _one_run(url, model, warmup)
            warm = _attempts_after_flush(sqlite_path)
            for r in range(opts.rounds):
                for model in MODELS[r % 3 :] + MODELS[: r % 3]:  # each goes first once
                    run = _one_run(url, model, opts)
                    run["round"] = r + 1
                    runs.append(run)
                    say(
                        f"round {r + 1} {model}: {run['ok']}/{run['requests']} ok, "
                        f"p99 {run['p99_ms'] or 0:.1f} ms"
                    )
            attempts = _attempts_after_flush(sqlite_path)
        except BaseException:
            tail = log_tail(procs.log_dir / "gateway.log")
            if tail:
                say(f"--- gateway log tail:\n{tail}")
            raise
    per_request = {}
    for model in MODELS:
        n, total = attempts.get(model, (0, 0))
        n0, total0 = warm.get(model, (0, 0))
        per_request[model] = (total - total0) / (n - n0) if n > n0 else None
    return {
        "options": {
            "rate": opts.rate,
            "concurrency": None if opts.rate else opts.concurrency,
            "duration_s": opts.duration_s,
            "rounds": opts.rounds,
            "stream": opts.stream,
        },
        "source": gateway_source(),
        "runs": runs,
        "attempts_per_request": per_request,
        "summary": summarise(runs, per_request),
    }


def _attempts_after_flush(sqlite_path: Path) -> dict[str, tuple[int, int]]:
    time.sleep(1.0)  # the ledger writer commits every 200 ms
    return _attempts(sqlite_path)


def _start_gateway(procs: Processes, upstream_url: str, sqlite_path: Path, timeout_s: float) -> int:
    port = free_port()
    config = procs.log_dir / "gateway.toml"
    config.write_text(gateway_config(port, upstream_url, free_port(), sqlite_path))
    proc, _ = procs.start("gateway", [venv_bin("gateway"), "serve", "--config", str(config)])
    wait_listening(proc, port, timeout_s, "the gateway")
    return port


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _added(runs: list[dict[str, Any]], base: dict[int, dict[str, Any]], key: str) -> float | None:
    """The median over the rounds of `key` minus `healthy`'s in the same round."""
    diffs: list[float | None] = []
    for r in runs:
        ref = base[r["round"]][key]
        diffs.append(None if r[key] is None or ref is None else r[key] - ref)
    return _median(diffs)


def summarise(
    runs: list[dict[str, Any]], per_request: dict[str, float | None]
) -> list[dict[str, Any]]:
    """Per model, medians over the rounds; added latency against `healthy` per round."""
    base = {r["round"]: r for r in runs if r["model"] == "healthy"}
    out = []
    for model in MODELS:
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        baseline = model == "healthy"
        out.append(
            {
                "model": model,
                "requests": _median([r["requests"] for r in mine]),
                "ok_share": _median(
                    [r["ok"] / r["requests"] if r["requests"] else None for r in mine]
                ),
                "p50_ms": _median([r["p50_ms"] for r in mine]),
                "p99_ms": _median([r["p99_ms"] for r in mine]),
                "added_p50_ms": None if baseline else _added(mine, base, "p50_ms"),
                "added_p99_ms": None if baseline else _added(mine, base, "p99_ms"),
                "attempts_per_request": per_request.get(model),
            }
        )
    return out


def format_table(doc: dict[str, Any]) -> str:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{'model':<11} {'requests':>8} {'ok %':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'attempts/req':>12}",
        "-" * 76,
    ]
    for row in doc["summary"]:
        ok = None if row["ok_share"] is None else row["ok_share"] * 100
        lines.append(
            f"{row['model']:<11} {cell(row['requests'], '.0f'):>8} {cell(ok, '.2f'):>7} "
            f"{cell(row['p50_ms'], '.2f'):>7} {cell(row['p99_ms'], '.2f'):>7} "
            f"{cell(row['added_p50_ms'], '+.2f'):>8} {cell(row['added_p99_ms'], '+.2f'):>8} "
            f"{cell(row['attempts_per_request'], '.3f'):>12}"
        )
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = parser_for(
        subparsers, "failover", "routing with one deployment failing 20% and one dead", __doc__
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--rate", type=at_least(float, 0, strict=True), default=200.0,
        help="open loop: arrivals per second (default 200)",
    )  # fmt: skip
    shape.add_argument(
        "--concurrency", type=at_least(int, 1), default=None,
        help="closed loop with N connections instead of --rate",
    )  # fmt: skip
    parser.add_argument(
        "--duration", dest="duration_s", type=at_least(float, 0, strict=True), default=5.0,
        help="seconds per model per round (default 5)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=at_least(int, 1), default=3, help="default 3")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument(
        "--start-timeout", dest="start_timeout_s", type=at_least(float, 1), default=60.0,
        help="for each server to start (default 60)",
    )  # fmt: skip
    add_output_options(parser, "write the figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.concurrency is not None:
        args.rate = None
    else:
        args.concurrency = FailoverOptions.concurrency
    opts = options_from(args, FailoverOptions)
    doc = run_measurement("failover", lambda: failover(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc), flush=True)
    write_json(args.json, doc)
    return 0
