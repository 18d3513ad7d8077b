"""``python -m bench compare``: our gateway against the upstream itself and peer gateways.

    python -m bench compare [--rounds 2] [--duration 5] [--connections 16,64]
        [--scenarios json,stream] [--workers 1,2] [--half-saturation]
        [--targets direct,gateway,gateway-pg,litellm,portkey] [--litellm PATH] [--portkey [PATH]]
        [--pin-cpu N] [--upstream-tls] [--json FILE] [--log-dir DIR]

Starts a fake OpenAI upstream (``python -m bench upstream``) in its own process, then,
for each worker count W of ``--workers`` in turn (a "block"), each target in its own
process: ``direct`` (the fake itself: the same process throughout, measured again in
every block so that each block has its own baseline), ``gateway`` (``gateway serve``
with W workers, a generated config and a managed key with RPM, TPM and prepaid credit
on a priced model, so auth, limits and accounting are on), ``gateway-pg`` (only when
--targets names it: the same with its keys, credit and ledger in PostgreSQL, a
throwaway cluster with the server's default durability that compare starts from
/usr/lib/postgresql/*/bin or PATH, a database per block), ``litellm`` (when a
``litellm`` executable is on PATH or given with --litellm; ``--num_workers W`` when
W > 1) and ``portkey`` (only with --portkey; one Node process, so only in the W = 1
block). The servers of a block are stopped before the next block starts. Nothing is
installed.

The gateway with W > 1 needs a shared store: compare starts its own ``redis-server``
(from PATH) on a free loopback port, without persistence (``--save "" --appendonly
no``), puts ``[state] redis_url = "redis://127.0.0.1:PORT/0"`` in the generated config,
empties it (FLUSHALL) before each block and stops it at the end. Without redis-server
the gateway is skipped in the W > 1 blocks ("skipped" in the output says so).

Scenarios: ``json`` (non-streamed), ``stream`` (50 content chunks that the upstream
writes at once, unpaced: directive ``chunks=50``), ``paced`` (50 chunks 1 ms apart:
``chunks=50&chunk_interval_ms=1``), ``paced200`` (the same with 200 chunks: against
``paced``, what one more lone chunk costs, ``(paced200 - paced) / 150``, the request's
own work cancelled out) and ``paced-llm`` (like a real model: the first
token after 300 ms, then one every 20-40 ms, 200-800 tokens; ``--llm-streams`` streams
at once, 1,000 by default, whatever --connections says, for ``--llm-duration`` seconds,
with no warm-up; its own table gives CPU per 1,000 streamed tokens, RSS and the
inter-token latency with what it adds over direct: bench/llm_table.py). Default:
json,stream.

Within a block, for every round, scenario and connection count it runs the same
closed-loop load against each target in turn (A B A B ...), in process with
`bench.loadgen`. Per (scenario, connections, workers, target) it reports the median
over the rounds of: throughput, p50/p99 latency, added p50/p99 over direct in the same
block, CPU per request of the target's process tree (utime + stime of the server and
its descendants from /proc, before and after the run) and the peak RSS of the tree (sum
of VmHWM); then the ratios gateway/peer within the same (scenario, connections,
workers). ``--json FILE`` writes every run's raw figures.

``--half-saturation`` adds, at the end of each block, open-loop runs (a fixed arrival
rate; latency counts from each request's due time) of the json scenario at half the
gateway's saturation, which is its best closed-loop json req/s in that block, each for
--duration, A B A B over the rounds, against direct, the gateway and each peer for which
that rate is below 80% of the peer's own best closed-loop json req/s in the block (a
peer above that is skipped, and "skipped" says why). Its own table gives p50/p99 and
the added p50/p99 over direct, checked against the issue's targets (added p50 < 1 ms,
added p99 < 5 ms). At most max(1024, rate) requests are in flight, one connection each
(`bench.loadgen.runner` drops arrivals beyond its ``max_inflight``); drops are reported
(``dropped``), never silent.

Portkey: ``--portkey`` runs ``npx --no-install @portkey-ai/gateway``; ``--portkey PATH``
runs that executable, e.g. ``node_modules/.bin/gateway`` of an ``npm install
@portkey-ai/gateway``, which also keeps npx's own Node process out of the CPU and RSS
figures. It is started as ``EXE --port=PORT --headless`` (``--port=`` is the only way
to set its port; ``--headless`` drops the web UI and its log stream). It has no config
file: each request names its upstream in headers, which compare sends::

    x-portkey-provider: openai
    x-portkey-custom-host: http://127.0.0.1:UPSTREAM_PORT/v1
    Authorization: Bearer <the fake's key>     (forwarded to the upstream as its key)

with the upstream's own model name (directives included) in the body. 127.0.0.1 is in
Portkey's default TRUSTED_CUSTOM_HOSTS. Its environment loses HTTP(S)_PROXY,
REDIS_CONNECTION_STRING and ALBUS_BASEPATH (the settings that make it connect somewhere
by itself), and NODE_OPTIONS gets ``--import`` of a small preload module (written next
to its log) that (1) makes its server listen on 127.0.0.1 only (it would listen on every
interface), (2) refuses any outgoing connection to a host other than 127.0.0.1,
localhost or ::1, logging "bench-compare: blocked ...", so it cannot reach the
internet, and (3) works around Portkey-AI/gateway issue #1389: with @hono/node-server
> 1.14.2 (npm installs 1.19.x under Portkey 1.15.2) every streamed answer fails with
"TypeError: immutable" (Portkey adds headers to a Response that still holds fetch's
immutable Headers), so the preload gives fetch's event-stream responses a mutable copy
of their headers (a few microseconds per stream). Portkey also sleeps 25 ms before it
relays the first event of every stream (its stream reader does that on purpose): its
stream latency shows it.

``--pin-cpu N`` separates the target from the load (as ``taskset`` would): this process
(the load generator) and the fake upstream and Redis run on the other CPUs, every
thread of each target's processes on CPU N; what else the machine runs is not moved.

``--upstream-tls`` puts the fake upstream behind HTTPS (the vendors' clouds are all
HTTPS): compare makes a throwaway self-signed certificate for 127.0.0.1 with openssl
(EC P-256, ``subjectAltName=IP:127.0.0.1``, in the log directory's ``tls/``), starts the
fake with ``--tls-cert``/``--tls-key`` and points every target at
``https://127.0.0.1:PORT/v1``. Each trusts the certificate through its environment
(`bench.tls.trust_env`): the gateway's upstream client (``ssl.create_default_context()``)
and LiteLLM by ``SSL_CERT_FILE`` (and ``REQUESTS_CA_BUNDLE``), Portkey (Node) by
``NODE_EXTRA_CA_CERTS``; ``direct`` is the load generator speaking HTTPS to the fake,
trusting that certificate only. The ``floor*`` relays speak plain TCP to their upstream
and are skipped ("skipped" says so). The clients still talk plain HTTP to the gateways;
only the hop to the upstream is TLS. The JSON has ``options.upstream_tls`` and
``upstream_url``.

Everything listens on 127.0.0.1. Every process started here is in its own process group
and is stopped at the end of its block or of the run (also on Ctrl-C or an error):
SIGINT, then SIGKILL after 5 s. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import trio

from bench.llm_table import format_llm_table, llm_figures
from bench.loadgen.runner import LoadConfig, LoadRun
from bench.peers import PORTKEY_NPX, find_litellm, start_litellm, start_portkey
from bench.postgres import PostgresServer, postgres_bin_dir, running_postgres
from bench.processes import Processes, log_tail, server_processes
from bench.procfs import cpu_delta, pin_tree, tree_cpu, tree_memory
from bench.scenarios import DEFAULT_SCENARIOS, LLM_STREAMS, SCENARIOS, Scenario
from bench.subcommand import (
    add_output_options,
    at_least,
    echo,
    options_from,
    parser_for,
    run_measurement,
    write_json,
)
from bench.targets import (
    GatewaySetup,
    Redis,
    Server,
    find_redis_server,
    start_floor,
    start_gateway,
    start_redis,
    start_upstream,
)
from bench.tls import self_signed

__all__ = ["CompareOptions", "add_parser", "compare", "run"]

TARGETS = (
    "direct",
    "gateway",
    "gateway-pg",
    "litellm",
    "portkey",
    "floor",
    "floor-raw",
    "floor-pump",
)
# not in the default targets: need --targets
ASKED_ONLY = ("gateway-pg", "floor", "floor-raw", "floor-pump")
HALF_SATURATION_PEER_LIMIT = 0.8  # a peer runs at a rate below this share of its saturation
HALF_SATURATION_TARGETS = {"p50": 0.001, "p99": 0.005}  # added latency, seconds (issue 5)
OPEN_LOOP_MIN_SLOTS = 1024
LLM_TIMEOUT_S = 120.0  # a paced-llm stream lasts up to 0.3 + 800 * 0.04 s


@dataclass
class CompareOptions:
    """What ``compare`` runs (its command line, as fields)."""

    rounds: int = 2
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: Sequence[int] = (16, 64)
    scenarios: Sequence[str] = DEFAULT_SCENARIOS
    targets: Sequence[str] | None = None  # None: direct, gateway and every peer available
    litellm: str | None = None  # path of the litellm executable (None: look on PATH)
    portkey: str | None = None  # PORTKEY_NPX or the path of its executable; None: not run
    workers: Sequence[int] = (1,)  # one block per worker count, in this order
    half_saturation: bool = False
    llm_streams: int = LLM_STREAMS  # paced-llm: concurrent streams
    pin_cpu: int | None = None  # targets on this CPU, the rest (load, upstream) on the others
    llm_duration_s: float = 20.0  # paced-llm: seconds of sending (streams then finish)
    upstream_tls: bool = False  # the fake serves HTTPS with a throwaway self-signed cert
    timeout_s: float = 30.0
    start_timeout_s: float = 60.0
    log_dir: Path | None = None  # where the servers' output goes (default: a temp dir)
    echo: bool = True  # print progress lines on stderr


# -- runs ------------------------------------------------------------------------


def _open_loop_slots(rate: float) -> int:
    """Requests in flight allowed in open loop at `rate`: a second of arrivals, at least
    OPEN_LOOP_MIN_SLOTS, within the file descriptors this process may open."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(OPEN_LOOP_MIN_SLOTS, math.ceil(rate))
    if soft != resource.RLIM_INFINITY:
        wanted = min(wanted, max(64, soft - 256))
    return wanted


