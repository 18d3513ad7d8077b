"""``python -m bench load``: load-test any OpenAI-compatible chat completions endpoint.

    python -m bench load --url http://127.0.0.1:8080/v1 --model M [--stream]
        [--concurrency N | --rate R] [--duration S | --requests N]
        [--prompt-tokens T] [--max-tokens T] [--key K] [--json FILE] [--plot FILE.png]

`add_parser` registers the subcommand on ``python -m bench``'s subparsers; `run`
executes parsed arguments and returns the exit code: 0 when some requests succeeded,
1 when none did, 2 for a usage error (including ``--plot`` without matplotlib), 130
when interrupted by Ctrl-C (after printing the partial report).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import orjson
import trio

from bench.loadgen.report import (
    format_progress,
    format_report,
    plot,
    require_matplotlib,
    write_json,
)
from bench.loadgen.runner import LoadConfig, LoadResult, LoadRun, Progress
from bench.loadgen.workload import PREFIX_TOKENS
from bench.subcommand import at_least

__all__ = ["add_parser", "run"]

DEFAULT_CONCURRENCY = 16
DEFAULT_DURATION_S = 10.0

_DESCRIPTION = """\
Load-test an OpenAI-compatible endpoint: POST {URL}/chat/completions with a synthetic
prompt, in a closed loop (--concurrency: N connections, each sending its next request
when the last one ends) or an open loop (--rate: arrivals on a fixed schedule, whatever
the server does; latency counts from the scheduled time, so queueing shows). Reports
throughput, latency, time to first token, inter-token latency, output tokens per second
and errors by status.

Only point load tests at servers you run or are allowed to test."""

_EPILOG = f"""\
The prompt is deterministic: "Request NNNNNNNN." then common English words of one token
each (GPT-4/4o, Llama 3, Mistral tokenizers), so its text is about T tokens (never less
than {PREFIX_TOKENS}); the server adds its chat framing. The request number makes every prompt
unique, so no prefix cache can serve it. Defaults: --concurrency {DEFAULT_CONCURRENCY}, \
--duration {DEFAULT_DURATION_S:g}.
Examples:
  python -m bench load --url http://127.0.0.1:8080/v1 --model gpt-4o-mini --concurrency 64
  python -m bench load --url http://127.0.0.1:8080/v1 --model m --stream --rate 50 \\
      --duration 30 --json run.json --plot run.png"""


_positive_int = at_least(int, 1)
_non_negative_int = at_least(int, 0)
_positive_float = at_least(float, 0.0, strict=True)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register the ``load`` subcommand and return its parser."""
    parser = subparsers.add_parser(
        "load",
        help="load-test an OpenAI-compatible endpoint (only servers you may test)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", required=True, help="base URL of the API, e.g. http://127.0.0.1:8080/v1"
    )
    parser.add_argument("--model", required=True, help="model name sent in each request")
    parser.add_argument(
        "--stream", action="store_true", help="stream answers (stream_options.include_usage)"
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="closed loop: N connections, each one request at a time "
        f"(default {DEFAULT_CONCURRENCY})",
    )
    shape.add_argument(
        "--rate", type=_positive_float, metavar="R", help="open loop: R arrivals per second"
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration",
        type=_positive_float,
        metavar="S",
        help=f"stop sending after S seconds (default {DEFAULT_DURATION_S:g})",
    )
    stop.add_argument(
        "--requests", type=_positive_int, metavar="N", help="stop after N requests (arrivals)"
    )
    parser.add_argument(
        "--prompt-tokens", type=_non_negative_int, default=64, metavar="T", help="default 64"
    )
    parser.add_argument(
        "--max-tokens", type=_positive_int, default=128, metavar="T", help="default 128"
    )
    parser.add_argument("--key", metavar="K", help="API key, sent as Authorization: Bearer K")
    parser.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="open loop: cap on requests in flight; arrivals beyond it are dropped and "
        "counted (default 1024)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="per request, send to last byte (default 60)",
    )
    parser.add_argument(
        "--extra-body",
        type=_json_object,
        default={},
        metavar="JSON",
        help="JSON object merged into each body, e.g. '{\"ignore_eos\": true}' for vLLM",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw figures here")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw latency distribution and throughput over time (needs matplotlib)",
    )
    return parser


def _config(args: argparse.Namespace) -> LoadConfig:
    concurrency = args.concurrency
    if concurrency is None and args.rate is None:
        concurrency = DEFAULT_CONCURRENCY
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    return LoadConfig(
        url=args.url,
        model=args.model,
        stream=args.stream,
        concurrency=concurrency,
        rate=args.rate,
        duration_s=duration,
        requests=args.requests,
        prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens,
        api_key=args.key,
        max_inflight=args.max_inflight,
        timeout_s=args.timeout,
        extra_body=args.extra_body,
    )


class _ProgressLine:
    """Rewrites one status line on a terminal; does nothing when `out` is not one."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.enabled = out.isatty()
        self._shown = False

    def show(self, view: Progress) -> None:
        self._out.write("\r" + format_progress(view) + "\x1b[K")
        self._out.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._shown = False


async def _drive(load: LoadRun, line: _ProgressLine) -> bool:
    """Run the load; return True if Ctrl-C stopped it."""
    with trio.CancelScope() as interrupt:
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread():
                nursery.start_soon(_cancel_on_sigint, interrupt)
            await load.run(progress=line.show if line.enabled else None)
            nursery.cancel_scope.cancel()
    return interrupt.cancelled_caught


async def _cancel_on_sigint(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


def run(args: argparse.Namespace) -> int:
    """Execute ``load`` with parsed `args`: print the report, write --json/--plot."""
    try:
        config = _config(args)
        load = LoadRun(config)
    except ValueError as exc:
        print(f"python -m bench load: {exc}", file=sys.stderr)
        return 2
    if args.plot is not None and (missing := require_matplotlib()) is not None:
        print(f"python -m bench load: {missing}", file=sys.stderr)
        return 2

    line = _ProgressLine(sys.stderr)
    try:
        interrupted = trio.run(_drive, load, line)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was in place
        interrupted = True
    finally:
        line.clear()
    result = load.result(interrupted=interrupted)
    print(format_report(result), flush=True)
    return _write_outputs(result, args.json, args.plot) or _exit_code(result)


def _write_outputs(result: LoadResult, json_path: Path | None, plot_path: Path | None) -> int:
    """Write --json and --plot; return 1 if one could not be written, else 0."""
    status = 0
    if json_path is not None:
        try:
            write_json(result, json_path)
            print(f"wrote {json_path}")
        except OSError as exc:
            print(f"python -m bench load: cannot write {json_path}: {exc}", file=sys.stderr)
            status = 1
    if plot_path is not None:
        try:
            plot(result, plot_path)
            print(f"wrote {plot_path}")
        except (OSError, ValueError) as exc:
            print(f"python -m bench load: cannot write {plot_path}: {exc}", file=sys.stderr)
            status = 1
    return status


def _exit_code(result: LoadResult) -> int:
    if result.interrupted:
        return 130
    return 0 if result.summary.ok else 1
