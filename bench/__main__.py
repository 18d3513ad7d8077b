"""Command line of the load-test harness.

    python -m bench upstream --kind openai|anthropic|gemini --port 8001 [--host H]
        [--ttft-ms X] [--tokens-per-s X] [--chunks N] [--fail RATE] [--key K]
        [--tls-cert PATH --tls-key PATH]

runs a fake upstream in the foreground until Ctrl-C and prints one line with its URL
(https:// with --tls-cert and --tls-key: it serves HTTPS with them).

    python -m bench load --url URL --model M [--stream] [--concurrency N | --rate R]
        [--duration S | --requests N] [--json FILE] [--plot FILE.png] ...

load-tests any OpenAI-compatible endpoint (see bench/load.py).

    python -m bench compare [--targets direct,gateway,litellm,portkey] [--rounds N] ...

runs the same load against a fake upstream directly, through our gateway and through
installed peers, alternating A B A B, and prints the table (see bench/compare.py).

    python -m bench idle [--streams N] [--workers N] ...       (bench/idle.py)
    python -m bench restart [--workers N] [--rounds N] ...     (bench/restart.py)
    python -m bench stall [--duration S] [--cases ...] ...      (bench/stall.py)
    python -m bench soak [--duration 30m] [--rate R] ...        (bench/soak.py)

measure the memory of idle streams, the latency clients see while a worker is
replaced, how long big requests hold up small ones, and whether a long load with
faults leaks memory, descriptors or ledger rows.

    python -m bench observe [--requests N] [--rounds N]         (bench/observe.py)

times what observing one request costs, part by part (logs, metrics, traces).

    python -m bench conform --url URL --key KEY --model M [--model M2 ...] ...

holds any OpenAI-compatible endpoint to the Chat Completions contract with generated
requests and reports every departure (see bench/conform/).

    python -m bench routing [--calls N] [--repeat N]            (bench/routing.py)
    python -m bench failover [--rate R | --concurrency N] ...   (bench/failover.py)
    python -m bench relayloop [--chunks N] [--repeat N]         (bench/relayloop.py)
    python -m bench tlsloop [--records N] [--repeat N]          (bench/tlsloop.py)

time the routing decision per request, measure success and latency with one
deployment failing 20% and one dead against all healthy, and time the relay's own loop
per streamed chunk, and what the upstream pool's TLS costs per streamed record.

    python -m bench floor [--mode stream|raw] ...               (bench/floor.py)

runs a bare trio relay in front of a fake upstream: the floor under the gateway.

    python -m bench memory [--config FILE]                      (bench/memory.py)

says where a worker's memory goes at rest: imports by package, tokenizer tables, the
app started.

    python -m bench lag [--rate R] [--scenario S] [--pin-cpu N]  (bench/lag.py)

serves the gateway in process under a trio Instrument while an open-loop load runs:
long task steps, scheduler batches, oversleeps (CPU or GIL), GC pauses.

    python -m bench console [--concurrency N] [--page-rate R] ...  (bench/console.py)

measures chat throughput alone and while a client loads console pages.

    python -m bench ledger [--duration S] [--backends sqlite,postgres]   (bench/ledger.py)

measures the usage rows per second the ledger sustains into SQLite and PostgreSQL.

    python -m bench responses [--chunks N] [--calls N] [--repeat N]  (bench/responses.py)

times the Responses API's own work (events, objects, the bridge) next to chat's.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from bench import (
    compare,
    conform,
    console,
    failover,
    floor,
    idle,
    lag,
    ledger,
    load,
    memory,
    observe,
    relayloop,
    responses,
    restart,
    routing,
    soak,
    stall,
    tlsloop,
)
from bench.fakes import anthropic, gemini, openai
from bench.fakes.directives import DirectiveError
from bench.tls import server_context


@dataclass(frozen=True)
class FakeKind:
    """One fake vendor: its class, the key it accepts by default, its base URL path."""

    cls: Callable[..., Any]
    default_key: str
    base_path: str


FAKES = {
    "openai": FakeKind(openai.FakeOpenAI, openai.DEFAULT_KEY, "/v1"),
    "anthropic": FakeKind(anthropic.FakeAnthropic, anthropic.DEFAULT_KEY, "/v1"),
    "gemini": FakeKind(gemini.FakeGemini, gemini.DEFAULT_KEY, "/v1beta"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description="load-test harness")
    commands = parser.add_subparsers(dest="command", required=True)
    upstream = commands.add_parser("upstream", help="run a fake upstream until Ctrl-C")
    upstream.add_argument("--kind", default="openai", choices=sorted(FAKES), help="API to fake")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, required=True, help="0 picks a free port")
    upstream.add_argument("--ttft-ms", type=float, default=0.0, help="delay to first chunk")
    upstream.add_argument("--tokens-per-s", type=float, default=None, help="stream pace")
    upstream.add_argument("--chunks", type=int, default=5, help="content chunks per answer")
    upstream.add_argument("--fail", type=float, default=0.0, metavar="RATE", help="500 rate")
    upstream.add_argument("--key", default=None, help="accepted API key (default: the fake's)")
    upstream.add_argument("--tls-cert", default=None, metavar="PATH", help="serve HTTPS: PEM cert")
    upstream.add_argument("--tls-key", default=None, metavar="PATH", help="its PEM private key")
    load.add_parser(commands)
    idle.add_parser(commands)
    compare.add_parser(commands)
    restart.add_parser(commands)
    stall.add_parser(commands)
    soak.add_parser(commands)
    conform.add_parser(commands)
    routing.add_parser(commands)
    relayloop.add_parser(commands)
    tlsloop.add_parser(commands)
    responses.add_parser(commands)
    failover.add_parser(commands)
    floor.add_parser(commands)
    memory.add_parser(commands)
    lag.add_parser(commands)
    observe.add_parser(commands)
    console.add_parser(commands)
    ledger.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "load":
        code: int = load.run(args)
        return code
    if args.command == "idle":
        return idle.run(args)
    if args.command == "compare":
        result: int = compare.run(args)
        return result
    if args.command == "restart":
        return restart.run(args)
    if args.command == "stall":
        return stall.run(args)
    if args.command == "observe":
        return observe.run(args)
    if args.command == "soak":
        return soak.run(args)
    if args.command == "conform":
        return conform.run(args)
    if args.command == "routing":
        return routing.run(args)
    if args.command == "relayloop":
        return relayloop.run(args)
    if args.command == "tlsloop":
        return tlsloop.run(args)
    if args.command == "responses":
        return responses.run(args)
    if args.command == "failover":
        return failover.run(args)
    if args.command == "floor":
        return floor.run(args)
    if args.command == "memory":
        return memory.run(args)
    if args.command == "lag":
        return lag.run(args)
    if args.command == "console":
        return console.run(args)
    if args.command == "ledger":
        return ledger.run(args)
    return _upstream(args)


def _upstream(args: argparse.Namespace) -> int:
    """Run ``python -m bench upstream`` until Ctrl-C; return the exit code."""
    kind = FAKES[args.kind]
    if (args.tls_cert is None) != (args.tls_key is None):
        print("python -m bench: give both --tls-cert and --tls-key, or neither", file=sys.stderr)
        return 2
    context = None
    if args.tls_cert is not None:
        try:
            context = server_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"python -m bench: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 2
    try:
        fake = kind.cls(
            api_key=args.key or kind.default_key,
            record=False,
            ttft_ms=args.ttft_ms,
            tokens_per_s=args.tokens_per_s,
            chunks=args.chunks,
            fail_rate=args.fail,
        )
    except DirectiveError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2

    status = 0
    try:
        trio.run(
            _serve_and_announce, fake, args.kind, args.host, args.port, kind.base_path, context
        )
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        where = f"{args.host}:{args.port}"
        print(f"python -m bench: cannot listen on {where}: {group.exceptions[0]}", file=sys.stderr)
        status = 1
    return status


async def _serve_and_announce(
    fake: Any, kind: str, host: str, port: int, path: str, context: ssl.SSLContext | None
) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(fake.serve, host, port, ssl_context=context))
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if context is not None else "http"
        print(f"fake {kind} upstream: {scheme}://{shown}:{bound}{path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