def _add_headers(load: LoadRun, headers: list[tuple[str, str]]) -> None:
    """Send `headers` (Portkey's routing) with every request of `load`."""
    if headers:
        head = load.workload._head
        extra = [(k.encode(), v.encode()) for k, v in headers]
        load.workload._head = h11.Request(
            method=head.method, target=head.target, headers=[*head.headers, *extra]
        )


def measure(
    server: Server,
    scenario: Scenario,
    connections: int | None,
    duration_s: float,
    timeout_s: float,
    rate: float | None = None,
) -> dict[str, Any]:
    """One load run against `server`, closed loop with `connections` or open loop at
    `rate` when it is given, with the CPU and memory of its process tree."""
    common: dict[str, Any] = {
        "url": server.base_url,
        "model": server.model_for[scenario.name],
        "stream": scenario.stream,
        "duration_s": duration_s,
        "timeout_s": timeout_s,
        "api_key": server.api_key,
        "ca_file": str(server.ca_file) if server.ca_file is not None else None,
    }
    if scenario.max_tokens is not None:  # else the fake stops at the generator's 128
        common["max_tokens"] = scenario.max_tokens
    if rate is not None:
        config = LoadConfig(rate=rate, max_inflight=_open_loop_slots(rate), **common)
    else:
        config = LoadConfig(concurrency=connections, **common)
    load = LoadRun(config)
    _add_headers(load, server.extra_headers)
    before = tree_cpu(server.proc.pid)
    trio.run(load.run)
    after = tree_cpu(server.proc.pid)
    hwm, rss = tree_memory(server.proc.pid)
    summary = load.result().summary
    cpu_s = cpu_delta(before, after)
    lat = summary.latency
    return {
        "target": server.name,
        "scenario": scenario.name,
        "mode": summary.mode,
        "connections": connections if rate is None else None,
        "rate_rps": rate,
        "ok": summary.ok,
        "failed": summary.failed,
        "dropped": summary.dropped,
        "errors_by_status": {str(k): v for k, v in summary.errors_by_status.items()},
        "errors_by_kind": dict(summary.errors_by_kind),
        "error_examples": dict(summary.error_examples),
        "duration_s": summary.duration_s,
        "throughput_rps": summary.throughput_rps,
        "achieved_rps": summary.achieved_rps,
        "p50_s": lat.p50 if lat else None,
        "p99_s": lat.p99 if lat else None,
        "send_lag_p99_s": summary.send_lag.p99 if summary.send_lag else None,
        "connections_opened": summary.connections,
        "server_cpu_s": cpu_s,
        "cpu_per_request_s": cpu_s / summary.ok if summary.ok else None,
        "output_tokens": summary.output_tokens,
        "itl_p50_s": summary.itl.p50 if summary.itl else None,
        "itl_p99_s": summary.itl.p99 if summary.itl else None,
        "transit_p50_s": summary.transit.p50 if summary.transit else None,
        "transit_p99_s": summary.transit.p99 if summary.transit else None,
        "peak_rss_bytes": hwm,
        "rss_bytes": rss,
        "processes": len(after),
        "client_cpu_per_request_s": summary.client_cpu_per_request_s,
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _over_rounds(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """What both summaries say of the rounds of one group: counts, medians, peak RSS."""
    return {
        "rounds": len(rs),
        "ok": sum(r["ok"] for r in rs),
        "failed": sum(r["failed"] for r in rs),
        "throughput_rps": _median([r["throughput_rps"] for r in rs]),
        "p50_s": _median([r["p50_s"] for r in rs]),
        "p99_s": _median([r["p99_s"] for r in rs]),
        "cpu_per_request_s": _median([r["cpu_per_request_s"] for r in rs]),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
        **llm_figures(rs),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, connections, workers, target): medians over rounds, added latency
    over direct and ratios gateway/peer, both within the same (scenario, connections,
    workers). A run without "workers" counts as workers 1."""
    groups: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["scenario"], r["connections"], r.get("workers", 1), r["target"])
        groups.setdefault(key, []).append(r)
    rows: list[dict[str, Any]] = []
    for (scenario, conns, workers, target), rs in groups.items():
        rows.append(
            {
                "scenario": scenario,
                "connections": conns,
                "workers": workers,
                "target": target,
                **_over_rounds(rs),
                "throughput_rps_range": [
                    min(r["throughput_rps"] for r in rs),
                    max(r["throughput_rps"] for r in rs),
                ],
            }
        )
    by_key = {(r["scenario"], r["connections"], r["workers"], r["target"]): r for r in rows}
    for row in rows:
        block = (row["scenario"], row["connections"], row["workers"])
        _add_latency_over(row, by_key.get((*block, "direct")))
        gw = by_key.get((*block, "gateway"))
        ratios: dict[str, float | None] = {}
        if gw is not None and row["target"] not in ("gateway", "direct"):
            ratios["throughput"] = _ratio(gw["throughput_rps"], row["throughput_rps"])
            ratios["cpu_per_request"] = _ratio(gw["cpu_per_request_s"], row["cpu_per_request_s"])
            ratios["peak_rss"] = _ratio(gw["peak_rss_bytes"], row["peak_rss_bytes"])
        row["gateway_over_this"] = ratios or None
    return rows


def _add_latency_over(row: dict[str, Any], direct: dict[str, Any] | None) -> None:
    """Set row's added_p50_s/added_p99_s over `direct` (None for direct itself)."""
    for q in ("p50", "p99"):
        mine, base = row[f"{q}_s"], direct and direct[f"{q}_s"]
        row[f"added_{q}_s"] = (
            mine - base
            if mine is not None and base is not None and row["target"] != "direct"
            else None
        )


def summarise_half_saturation(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (workers, target) of the open-loop runs: medians over rounds and the added
    p50/p99 over direct at the same rate; the gateway's rows are checked against
    HALF_SATURATION_TARGETS."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r.get("workers", 1), r["target"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (workers, target), rs in groups.items():
        rows.append(
            {
                "workers": workers,
                "target": target,
                "scenario": rs[0]["scenario"],
                "saturation_rps": rs[0].get("saturation_rps"),
                "rate_rps": _median([r["rate_rps"] for r in rs]),
                **_over_rounds(rs),
                "dropped": sum(r.get("dropped", 0) for r in rs),
                "achieved_rps": _median([r.get("achieved_rps") for r in rs]),
                "send_lag_p99_s": _median([r.get("send_lag_p99_s") for r in rs]),
            }
        )
    by_key = {(r["workers"], r["target"]): r for r in rows}
    for row in rows:
        _add_latency_over(row, by_key.get((row["workers"], "direct")))
        meets: dict[str, bool | None] | None = None
        if row["target"] == "gateway":
            meets = {
                f"added_{q}": (None if row[f"added_{q}_s"] is None else row[f"added_{q}_s"] < limit)
                for q, limit in HALF_SATURATION_TARGETS.items()
            }
        row["meets_target"] = meets
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:+.2f}" if signed else f"{value * 1000:.2f}"


def _workers_label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers != 1 else "")


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<8} {'conns':>5} {'workers':>7} {'target':<8} {'req/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'CPU/req ms':>10} "
        f"{'peak RSS MB':>11} {'failed':>6}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['scenario']:<8} {r['connections']:>5} {r.get('workers', 1):>7} "
            f"{r['target']:<8} {r['throughput_rps'] or 0:>8,.0f} {_ms(r['p50_s']):>8} "
            f"{_ms(r['p99_s']):>8} {_ms(r['added_p50_s'], True):>8} "
            f"{_ms(r['added_p99_s'], True):>8} {_ms(r['cpu_per_request_s']):>10} "
            f"{r['peak_rss_bytes'] / 2**20:>11.1f} {r['failed']:>6}"
        )
    ratio_lines = []
    for r in rows:
        ratios = r["gateway_over_this"]
        if ratios:
            parts = [f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None]
            ratio_lines.append(
                f"gateway/{r['target']} {r['scenario']} {r['connections']} conns, "
                f"{_workers_label(r.get('workers', 1))}: " + ", ".join(parts)
            )
    if ratio_lines:
        out += ["", *ratio_lines]
    return "\n".join(out)


