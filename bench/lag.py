"""``python -m bench lag``: what holds the gateway's event loop up under load, and why.

    python -m bench lag [--rate 500] [--duration 15] [--scenario json|stream|paced]
        [--pin-cpu N] [--json FILE] [--log-dir DIR]

Serves the gateway in this process (``compare``'s generated config and managed key, in
front of a fake upstream in its own process) under a trio Instrument, while a ``python
-m bench load`` process sends an open-loop load (``--rate`` arrivals per second) at it.
It reports, for the loaded window only (startup is excluded):

- task steps: how long each run of one task lasted between two checkpoints (a long one
  holds every other request up: the gateway's own doing);
- scheduler batches: the time from one I/O poll to the next (all steps of one pass);
- oversleeps: how much later than asked the loop came back from an I/O poll that timed
  out (its thread was not running: the CPU was busy with other processes, or another
  thread of ours held the GIL);
- of that, the main thread's run-queue wait (/proc/self/task/TID/schedstat: runnable
  but not running, the machine's share) and so, by difference, the rest (the GIL held
  by our other threads, the ledger writer and the offload pool, whose CPU is shown);
- garbage-collector pauses by generation (gc.callbacks);
- and the client's view: p50/p99 latency of the load.

``--pin-cpu N`` runs this process (the gateway) on CPU N and the load generator and the
fake upstream on the others, so the machine's share can be told apart.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

from bench.processes import Processes, env_with_repo, venv_bin
from bench.scenarios import SCENARIOS
from bench.subcommand import add_output_options, write_json
from bench.targets import gateway_config, start_upstream

__all__ = ["LoopProbe", "add_parser", "run"]

SLOW_STEP_S = 0.001  # task steps reported from this long
BUCKETS_MS = (1, 2, 4, 8, 16, 32, 64)


def _schedstat(tid: int) -> tuple[int, int]:
    """(on-CPU ns, run-queue wait ns) of thread `tid`."""
    fields = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
    return int(fields[0]), int(fields[1])


def _histogram(values_s: list[float]) -> dict[str, int]:
    """How many values reach each of BUCKETS_MS."""
    return {f">={b}ms": sum(v >= b / 1000 for v in values_s) for b in BUCKETS_MS}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LoopProbe(trio.abc.Instrument):
    """Times task steps, scheduler batches, oversleeps and GC pauses while `active`."""

    def __init__(self) -> None:
        self.active = False
        self.steps: list[float] = []  # durations of steps >= SLOW_STEP_S
        self.step_count = 0
        self.slow_tasks: dict[str, int] = {}
        self.batches: list[float] = []
        self.oversleeps: list[float] = []
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._step_at = 0.0
        self._poll_end = 0.0
        self._poll_start = 0.0
        self._timeout = 0.0
        self._gc_at = 0.0
        gc.callbacks.append(self._gc)

    def close(self) -> None:
        gc.callbacks.remove(self._gc)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_at = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self.active:
            return
        took = time.perf_counter() - self._step_at
        self.step_count += 1
        if took >= SLOW_STEP_S:
            self.steps.append(took)
            self.slow_tasks[task.name] = self.slow_tasks.get(task.name, 0) + 1

    def before_io_wait(self, timeout: float) -> None:
        now = time.perf_counter()
        if self.active and self._poll_end:
            self.batches.append(now - self._poll_end)
        self._poll_start = now
        self._timeout = timeout

    def after_io_wait(self, timeout: float) -> None:
        now = time.perf_counter()
        self._poll_end = now
        if self.active and 0 < self._timeout < 1.0:
            late = (now - self._poll_start) - self._timeout
            if late > 0:
                self.oversleeps.append(late)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_at = time.perf_counter()
        elif self.active:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_at)


def _create_key(config: Path, cwd: Path) -> str:
    done = subprocess.run(
        [venv_bin("gateway"), "keys", "create", "--config", str(config), "--name", "bench-lag",
         "--rpm", "10000000", "--tpm", "1000000000", "--credit", "1000000", "--json"],
        capture_output=True, cwd=cwd, timeout=60, check=True,
    )  # fmt: skip
    return str(json.loads(done.stdout)["key"])


def _other_threads_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads but the main one, by name."""
    out: dict[str, float] = {}
    main = threading.main_thread().native_id
    for tid_text in os.listdir("/proc/self/task"):
        tid = int(tid_text)
        if tid == main:
            continue
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            out[name] = out.get(name, 0.0) + _schedstat(tid)[0] / 1e9
        except OSError:
            continue
    return out


