"""``python -m bench stall``: how long a big request holds up the small ones beside it.

    python -m bench stall [--duration 5] [--senders 1] [--interval-ms 10]
        [--cases one-char,mock,messages,tools] [--json FILE] [--log-dir DIR]

Starts the fake OpenAI upstream and ``gateway serve`` (one worker, the default 16 MiB
body limit) with the built-in mock as a second model (`bench.targets`), and a managed
key with RPM, TPM and credit, so every request is counted and reserved. Then, per
case, for --duration seconds: --senders threads each send one big request after
another (a body of 3 to 15 MB, built once), while a probe sends ``GET /healthz`` every
--interval-ms on a keep-alive connection and times each answer. A "baseline" phase
runs the probe alone first. The gateway has one event loop: whatever a big request
does on it (parsing, validation, token counting, translation, the mock's reply) delays
every probe by as much, so the probe's p99 and maximum are the stall.

The cases (the bodies of issue 10):

- ``one-char``: one user message of 15 MB of "a" (token counting's worst case), to
  the fake upstream;
- ``mock``: the same body to the mock model, which counts and quotes it itself;
- ``messages``: 470,000 messages of "x";
- ``tools``: 20,000 function tools with a small schema each (3 MB).

The table gives per phase the probes, their p50, p99 and maximum, and the big
requests sent, their statuses and median time. Everything listens on 127.0.0.1 and
is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import targets
from bench.processes import Processes, log_tail
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

__all__ = ["CASES", "StallOptions", "add_parser", "big_body", "format_table", "run", "stall"]

FAKE_MODEL = "m"  # compare's json scenario
MOCK_MODEL = "mock"
BIG_BYTES = 15_000_000


def _one_char(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "a" * BIG_BYTES}]}


def _messages(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "x"}] * 470_000}


def _tools(model: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    functions = [{"name": f"t{i}", "description": "d", "parameters": schema} for i in range(20_000)]
    tools = [{"type": "function", "function": f} for f in functions]
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": tools}


CASES: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "one-char": (_one_char, FAKE_MODEL),
    "mock": (_one_char, MOCK_MODEL),
    "messages": (_messages, FAKE_MODEL),
    "tools": (_tools, FAKE_MODEL),
}


def big_body(case: str, scale: float = 1.0) -> bytes:
    """The request body of `case` (`scale` < 1 shrinks it, for tests), as sent."""
    build, model = CASES[case]
    body = build(model)
    if scale != 1.0:
        for message in body["messages"]:
            if len(message["content"]) > 1:
                message["content"] = message["content"][: int(len(message["content"]) * scale)]
        body["messages"] = body["messages"][: max(1, int(len(body["messages"]) * scale))]
        if "tools" in body:
            body["tools"] = body["tools"][: max(1, int(len(body["tools"]) * scale))]
    return orjson.dumps(body)


@dataclass
class StallOptions:
    duration_s: float = 5.0
    senders: int = 1
    interval_ms: float = 10.0
    cases: tuple[str, ...] = tuple(CASES)
    scale: float = 1.0  # tests shrink the bodies
    start_timeout_s: float = 60.0
    log_dir: Path | None = None
    echo: bool = True


def _probe(client: httpx.Client, url: str, stop: threading.Event, interval_s: float) -> list[float]:
    """GET /healthz every `interval_s` until `stop`; each answer's latency in seconds."""
    latencies: list[float] = []
    while not stop.is_set():
        start = time.perf_counter()
        client.get(url).raise_for_status()
        took = time.perf_counter() - start
        latencies.append(took)
        stop.wait(max(0.0, interval_s - took))
    return latencies