def format_half_saturation_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'workers':>7} {'target':<8} {'rate/s':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'CPU/req ms':>10} {'dropped':>7} {'failed':>6}"
    )
    out = [
        "half saturation: open loop, json, at half the gateway's best closed-loop json req/s",
        head,
        "-" * len(head),
    ]
    for r in rows:
        out.append(
            f"{r['workers']:>7} {r['target']:<8} {r['rate_rps'] or 0:>8,.0f} "
            f"{r['throughput_rps'] or 0:>8,.0f} {_ms(r['p50_s']):>8} {_ms(r['p99_s']):>8} "
            f"{_ms(r['added_p50_s'], True):>8} {_ms(r['added_p99_s'], True):>8} "
            f"{_ms(r['cpu_per_request_s']):>10} {r['dropped']:>7} {r['failed']:>6}"
        )
    verdicts = []
    for r in rows:
        meets = r.get("meets_target")
        if not meets:
            continue
        parts = []
        for q, limit in HALF_SATURATION_TARGETS.items():
            ok = meets.get(f"added_{q}")
            word = "no direct baseline" if ok is None else ("ok" if ok else "MISSED")
            added = _ms(r[f"added_{q}_s"], True)
            parts.append(f"added {q} {added} ms < {limit * 1000:g} ms {word}")
        verdicts.append(f"gateway, {_workers_label(r['workers'])}: " + "; ".join(parts))
    if verdicts:
        out += ["", *verdicts]
    return "\n".join(out)


