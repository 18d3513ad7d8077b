"""``python -m bench compare``: our gateway against the upstream itself and peer gateways.

    python -m bench compare [--rounds 2] [--duration 5] [--connections 16,64]
        [--scenarios json,stream] [--litellm PATH] [--portkey] [--json FILE]

Starts a fake OpenAI upstream (``python -m bench upstream``) in its own process, then
each target in its own process: ``direct`` (the fake itself), ``gateway`` (``gateway
serve`` with a generated config and a managed key with RPM, TPM and prepaid credit on a
priced model, so auth, limits and accounting are on), ``litellm`` (when a ``litellm``
executable is on PATH or given with --litellm) and ``portkey`` (``npx
@portkey-ai/gateway``, only with --portkey). Nothing is installed.

For every round, scenario and connection count it runs the same closed-loop load
against each target in turn (A B A B ...), in process with `bench.loadgen`. Per target
and scenario it reports the median over the rounds of: throughput, p50/p99 latency,
added p50/p99 over direct, CPU per request of the target's process tree (utime + stime
of the server and its descendants from /proc, before and after the run) and the peak
RSS of the tree (sum of VmHWM); then the ratios gateway/peer. ``--json FILE`` writes
every run's raw figures.

Everything listens on 127.0.0.1. Every process started here is in its own process group
and is stopped at the end (also on Ctrl-C or an error): SIGINT, then SIGKILL after 5 s.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from bench.fakes.openai import DEFAULT_KEY as UPSTREAM_KEY
from bench.loadgen.runner import LoadConfig, LoadRun

__all__ = ["SCENARIOS", "CompareOptions", "add_parser", "compare", "run"]

HOST = "127.0.0.1"
UPSTREAM_MODEL = "fake-model"
STREAM_DIRECTIVES = "chunks=50&chunk_interval_ms=1"


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    directives: str  # appended to the upstream model name after "@" ("" for none)
    gateway_model: str  # the model name clients send to a gateway


SCENARIOS = {
    "json": Scenario("json", False, "", "m"),
    "stream": Scenario("stream", True, STREAM_DIRECTIVES, "m-stream50"),
}


@dataclass
class CompareOptions:
    rounds: int = 2
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: Sequence[int] = (16, 64)
    scenarios: Sequence[str] = ("json", "stream")
    targets: Sequence[str] | None = None  # None: direct, gateway and every peer available
    litellm: str | None = None  # path of the litellm executable (None: look on PATH)
    litellm_workers: int = 1
    portkey: bool = False
    gateway_workers: int = 1
    timeout_s: float = 30.0
    start_timeout_s: float = 60.0
    log_dir: Path | None = None  # where the servers' output goes (default: a temp dir)
    echo: bool = True  # print progress lines on stderr


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on {HOST}:{port} within {timeout_s:g} s")
        time.sleep(0.05)


@dataclass
class Server:
    """One process (group) started by compare."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    base_url: str
    model_for: dict[str, str]  # scenario name -> model name to send
    api_key: str | None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    log_path: Path | None = None


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGINT the process group `proc` leads, then SIGKILL it after `grace_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # Kill what is left of the group (workers that outlived their parent) in any case.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


class Processes:
    """Starts processes in their own group; `close` stops them all, last first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.log_dir,
            )
        self.started.append(proc)
        return proc, log_path

    def close(self) -> None:
        while self.started:
            stop_process(self.started.pop())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.started]


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- /proc -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds so far of each process of the tree of `root`."""
    out = {}
    for pid in process_tree(root):
        st = _stat(pid)
        if st is not None:
            out[pid] = st[1]
    return out


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) of the tree of `root`, in bytes."""
    hwm = rss = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) * 1024
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return hwm, rss


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


# -- targets ---------------------------------------------------------------------


def _python() -> str:
    return sys.executable


def _venv_bin(name: str) -> str:
    """`name` next to the running interpreter (the venv's), else on PATH, else `name`."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or name


def start_upstream(procs: Processes, opts: CompareOptions) -> Server:
    port = free_port()
    proc, log = procs.start(
        "upstream",
        [
            _python(),
            "-m",
            "bench",
            "upstream",
            "--kind",
            "openai",
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        env=_env_with_repo(),
    )
    _wait_listening(proc, port, opts.start_timeout_s, "the fake upstream")
    models = {
        name: UPSTREAM_MODEL + (f"@{s.directives}" if s.directives else "")
        for name, s in SCENARIOS.items()
    }
    return Server(
        "direct", proc, port, f"http://{HOST}:{port}/v1", models, UPSTREAM_KEY, log_path=log
    )


def _env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def gateway_config(port: int, upstream_url: str, sqlite_path: Path, workers: int) -> str:
    lines = [
        "[server]",
        f'host = "{HOST}"',
        f"port = {port}",
        f"workers = {workers}",
        "[state]",
        f'sqlite_path = "{sqlite_path}"',
        "[providers.fake]",
        'kind = "openai"',
        f'base_url = "{upstream_url}"',
        f'api_key = "{UPSTREAM_KEY}"',
    ]
    for scenario in SCENARIOS.values():
        upstream_model = UPSTREAM_MODEL + (f"@{scenario.directives}" if scenario.directives else "")
        lines += [
            f'[models."{scenario.gateway_model}"]',
            'provider = "fake"',
            f'upstream_model = "{upstream_model}"',
            "price_input_per_mtok = 0.15",
            "price_output_per_mtok = 0.60",
        ]
    return "\n".join(lines) + "\n"


def start_gateway(procs: Processes, opts: CompareOptions, upstream: Server) -> Server:
    port = free_port()
    config = procs.log_dir / "gateway.toml"
    config.write_text(
        gateway_config(
            port, upstream.base_url, procs.log_dir / "gateway.sqlite3", opts.gateway_workers
        )
    )
    gw = _venv_bin("gateway")
    created = subprocess.run(
        [gw, "keys", "create", "--config", str(config), "--name", "bench-compare",
         "--rpm", "10000000", "--tpm", "1000000000", "--credit", "1000000", "--json"],
        capture_output=True, cwd=procs.log_dir, timeout=60, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"gateway keys create failed: {created.stderr.decode(errors='replace')}")
    key = orjson.loads(created.stdout)["key"]
    proc, log = procs.start("gateway", [gw, "serve", "--config", str(config)])
    _wait_listening(proc, port, opts.start_timeout_s, "the gateway")
    models = {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server("gateway", proc, port, f"http://{HOST}:{port}/v1", models, key, log_path=log)


def litellm_config(upstream_url: str) -> str:
    lines = ["model_list:"]
    for scenario in SCENARIOS.values():
        upstream_model = UPSTREAM_MODEL + (f"@{scenario.directives}" if scenario.directives else "")
        lines += [
            f"  - model_name: {scenario.gateway_model}",
            "    litellm_params:",
            f'      model: "openai/{upstream_model}"',
            f'      api_base: "{upstream_url}"',
            f'      api_key: "{UPSTREAM_KEY}"',
        ]
    lines += ["general_settings:", '  master_key: "sk-bench-litellm"']
    return "\n".join(lines) + "\n"


def find_litellm(opts: CompareOptions) -> str | None:
    if opts.litellm:
        return opts.litellm
    return shutil.which("litellm")


def start_litellm(procs: Processes, opts: CompareOptions, upstream: Server, exe: str) -> Server:
    port = free_port()
    config = procs.log_dir / "litellm.yaml"
    config.write_text(litellm_config(upstream.base_url))
    argv = [exe, "--config", str(config), "--host", HOST, "--port", str(port)]
    if opts.litellm_workers > 1:
        argv += ["--num_workers", str(opts.litellm_workers)]
    # No database (so no spend logs), no fetch of the model cost map from GitHub.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc, log = procs.start("litellm", argv, env=env)
    _wait_listening(proc, port, opts.start_timeout_s, "litellm")
    models = {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server(
        "litellm", proc, port, f"http://{HOST}:{port}/v1", models, "sk-bench-litellm", log_path=log
    )


def start_portkey(procs: Processes, opts: CompareOptions, upstream: Server) -> Server:
    npx = shutil.which("npx")
    if npx is None:
        raise RuntimeError("--portkey needs npx on PATH")
    port = free_port()
    proc, log = procs.start(
        "portkey", [npx, "--no-install", "@portkey-ai/gateway", f"--port={port}"]
    )
    _wait_listening(proc, port, opts.start_timeout_s, "portkey")
    models = {
        name: UPSTREAM_MODEL + (f"@{s.directives}" if s.directives else "")
        for name, s in SCENARIOS.items()
    }
    headers = [("x-portkey-provider", "openai"), ("x-portkey-custom-host", upstream.base_url)]
    return Server(
        "portkey", proc, port, f"http://{HOST}:{port}/v1", models, UPSTREAM_KEY, headers, log
    )


# -- runs ------------------------------------------------------------------------


def _load(
    server: Server, scenario: Scenario, connections: int, duration_s: float, timeout_s: float
) -> LoadRun:
    config = LoadConfig(
        url=server.base_url,
        model=server.model_for[scenario.name],
        stream=scenario.stream,
        concurrency=connections,
        duration_s=duration_s,
        timeout_s=timeout_s,
        api_key=server.api_key,
    )
    load = LoadRun(config)
    if server.extra_headers:
        head = load.workload._head
        headers = list(head.headers) + [(k.encode(), v.encode()) for k, v in server.extra_headers]
        load.workload._head = h11.Request(method=head.method, target=head.target, headers=headers)
    return load


def measure(
    server: Server, scenario: Scenario, connections: int, duration_s: float, timeout_s: float
) -> dict[str, Any]:
    """One load run against `server`, with the CPU and memory of its process tree."""
    load = _load(server, scenario, connections, duration_s, timeout_s)
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
        "connections": connections,
        "ok": summary.ok,
        "failed": summary.failed,
        "errors_by_status": {str(k): v for k, v in summary.errors_by_status.items()},
        "errors_by_kind": dict(summary.errors_by_kind),
        "error_examples": dict(summary.error_examples),
        "duration_s": summary.duration_s,
        "throughput_rps": summary.throughput_rps,
        "p50_s": lat.p50 if lat else None,
        "p99_s": lat.p99 if lat else None,
        "server_cpu_s": cpu_s,
        "cpu_per_request_s": cpu_s / summary.ok if summary.ok else None,
        "peak_rss_bytes": hwm,
        "rss_bytes": rss,
        "processes": len(after),
        "client_cpu_per_request_s": summary.client_cpu_per_request_s,
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, connections, target): medians over rounds, added latency, ratios."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["connections"], r["target"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (scenario, conns, target), rs in groups.items():
        rows.append(
            {
                "scenario": scenario,
                "connections": conns,
                "target": target,
                "rounds": len(rs),
                "ok": sum(r["ok"] for r in rs),
                "failed": sum(r["failed"] for r in rs),
                "throughput_rps": _median([r["throughput_rps"] for r in rs]),
                "throughput_rps_range": [
                    min(r["throughput_rps"] for r in rs),
                    max(r["throughput_rps"] for r in rs),
                ],
                "p50_s": _median([r["p50_s"] for r in rs]),
                "p99_s": _median([r["p99_s"] for r in rs]),
                "cpu_per_request_s": _median([r["cpu_per_request_s"] for r in rs]),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
            }
        )
    by_key = {(r["scenario"], r["connections"], r["target"]): r for r in rows}
    for row in rows:
        direct = by_key.get((row["scenario"], row["connections"], "direct"))
        for q in ("p50", "p99"):
            mine, base = row[f"{q}_s"], direct and direct[f"{q}_s"]
            row[f"added_{q}_s"] = (
                mine - base
                if mine is not None and base is not None and row["target"] != "direct"
                else None
            )
        gw = by_key.get((row["scenario"], row["connections"], "gateway"))
        ratios: dict[str, float | None] = {}
        if gw is not None and row["target"] not in ("gateway", "direct"):
            ratios["throughput"] = _ratio(gw["throughput_rps"], row["throughput_rps"])
            ratios["cpu_per_request"] = _ratio(gw["cpu_per_request_s"], row["cpu_per_request_s"])
            ratios["peak_rss"] = _ratio(gw["peak_rss_bytes"], row["peak_rss_bytes"])
        row["gateway_over_this"] = ratios or None
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:+.2f}" if signed else f"{value * 1000:.2f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<8} {'conns':>5} {'target':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'CPU/req ms':>10} {'peak RSS MB':>11} {'failed':>6}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        cpu = _ms(r["cpu_per_request_s"]) if r["cpu_per_request_s"] is not None else "-"
        out.append(
            f"{r['scenario']:<8} {r['connections']:>5} {r['target']:<8} "
            f"{r['throughput_rps'] or 0:>8,.0f} {_ms(r['p50_s']):>8} {_ms(r['p99_s']):>8} "
            f"{_ms(r['added_p50_s'], True):>8} {_ms(r['added_p99_s'], True):>8} {cpu:>10} "
            f"{r['peak_rss_bytes'] / 2**20:>11.1f} {r['failed']:>6}"
        )
    ratio_lines = []
    for r in rows:
        ratios = r["gateway_over_this"]
        if ratios:
            parts = [f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None]
            ratio_lines.append(
                f"gateway/{r['target']} {r['scenario']} {r['connections']}: " + ", ".join(parts)
            )
    if ratio_lines:
        out += ["", *ratio_lines]
    return "\n".join(out)


def compare(opts: CompareOptions) -> dict[str, Any]:
    """Run the comparison; return the document written by --json (raw runs and rows)."""

    def say(text: str) -> None:
        if opts.echo:
            print(text, file=sys.stderr, flush=True)

    scenarios = [SCENARIOS[name] for name in opts.scenarios]
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        log_dir = opts.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-compare-"))
        )
        procs = Processes(log_dir)
        stack.callback(procs.close)
        upstream = start_upstream(procs, opts)
        wanted = list(opts.targets) if opts.targets else ["direct", "gateway", "litellm", "portkey"]
        servers: list[Server] = []
        for name in wanted:
            if name == "direct":
                servers.append(upstream)
            elif name == "gateway":
                servers.append(start_gateway(procs, opts, upstream))
            elif name == "litellm":
                exe = find_litellm(opts)
                if exe is None:
                    skipped["litellm"] = "no litellm executable on PATH (give --litellm PATH)"
                    continue
                servers.append(start_litellm(procs, opts, upstream, exe))
            elif name == "portkey":
                if not opts.portkey:
                    skipped["portkey"] = "not asked for (--portkey)"
                    continue
                servers.append(start_portkey(procs, opts, upstream))
            else:
                raise ValueError(f"unknown target {name!r}")
        for name, why in skipped.items():
            say(f"skipping {name}: {why}")
        if opts.warmup_s > 0:
            for server in servers:
                for scenario in scenarios:
                    say(f"warm-up {server.name} {scenario.name}")
                    measure(server, scenario, min(opts.connections), opts.warmup_s, opts.timeout_s)
        runs: list[dict[str, Any]] = []
        for round_no in range(1, opts.rounds + 1):
            for scenario in scenarios:
                for conns in opts.connections:
                    for server in servers:
                        result = measure(server, scenario, conns, opts.duration_s, opts.timeout_s)
                        result["round"] = round_no
                        runs.append(result)
                        say(
                            f"round {round_no} {scenario.name} {conns} conns {server.name}: "
                            f"{result['throughput_rps']:,.0f} req/s, {result['failed']} failed"
                        )
                        if result["ok"] == 0 and result["failed"]:
                            say(f"  errors: {result['error_examples']}\n{_tail(server.log_path)}")
        rows = summarise(runs)
    return {
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "connections": list(opts.connections),
            "scenarios": list(opts.scenarios),
            "gateway_workers": opts.gateway_workers,
            "litellm_workers": opts.litellm_workers,
        },
        "targets": [s.name for s in servers],
        "skipped": skipped,
        "rows": rows,
        "runs": runs,
    }


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
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="side by side: the upstream direct, our gateway and installed peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2, help="A B A B rounds (default 2)")
    parser.add_argument(
        "--duration", type=float, default=5.0, metavar="S", help="seconds per run (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, metavar="S", help="warm-up per target (default 1)"
    )
    parser.add_argument(
        "--connections", type=_int_list, default=[16, 64], metavar="N,N", help="default 16,64"
    )
    parser.add_argument(
        "--scenarios", type=_name_list(list(SCENARIOS)), default=list(SCENARIOS), metavar="S,S",
        help="json (non-stream) and/or stream (paced, 50 chunks); default both",
    )  # fmt: skip
    parser.add_argument(
        "--targets", type=_name_list(["direct", "gateway", "litellm", "portkey"]), default=None,
        metavar="T,T", help="default: direct, gateway and every peer available",
    )  # fmt: skip
    parser.add_argument("--litellm", metavar="PATH", help="litellm executable (default: on PATH)")
    parser.add_argument("--litellm-workers", type=int, default=1, metavar="N")
    parser.add_argument("--portkey", action="store_true", help="also run npx @portkey-ai/gateway")
    parser.add_argument(
        "--gateway-workers", type=int, default=1, metavar="N",
        help="gateway worker processes (N > 1 needs [state] redis_url; default 1)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per request")
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep configs and server logs here"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``compare`` with parsed `args`: print the table, write --json."""
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        print(
            "python -m bench compare: --rounds >= 1, --duration > 0, --warmup >= 0", file=sys.stderr
        )
        return 2
    opts = CompareOptions(
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        scenarios=args.scenarios,
        targets=args.targets,
        litellm=args.litellm,
        litellm_workers=args.litellm_workers,
        portkey=args.portkey,
        gateway_workers=args.gateway_workers,
        timeout_s=args.timeout,
        log_dir=args.log_dir,
    )
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        doc = compare(opts)
    except KeyboardInterrupt:
        print("python -m bench compare: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"python -m bench compare: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_table(doc["rows"]), flush=True)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in doc["rows"]) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry until ``compare`` is wired into ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(parser.parse_args(["compare", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