def _send(
    url: str, key: str, body: bytes, stop: threading.Event, out: list[tuple[int, float]]
) -> None:
    """Send `body` again and again until `stop`; (status, seconds) of each."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            start = time.perf_counter()
            status = client.post(url, content=body, headers=headers).status_code
            out.append((status, time.perf_counter() - start))


def _phase(
    name: str,
    probe_url: str,
    opts: StallOptions,
    send: Callable[[threading.Event, list[tuple[int, float]]], None] | None,
) -> dict[str, Any]:
    """One phase: the probe for --duration, with the senders running if `send`."""
    stop = threading.Event()
    sent: list[tuple[int, float]] = []
    threads = [
        threading.Thread(target=send, args=(stop, sent), daemon=True)
        for _ in range(opts.senders if send is not None else 0)
    ]
    with httpx.Client(timeout=120) as client:
        client.get(probe_url)  # connect before measuring
        for t in threads:
            t.start()
        timer = threading.Timer(opts.duration_s, stop.set)
        timer.start()
        try:
            latencies = _probe(client, probe_url, stop, opts.interval_ms / 1000)
        finally:
            stop.set()
            timer.cancel()
            for t in threads:
                t.join(timeout=120)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "phase": name,
        "probes": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
        "big_sent": len(sent),
        "big_statuses": dict(Counter(str(s) for s, _ in sent)),
        "big_p50_ms": round(statistics.median(t for _, t in sent) * 1000, 1) if sent else None,
    }


def stall(opts: StallOptions) -> dict[str, Any]:
    """Run the measurement; return the document --json writes."""
    say = echo(opts.echo)
    phases: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        log_dir = opts.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stall-"))
        )
        procs = Processes(log_dir)
        stack.callback(procs.close)
        upstream = targets.start_upstream(procs, opts.start_timeout_s)
        setup = targets.GatewaySetup(mock_model=MOCK_MODEL)
        gateway = targets.start_gateway(
            procs, upstream, opts.start_timeout_s, setup=setup, key_name="bench-stall"
        )
        assert gateway.api_key is not None
        key = gateway.api_key
        chat = f"{gateway.base_url}/chat/completions"
        probe = gateway.base_url.removesuffix("/v1") + "/healthz"
        try:
            phases.append(_phase("baseline", probe, opts, None))
            say(f"baseline: p99 {phases[-1]['p99_ms']} ms")
            for case in opts.cases:
                body = big_body(case, opts.scale)

                def send(
                    stop: threading.Event, out: list[tuple[int, float]], body: bytes = body
                ) -> None:
                    _send(chat, key, body, stop, out)

                phases.append(_phase(case, probe, opts, send))
                say(f"{case}: p99 {phases[-1]['p99_ms']} ms, max {phases[-1]['max_ms']} ms")
        except BaseException:
            tail = log_tail(gateway.log_path)
            if tail:
                say(f"--- gateway log tail:\n{tail}")
            raise
    return {
        "source": gateway_source(),
        "options": {
            "duration_s": opts.duration_s,
            "senders": opts.senders,
            "interval_ms": opts.interval_ms,
            "cases": list(opts.cases),
            "scale": opts.scale,
        },
        "phases": phases,
    }


def format_table(doc: dict[str, Any]) -> str:
    """One line per phase: the probe's latency, and what the big requests got."""
    lines = [
        f"{'phase':<10} {'probes':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'big sent':>8} {'big p50 ms':>10}  statuses",
        "-" * 78,
    ]
    for p in doc["phases"]:
        big = "-" if p["big_p50_ms"] is None else f"{p['big_p50_ms']:.0f}"
        statuses = ",".join(f"{k}x{v}" for k, v in sorted(p["big_statuses"].items())) or "-"
        lines.append(
            f"{p['phase']:<10} {p['probes']:>6} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f} "
            f"{p['max_ms']:>8.1f} {p['big_sent']:>8} {big:>10}  {statuses}"
        )
    return "\n".join(lines)


def _cases(text: str) -> tuple[str, ...]:
    names = tuple(n for n in text.split(",") if n)
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"cases are among {', '.join(CASES)}")
    return names


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``stall`` subcommand and return its parser."""
    parser = parser_for(subparsers, "stall", "how long big requests hold up small ones", __doc__)
    d = StallOptions()
    parser.add_argument("--duration", type=at_least(float, 0.1), default=d.duration_s,
                        dest="duration_s", metavar="S", help="seconds per phase")  # fmt: skip
    parser.add_argument("--senders", type=at_least(int, 1), default=d.senders,
                        help="threads sending big requests at once")  # fmt: skip
    parser.add_argument("--interval-ms", type=at_least(float, 1.0), default=d.interval_ms,
                        dest="interval_ms", metavar="MS", help="pause between probes")  # fmt: skip
    parser.add_argument("--cases", type=_cases, default=d.cases, help=",".join(CASES))
    parser.add_argument("--scale", type=at_least(float, 0.0001), default=d.scale,
                        help="shrink the big bodies (tests)")  # fmt: skip
    parser.add_argument("--start-timeout", type=at_least(float, 1.0), default=d.start_timeout_s,
                        dest="start_timeout_s", metavar="S", help="server start-up")  # fmt: skip
    add_output_options(parser, "write the figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``stall`` with parsed `args`: print the table, write --json."""
    opts = options_from(args, StallOptions)
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)
    doc = run_measurement("stall", lambda: stall(opts))
    if isinstance(doc, int):
        return doc
    print(format_table(doc), flush=True)
    write_json(args.json, doc)
    return 0