# -- the comparison -------------------------------------------------------------------


def _best_json_rps(runs: list[dict[str, Any]], target: str) -> float | None:
    rates = [r["throughput_rps"] for r in runs if r["target"] == target and r["scenario"] == "json"]
    return max(rates) if rates else None


def _half_saturation(
    opts: CompareOptions,
    servers: list[Server],
    block_runs: list[dict[str, Any]],
    workers: int,
    skipped: dict[str, str],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The open-loop runs of one block at half the gateway's json saturation."""
    where = f"(workers {workers})"
    saturation = _best_json_rps(block_runs, "gateway")
    if saturation is None or saturation <= 0:
        skipped[f"half-saturation {where}"] = (
            "needs closed-loop json runs of the gateway in this block "
            "(targets with gateway, scenarios with json)"
        )
        return []
    rate = saturation / 2
    chosen: list[Server] = []
    for server in servers:
        if server.name not in ("direct", "gateway"):
            own = _best_json_rps(block_runs, server.name)
            if own is None or rate >= HALF_SATURATION_PEER_LIMIT * own:
                skipped[f"{server.name} half-saturation {where}"] = (
                    f"half the gateway's saturation, {rate:,.0f} req/s, is not below "
                    f"{HALF_SATURATION_PEER_LIMIT:.0%} of {server.name}'s own saturation, "
                    + (f"{own:,.0f} req/s" if own is not None else "unknown")
                )
                continue
        chosen.append(server)
    json_scenario = SCENARIOS["json"]
    runs: list[dict[str, Any]] = []
    for round_no in range(1, opts.rounds + 1):
        for server in chosen:
            result = measure(server, json_scenario, None, opts.duration_s, opts.timeout_s, rate)
            result.update(round=round_no, workers=workers, saturation_rps=saturation)
            runs.append(result)
            say(
                f"half-saturation round {round_no} {_workers_label(workers)} {server.name} "
                f"at {rate:,.0f} req/s: p50 {_ms(result['p50_s'])} ms, "
                f"p99 {_ms(result['p99_s'])} ms, {result['failed']} failed, "
                f"{result['dropped']} dropped"
            )
    return runs


def compare(opts: CompareOptions) -> dict[str, Any]:
    """Run the comparison; return the document written by --json (raw runs and rows)."""

    say = echo(opts.echo)
    scenarios = [SCENARIOS[name] for name in opts.scenarios]
    wanted = list(opts.targets) if opts.targets else [t for t in TARGETS if t not in ASKED_ONLY]
    for name in wanted:
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}")
    skipped: dict[str, str] = {}
    started: list[str] = []
    runs: list[dict[str, Any]] = []
    half_runs: list[dict[str, Any]] = []
    said: set[str] = set()  # skipped entries already printed
    litellm_exe: str | None = None
    if "litellm" in wanted:
        litellm_exe = find_litellm(opts.litellm)
        if litellm_exe is None:
            skipped["litellm"] = "no litellm executable on PATH (give --litellm PATH)"
    if "portkey" in wanted and not opts.portkey:
        skipped["portkey"] = "not asked for (--portkey [PATH])"
    if opts.pin_cpu is not None:
        # This process (the load generator) and what it starts from here on (the fake
        # upstream, Redis) run on the other CPUs; each target is moved to pin_cpu.
        others = os.sched_getaffinity(0) - {opts.pin_cpu}
        if not others or opts.pin_cpu not in os.sched_getaffinity(0):
            raise ValueError(f"--pin-cpu {opts.pin_cpu}: needs that CPU and another one")
        os.sched_setaffinity(0, others)
    with (
        server_processes(opts.log_dir, "bench-compare-") as procs,
        contextlib.ExitStack() as stack,
    ):
        tls = self_signed(procs.log_dir / "tls") if opts.upstream_tls else None
        upstream = start_upstream(procs, opts.start_timeout_s, tls)
        if opts.upstream_tls:
            for name in wanted:
                if name.startswith("floor"):
                    skipped[name] = "--upstream-tls: the floor relays speak plain TCP upstream"
        postgres: PostgresServer | None = None
        if "gateway-pg" in wanted:
            pg_bin = postgres_bin_dir()
            if pg_bin is None:
                skipped["gateway-pg"] = "PostgreSQL is not installed (apt-get install postgresql)"
            else:
                postgres = stack.enter_context(running_postgres(pg_bin, durable=True))
        redis: Redis | None = None
        if {"gateway", "gateway-pg"} & set(wanted) and any(w > 1 for w in opts.workers):
            redis_binary = find_redis_server()
            if redis_binary is None:
                for w in opts.workers:
                    if w > 1:
                        skipped[f"gateway (workers {w})"] = (
                            "redis-server is not on PATH: gateway serve needs [state] "
                            "redis_url for --workers > 1 (apt-get install redis-server)"
                        )
            else:
                redis = start_redis(procs, redis_binary, opts.start_timeout_s)
        for workers in opts.workers:
            block_dir = procs.log_dir / f"workers-{workers}"
            block_dir.mkdir(parents=True, exist_ok=True)
            block = Processes(block_dir)
            try:
                servers = _start_block(
                    block, opts, upstream, wanted, workers, redis, litellm_exe, skipped, postgres
                )
                if opts.pin_cpu is not None:
                    for server in servers:
                        if server is not upstream:
                            pin_tree(server.proc.pid, {opts.pin_cpu})
                for server in servers:
                    if server.name not in started:
                        started.append(server.name)
                for name, why in skipped.items():
                    if name not in said:
                        said.add(name)
                        say(f"skipping {name}: {why}")
                block_runs = _closed_loop_block(opts, servers, scenarios, workers, say)
                runs += block_runs
                if opts.half_saturation:
                    half_runs += _half_saturation(opts, servers, block_runs, workers, skipped, say)
            finally:
                block.close()
        rows = summarise(runs)
        half_rows = summarise_half_saturation(half_runs)
    return {
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "connections": list(opts.connections),
            "scenarios": list(opts.scenarios),
            "workers": list(opts.workers),
            "half_saturation": opts.half_saturation,
            "llm_streams": opts.llm_streams,
            "pin_cpu": opts.pin_cpu,
            "llm_duration_s": opts.llm_duration_s,
            "portkey": opts.portkey,
            "upstream_tls": opts.upstream_tls,
        },
        "upstream_url": upstream.base_url,
        "targets": started,
        "skipped": skipped,
        "rows": rows,
        "runs": runs,
        "half_saturation": {"rows": half_rows, "runs": half_runs},
    }


