"""``python -m bench console``: what serving the web console costs the chat route.

    python -m bench console [--concurrency 16] [--duration 5] [--rounds 3]
        [--page-rate 2] [--json FILE] [--log-dir DIR] [--start-timeout S]

Starts the fake OpenAI upstream (``python -m bench upstream``) and ``gateway serve``
(one worker, an admin key, one model on the fake) and, in each round, runs the chat
load of ``python -m bench load`` (closed loop, --concurrency connections, non-streamed)
for --duration seconds under three conditions, their order rotating from round to
round:

- ``alone``: nothing else;
- ``console N/s``: one logged-in client also loads console pages at --page-rate pages
  a second (Models, Manage API Keys, a key's page, Usage, in turn), a busy operator;
- ``console max``: that client loads pages back to back, as fast as it is answered.

It prints per condition the medians over the rounds of chat requests per second, p50
and p99 latency, their ratio to ``alone`` in the same round, the console pages served
per second, the gateway's CPU time (/proc) per chat request, and per page: the CPU
the run took beyond what its chat requests cost at the ``alone`` rate of the same round,
divided by the pages served (steadier than req/s on a shared machine). The chat route
never enters the console's code (it is raw ASGI, gateway/app.py); what a page costs it
is the worker's time spent rendering the page.

Everything listens on 127.0.0.1; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from bench import targets
from bench.loadgen.runner import LoadConfig, LoadRun
from bench.processes import HOST, free_port, log_tail, server_processes, venv_bin, wait_listening
from bench.procfs import cpu_delta, tree_cpu
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

__all__ = ["ConsoleOptions", "add_parser", "console", "format_table", "run"]

KEY = "sk-bench-console-0123456789"
ADMIN = "adm-bench-console-0123456789"


@dataclass
class ConsoleOptions:
    concurrency: int = 16
    duration_s: float = 5.0
    rounds: int = 3
    page_rate: float = 2.0
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    json: Path | None = None
    echo: bool = True


def gateway_config(port: int, upstream_url: str, sqlite_path: Path) -> str:
    return f"""