def measure(opts: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.server.serve import serve

    procs = Processes(log_dir)
    try:
        upstream = start_upstream(procs, 60.0)
        config_path = log_dir / "gateway.toml"
        config_path.write_text(
            gateway_config(0, upstream.base_url, log_dir / "gateway.sqlite3", workers=1)
        )
        key = _create_key(config_path, log_dir)
        config = load_config(config_path)
        if opts.pin_cpu is not None:
            others = os.sched_getaffinity(0) - {opts.pin_cpu}
            os.sched_setaffinity(upstream.proc.pid, others)
            os.sched_setaffinity(0, {opts.pin_cpu})
        probe = LoopProbe()
        main_tid = threading.get_native_id()  # this is the main thread
        result: dict[str, Any] = {}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve, create_app(config), "127.0.0.1", 0)
                scenario = SCENARIOS[opts.scenario]
                load_json = log_dir / "load.json"
                command = [
                    sys.executable, "-m", "bench", "load",
                    "--url", f"http://127.0.0.1:{port}/v1", "--model", scenario.gateway_model,
                    "--rate", str(opts.rate), "--duration", str(opts.duration_s),
                    "--key", key, "--json", str(load_json),
                    *(["--stream"] if scenario.stream else []),
                ]  # fmt: skip
                pin = None
                if opts.pin_cpu is not None:
                    pin = os.sched_getaffinity(upstream.proc.pid)
                await trio.sleep(1.0)  # the background tasks' first rounds
                cpu0, wait0 = _schedstat(main_tid)
                threads0 = _other_threads_cpu_s()
                probe.active = True
                started = time.perf_counter()
                load = await trio.run_process(
                    command, capture_stdout=True, env=env_with_repo(),
                    preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
                )  # fmt: skip
                wall = time.perf_counter() - started
                probe.active = False
                cpu1, wait1 = _schedstat(main_tid)
                threads1 = _other_threads_cpu_s()
                summary = json.loads(load_json.read_bytes())["summary"]
                latency = summary.get("latency_s") or {}
                result.update(
                    wall_s=wall,
                    client={
                        "ok": summary["ok"],
                        "failed": summary["failed"],
                        "p50_ms": (latency.get("p50") or 0) * 1000,
                        "p99_ms": (latency.get("p99") or 0) * 1000,
                        "max_ms": (latency.get("max") or 0) * 1000,
                    },
                    main_thread_cpu_s=(cpu1 - cpu0) / 1e9,
                    main_thread_runqueue_wait_s=(wait1 - wait0) / 1e9,
                    other_threads_cpu_s={
                        k: round(v - threads0.get(k, 0.0), 4) for k, v in threads1.items()
                    },
                    load_stdout=load.stdout.decode(errors="replace")[-2000:],
                )
                nursery.cancel_scope.cancel()

        trio.run(main, instruments=[probe])
        probe.close()
    finally:
        procs.close()
    over = probe.oversleeps
    result.update(
        rate=opts.rate,
        scenario=opts.scenario,
        pin_cpu=opts.pin_cpu,
        steps={
            "count": probe.step_count,
            "slow": _histogram(probe.steps),
            "max_ms": max(probe.steps, default=0.0) * 1000,
            "slow_tasks": dict(sorted(probe.slow_tasks.items(), key=lambda kv: -kv[1])[:8]),
        },
        batches={
            "count": len(probe.batches),
            "p99_ms": _quantile(probe.batches, 0.99) * 1000,
            "max_ms": max(probe.batches, default=0.0) * 1000,
            "slow": _histogram(probe.batches),
        },
        oversleeps={
            "count": len(over),
            "total_s": sum(over),
            "p99_ms": _quantile(over, 0.99) * 1000,
            "max_ms": max(over, default=0.0) * 1000,
            "slow": _histogram(over),
        },
        gc={
            str(g): {"count": len(p), "max_ms": max(p, default=0.0) * 1000}
            for g, p in probe.gc_pauses.items()
        },
    )
    return result


def format_report(r: dict[str, Any]) -> str:
    c = r["client"]
    lines = [
        f"open loop {r['rate']:g} req/s, {r['scenario']}, {r['wall_s']:.1f} s"
        + (f", gateway pinned to CPU {r['pin_cpu']}" if r["pin_cpu"] is not None else ""),
        f"client: {c['ok']} ok, {c['failed']} failed; p50 {c['p50_ms']:.2f} ms, "
        f"p99 {c['p99_ms']:.2f} ms, max {c['max_ms']:.2f} ms",
        f"task steps: {r['steps']['count']:,}; max {r['steps']['max_ms']:.2f} ms; "
        f"slow {r['steps']['slow']}",
        f"  slowest tasks (steps >= 1 ms): {r['steps']['slow_tasks']}",
        f"scheduler batches: {r['batches']['count']:,}; p99 {r['batches']['p99_ms']:.2f} ms, "
        f"max {r['batches']['max_ms']:.2f} ms; {r['batches']['slow']}",
        f"oversleeps: {r['oversleeps']['count']:,}, {r['oversleeps']['total_s'] * 1000:.0f} ms in "
        f"all; p99 {r['oversleeps']['p99_ms']:.2f} ms, max {r['oversleeps']['max_ms']:.2f} ms; "
        f"{r['oversleeps']['slow']}",
        f"main thread: {r['main_thread_cpu_s']:.2f} s on CPU, "
        f"{r['main_thread_runqueue_wait_s'] * 1000:.0f} ms runnable but waiting for a CPU "
        "(the machine's share)",
        f"other threads' CPU (GIL holders): {r['other_threads_cpu_s']}",
        "gc pauses: "
        + ", ".join(
            f"gen {g}: {v['count']} (max {v['max_ms']:.2f} ms)" for g, v in r["gc"].items()
        ),
    ]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``lag``."""
    parser = subparsers.add_parser(
        "lag", help="what holds the gateway's event loop up under load (a trio Instrument)"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="arrivals/s (default 500)")
    parser.add_argument(
        "--duration", type=float, default=15.0, dest="duration_s", help="seconds (default 15)"
    )
    parser.add_argument("--scenario", choices=("json", "stream", "paced"), default="json")
    parser.add_argument("--pin-cpu", type=int, default=None, dest="pin_cpu", metavar="N")
    add_output_options(parser, "write the figures here")


def run(args: argparse.Namespace) -> int:
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.log_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-lag-") as tmp:
            result = measure(args, Path(tmp))
    print(format_report(result), flush=True)
    write_json(args.json, result)
    return 0 if result["client"]["ok"] else 1