def _start_block(
    procs: Processes,
    opts: CompareOptions,
    upstream: Server,
    wanted: list[str],
    workers: int,
    redis: Redis | None,
    litellm_exe: str | None,
    skipped: dict[str, str],
    postgres: PostgresServer | None = None,
) -> list[Server]:
    """Start the targets of the block of `workers` (direct is the running upstream)."""
    servers: list[Server] = []
    # The upstream pool holds a connection per stream: paced-llm's streams all at once
    # would otherwise queue past the default cap of 512 (`max_connections`).
    pool = GatewaySetup(max_connections=max(512, opts.llm_streams + 64))
    for name in wanted:
        if name == "direct":
            servers.append(upstream)
        elif name == "gateway":
            if workers > 1 and redis is None:
                continue  # said in skipped
            redis_url = None
            if redis is not None and workers > 1:
                redis.flush()
                redis_url = redis.url
            servers.append(
                start_gateway(procs, upstream, opts.start_timeout_s, workers, redis_url, pool)
            )
        elif name in ("floor", "floor-raw", "floor-pump"):
            if opts.upstream_tls:
                continue  # said in skipped
            mode = name.partition("-")[2] or "stream"
            servers.append(start_floor(procs, upstream, opts.start_timeout_s, mode))
        elif name == "gateway-pg":
            if postgres is None or (workers > 1 and redis is None):
                continue  # said in skipped
            redis_url = None
            if redis is not None and workers > 1:
                redis.flush()
                redis_url = redis.url
            url = postgres.new_database(f"compare_w{workers}")
            servers.append(
                start_gateway(
                    procs,
                    upstream,
                    opts.start_timeout_s,
                    workers,
                    redis_url,
                    pool,
                    postgres_url=url,
                    name="gateway-pg",
                )
            )
        elif name == "litellm":
            if litellm_exe is not None:
                servers.append(
                    start_litellm(procs, upstream, litellm_exe, opts.start_timeout_s, workers)
                )
        elif name == "portkey":
            if not opts.portkey:
                continue  # said in skipped
            if workers > 1:
                skipped[f"portkey (workers {workers})"] = (
                    "one Node process: runs only in a workers 1 block (when --workers has 1)"
                )
                continue
            servers.append(start_portkey(procs, upstream, opts.portkey, opts.start_timeout_s))
    return servers