[server]
host = "{HOST}"
port = {port}
[state]
sqlite_path = "{sqlite_path}"
admin_key = "{ADMIN}"
[providers.fake]
kind = "openai"
base_url = "{upstream_url}"
api_key = "{targets.UPSTREAM_KEY}"
[models."chat"]
provider = "fake"
upstream_model = "fake-model"
price_input_per_mtok = 1
price_output_per_mtok = 2
[[keys]]
name = "bench"
key = "{KEY}"
"""


class PageLoop:
    """One logged-in console client loading pages in a thread until stopped."""

    def __init__(self, base: str, rate: float | None) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        self.rate = rate  # pages a second; None: back to back
        self.pages = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        login = self.client.get("/console/login")
        token = re.search(r'name="login_token" value="([^"]+)"', login.text)
        assert token is not None, "no login form"
        done = self.client.post(
            "/console/login", data={"login_token": token.group(1), "admin_key": ADMIN}
        )
        assert done.status_code == 303, f"login failed: {done.status_code}"
        keys = self.client.get("/console/keys")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', keys.text)
        assert csrf is not None
        made = self.client.post(
            "/console/keys", data={"csrf_token": csrf.group(1), "name": "bench", "rpm": "100"}
        )
        key_id = re.search(r"/console/keys/([a-z0-9]{12})", made.text)
        assert key_id is not None, "no key made"
        self.paths = [
            "/console/models",
            "/console/keys",
            f"/console/keys/{key_id.group(1)}",
            "/console/usage",
        ]

    def _run(self) -> None:
        i = 0
        start = time.monotonic()
        while not self._stop.is_set():
            if self.rate is not None:
                due = start + i / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
            resp = self.client.get(self.paths[i % len(self.paths)])
            self.pages += 1
            self.failed += resp.status_code != 200
            i += 1

    def __enter__(self) -> PageLoop:
        self.pages = self.failed = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def close(self) -> None:
        self.client.close()


def _chat(url: str, opts: ConsoleOptions, gateway_pid: int = 0) -> dict[str, Any]:
    config = LoadConfig(
        url=url,
        model="chat",
        stream=False,
        concurrency=opts.concurrency,
        duration_s=opts.duration_s,
        api_key=KEY,
        max_tokens=16,
        timeout_s=30.0,
    )
    load = LoadRun(config)
    cpu_before = tree_cpu(gateway_pid) if gateway_pid else {}
    started = time.monotonic()
    trio.run(load.run)
    elapsed = time.monotonic() - started
    cpu_s = cpu_delta(cpu_before, tree_cpu(gateway_pid)) if gateway_pid else 0.0
    s = load.result().summary
    latency = s.latency
    return {
        "requests": s.requests,
        "ok": s.ok,
        "rps": s.ok / elapsed if elapsed else 0.0,
        "p50_ms": None if latency is None else latency.p50 * 1000,
        "p99_ms": None if latency is None else latency.p99 * 1000,
        "seconds": elapsed,
        "gateway_cpu_s": cpu_s,
    }


def console(opts: ConsoleOptions) -> dict[str, Any]:
    """Run the measurement; return the document --json writes."""
    say = echo(opts.echo)
    conditions = ["alone", f"console {opts.page_rate:g}/s", "console max"]
    runs: list[dict[str, Any]] = []
    with server_processes(opts.log_dir, "bench-console-") as procs:
        upstream = targets.start_upstream(procs, opts.start_timeout_s)
        port = free_port()
        config = procs.log_dir / "gateway.toml"
        config.write_text(gateway_config(port, upstream.base_url, procs.log_dir / "gw.sqlite3"))
        proc, _ = procs.start("gateway", [venv_bin("gateway"), "serve", "--config", str(config)])
        wait_listening(proc, port, opts.start_timeout_s, "the gateway")
        base = f"http://{HOST}:{port}"
        loops: list[PageLoop] = []
        try:
            paced = PageLoop(base, opts.page_rate)
            loops.append(paced)
            flat = PageLoop(base, None)
            loops.append(flat)
            _chat(f"{base}/v1", ConsoleOptions(concurrency=opts.concurrency, duration_s=1))
            for r in range(opts.rounds):
                order = conditions[r % 3 :] + conditions[: r % 3]
                for name in order:
                    loop = None if name == "alone" else (flat if name.endswith("max") else paced)
                    if loop is None:
                        run = _chat(f"{base}/v1", opts, proc.pid)
                        run["pages_per_s"] = 0.0
                        run["pages"] = 0
                    else:
                        with loop:
                            run = _chat(f"{base}/v1", opts, proc.pid)
                        run["pages"] = loop.pages
                        run["pages_per_s"] = loop.pages / run["seconds"]
                        run["pages_failed"] = loop.failed
                    run.update(round=r + 1, condition=name)
                    runs.append(run)
                    say(
                        f"round {r + 1} {name}: {run['rps']:.0f} chat req/s, "
                        f"p99 {run['p99_ms'] or 0:.1f} ms, {run['pages_per_s']:.1f} pages/s"
                    )
        except BaseException:
            tail = log_tail(procs.log_dir / "gateway.log")
            if tail:
                say(f"--- gateway log tail:\n{tail}")
            raise
        finally:
            for loop in loops:
                loop.close()
    return {
        "options": {
            "concurrency": opts.concurrency,
            "duration_s": opts.duration_s,
            "rounds": opts.rounds,
            "page_rate": opts.page_rate,
        },
        "source": gateway_source(),
        "runs": runs,
        "summary": summarise(runs, conditions),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]], conditions: list[str]) -> list[dict[str, Any]]:
    """Per condition, medians over the rounds; ratios to `alone` in the same round."""
    base = {r["round"]: r for r in runs if r["condition"] == "alone"}
    out = []
    for name in conditions:
        mine = [r for r in runs if r["condition"] == name]

        def ratio(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
            values = []
            for r in mine:
                ref = base[r["round"]][key]
                values.append(r[key] / ref if r[key] is not None and ref else None)
            return _median(values)

        per_page = []
        for r in mine:
            ref = base[r["round"]]
            if r["pages"] and ref["ok"]:
                chat_cpu = ref["gateway_cpu_s"] / ref["ok"] * r["ok"]
                per_page.append((r["gateway_cpu_s"] - chat_cpu) / r["pages"] * 1000)
        out.append(
            {
                "condition": name,
                "cpu_ms_per_chat": _median(
                    [r["gateway_cpu_s"] / r["ok"] * 1000 if r["ok"] else None for r in mine]
                ),
                "cpu_ms_per_page": _median(list(per_page)),
                "rps": _median([r["rps"] for r in mine]),
                "p50_ms": _median([r["p50_ms"] for r in mine]),
                "p99_ms": _median([r["p99_ms"] for r in mine]),
                "rps_ratio": ratio("rps"),
                "p99_ratio": ratio("p99_ms"),
                "pages_per_s": _median([r["pages_per_s"] for r in mine]),
            }
        )
    return out


def format_table(doc: dict[str, Any]) -> str:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{'condition':<14} {'chat req/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'req/s ratio':>11} {'p99 ratio':>9} {'pages/s':>8} {'CPU ms/chat':>11} "
        f"{'CPU ms/page':>11}",
        "-" * 96,
    ]
    for row in doc["summary"]:
        lines.append(
            f"{row['condition']:<14} {cell(row['rps'], '.0f'):>10} "
            f"{cell(row['p50_ms'], '.2f'):>7} {cell(row['p99_ms'], '.2f'):>7} "
            f"{cell(row['rps_ratio'], '.3f'):>11} {cell(row['p99_ratio'], '.3f'):>9} "
            f"{cell(row['pages_per_s'], '.1f'):>8} {cell(row['cpu_ms_per_chat'], '.3f'):>11} "
            f"{cell(row['cpu_ms_per_page'], '.1f'):>11}"
        )
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = parser_for(
        subparsers, "console", "chat throughput with and without console pages", __doc__
    )
    parser.add_argument(
        "--concurrency", type=at_least(int, 1), default=16,
        help="chat connections, closed loop (default 16)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", dest="duration_s", type=at_least(float, 0, strict=True), default=5.0,
        help="seconds per condition per round (default 5)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=at_least(int, 1), default=3, help="default 3")
    parser.add_argument(
        "--page-rate", type=at_least(float, 0, strict=True), default=2.0,
        help="console pages a second in the paced condition (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--start-timeout", dest="start_timeout_s", type=at_least(float, 1), default=60.0,
        help="for each server to start (default 60)",
    )  # fmt: skip
    add_output_options(parser, "write the figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    opts = options_from(args, ConsoleOptions)
    doc = run_measurement("console", lambda: console(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc), flush=True)
    write_json(opts.json, doc)
    return 0
