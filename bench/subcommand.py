"""What the measuring subcommands (``compare``, ``idle``) share around a run.

Their options are a dataclass whose fields are the parsers' dests (`options_from`).
Both start servers that must be stopped however the run ends: SIGTERM is turned into
KeyboardInterrupt, so that their clean-up runs as on Ctrl-C, and an error becomes one
line on stderr and an exit status rather than a traceback. Both say how the run goes
on stderr (`echo`), and a document can say which code it measured (`gateway_source`).
`at_least` makes the argparse types of the numeric options of every subcommand.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "add_output_options",
    "at_least",
    "echo",
    "gateway_source",
    "options_from",
    "parser_for",
    "run_measurement",
    "write_json",
]

Options = TypeVar("Options", bound="DataclassInstance")
Number = TypeVar("Number", int, float)


def parser_for(
    subparsers: Any, name: str, summary: str, doc: str | None
) -> argparse.ArgumentParser:
    """Register subcommand `name`; its --help shows `doc` (the module's) as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def at_least(
    kind: Callable[[str], Number], low: Number, *, strict: bool = False
) -> Callable[[str], Number]:
    """An argparse type: a finite `kind` (int or float) >= `low`, or > `low` if `strict`;
    a bad value exits with argparse's usage message and status 2."""
    noun = "an integer" if kind is int else "a number"
    bound = f"{'>' if strict else '>='} {low:g}"

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """--log-dir (where the servers' configs and logs go) and --json (the figures)."""
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep configs and server logs here"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help=json_help)


def options_from(args: argparse.Namespace, cls: type[Options]) -> Options:
    """`cls` with each field set from the parsed argument of the same dest, if any."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


def run_measurement(command: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any] | int:
    """`measure()`'s document; or, after a line on stderr, the exit status 130 when it
    was interrupted (Ctrl-C, SIGTERM) or 1 when it failed."""

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return measure()
    except KeyboardInterrupt:
        print(f"python -m bench {command}: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"python -m bench {command}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_json(path: Path | None, doc: dict[str, Any]) -> None:
    """Write `doc` to `path` (--json), indented, and say so; nothing without a path."""
    if path is not None:
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        print(f"wrote {path}")


def echo(enabled: bool) -> Callable[[str], None]:
    """A function that prints a progress line on stderr, or does nothing if not `enabled`."""

    def say(text: str) -> None:
        if enabled:
            print(text, file=sys.stderr, flush=True)

    return say


def gateway_source() -> dict[str, Any]:
    """The commit measured and the files of gateway/ changed since (work in progress)."""
    repo = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=repo, capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.decode(errors="replace").rstrip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "gateway")
    return {
        "commit": git("rev-parse", "HEAD"),
        "gateway_changes": [line[3:] for line in changed.splitlines()] if changed else [],
    }