def _closed_loop_block(
    opts: CompareOptions,
    servers: list[Server],
    scenarios: list[Scenario],
    workers: int,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Warm-up, then the A B A B closed-loop rounds of one block."""
    label = _workers_label(workers)
    if opts.warmup_s > 0:
        for server in servers:
            for scenario in scenarios:
                if scenario.connections is None:  # paced-llm: too long to warm up with
                    say(f"warm-up {label} {server.name} {scenario.name}")
                    measure(server, scenario, min(opts.connections), opts.warmup_s, opts.timeout_s)
    runs: list[dict[str, Any]] = []
    for round_no in range(1, opts.rounds + 1):
        for scenario in scenarios:
            fixed = scenario.connections is not None
            duration_s = opts.llm_duration_s if fixed else opts.duration_s
            timeout_s = max(opts.timeout_s, LLM_TIMEOUT_S) if fixed else opts.timeout_s
            for conns in [opts.llm_streams] if fixed else opts.connections:
                for server in servers:
                    result = measure(server, scenario, conns, duration_s, timeout_s)
                    result.update(round=round_no, workers=workers)
                    runs.append(result)
                    say(
                        f"round {round_no} {label} {scenario.name} {conns} conns "
                        f"{server.name}: {result['throughput_rps']:,.0f} req/s, "
                        f"{result['failed']} failed"
                    )
                    if result["ok"] == 0 and result["failed"]:
                        say(f"  errors: {result['error_examples']}\n{log_tail(server.log_path)}")
    return runs


# -- command line ----------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need integers >= 1: {text!r}")
    return values


def _name_list(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}: {text!r}")
        return names

    return parse


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``compare`` subcommand and return its parser."""
    parser = parser_for(
        subparsers,
        "compare",
        "side by side: the upstream direct, our gateway and installed peers",
        __doc__,
    )
    parser.add_argument(
        "--rounds", type=at_least(int, 1), default=2, help="A B A B rounds (default 2)"
    )
    parser.add_argument(
        "--duration", type=at_least(float, 0.0, strict=True), default=5.0, dest="duration_s",
        metavar="S", help="seconds per run (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=at_least(float, 0.0), default=1.0, dest="warmup_s", metavar="S",
        help="warm-up per target and scenario in each block (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=_int_list, default=[16, 64], metavar="N,N", help="default 16,64"
    )
    parser.add_argument(
        "--scenarios", type=_name_list(list(SCENARIOS)), default=list(DEFAULT_SCENARIOS),
        metavar="S,S",
        help="json (non-stream), stream (50 chunks at once), paced (50 chunks 1 ms apart), "
        "paced200 (200 chunks 1 ms apart), "
        "paced-llm (200-800 tokens 20-40 ms apart, --llm-streams at once); default json,stream",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_int_list, default=[1], metavar="N,N",
        help="worker counts, one block each: gateway workers, litellm --num_workers "
        "(default 1; gateway N > 1 uses a redis-server that compare starts)",
    )  # fmt: skip
    parser.add_argument(
        "--llm-streams", type=at_least(int, 1), default=LLM_STREAMS, metavar="N",
        help=f"paced-llm: concurrent streams (default {LLM_STREAMS})",
    )  # fmt: skip
    parser.add_argument(
        "--llm-duration", type=at_least(float, 0.0, strict=True), default=20.0,
        dest="llm_duration_s", metavar="S", help="paced-llm: seconds of sending (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--pin-cpu", type=int, default=None, dest="pin_cpu", metavar="N",
        help="run the targets on CPU N and the load generator, the fake upstream and "
        "Redis on the other CPUs (sched_setaffinity, as taskset does)",
    )  # fmt: skip
    parser.add_argument(
        "--upstream-tls", action="store_true", dest="upstream_tls",
        help="the fake upstream serves HTTPS (a throwaway self-signed certificate that "
        "every target is made to trust); floor targets are skipped",
    )  # fmt: skip
    parser.add_argument(
        "--half-saturation", action="store_true",
        help="also run open loop at half the gateway's json saturation (per block)",
    )  # fmt: skip
    parser.add_argument(
        "--targets", type=_name_list(list(TARGETS)), default=None,
        metavar="T,T", help="default: direct, gateway and every peer available",
    )  # fmt: skip
    parser.add_argument("--litellm", metavar="PATH", help="litellm executable (default: on PATH)")
    parser.add_argument(
        "--portkey", nargs="?", const=PORTKEY_NPX, default=None, metavar="PATH",
        help="also run Portkey: its gateway executable at PATH, or without PATH "
        "npx --no-install @portkey-ai/gateway",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=30.0, dest="timeout_s", metavar="S", help="per request"
    )
    add_output_options(parser, "write the raw figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``compare`` with parsed `args`: print the table, write --json."""
    opts = options_from(args, CompareOptions)
    opts.workers = list(dict.fromkeys(opts.workers))  # each count once, in the order given

    doc = run_measurement("compare", lambda: compare(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc["rows"]), flush=True)
    llm = format_llm_table(doc["rows"])
    if llm:
        print("\n" + llm, flush=True)
    half_rows = doc["half_saturation"]["rows"]
    if half_rows:
        print("\n" + format_half_saturation_table(half_rows), flush=True)
    if doc["skipped"]:
        print("\nskipped:", flush=True)
        for name, why in doc["skipped"].items():
            print(f"  {name}: {why}", flush=True)
    write_json(args.json, doc)
    return 0 if all(r["ok"] for r in [*doc["rows"], *half_rows]) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry until ``compare`` is wired into ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(parser.parse_args(["compare", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
