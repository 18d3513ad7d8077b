"""``python -m bench conform``: property-based conformance of any OpenAI-compatible
chat-completions endpoint.

    python -m bench conform --url URL [--key KEY] --model M [--model M2 ...]
        [--examples N] [--seed S] [--only stream,tools,errors,...]
        [--error-model M] [--header 'Name: value' ...] [--timeout S] [--no-shrink]
        [--json FILE] [--junit FILE]

Draws valid requests across the request schema with hypothesis (roles, content parts,
tools and tool_choice, response_format, sampling fields, stop, n, max tokens, stream and
stream_options), and invalid ones made from them, sends them to URL (the base URL, e.g.
http://127.0.0.1:8080/v1) and checks every answer against the Chat Completions contract
(bench/contract/). Per model and property the report says passed, failed (the
violations, the shrunk request, the response bytes that broke it and a curl line that
sends it again, with the key as $CONFORM_KEY) or not applicable. Exit status 0 only
when no property failed; 1 also when the URL does not answer at all; 2 for bad options.

Properties (--only takes their names or groups):

    completion         shape       the non-streamed answer's exact shape and types
    stream             stream      SSE framing, chunk headers, role, tool deltas, one
                                   finish reason, usage only when asked, [DONE]
    stream_agrees      stream      stream and completion say the same (deterministic
                                   models; a model that answers one request two ways
                                   makes it not applicable)
    structured_output  structured  strict json_schema content parses and validates
    tool_calls         tools       declared tools, valid arguments, tool_choice obeyed
    max_tokens         limits      the limit bounds usage.completion_tokens (text
                                   answers: the fakes never cut tool calls, and
                                   json_schema is a tool call on Anthropic)
    invalid_request    errors      one invalid change -> 4xx, error shape, param names it
    invalid_json       errors      a body that is not a JSON object -> 4xx, error shape
    auth               auth        no key, a wrong key, a malformed header -> 401
    mid_stream_error   errors      a failure after the start is a final error event

Not applicable: a valid request answered 400 or 422 in the error shape with a `param`
naming a field the request holds declares that field unsupported (n > 1, audio input
...): the case is set aside and the report lists the field; a property none of whose
cases was kept is not applicable. `auth` needs --key; `mid_stream_error` needs
--error-model, a model whose streams fail after they start (on the fake upstreams of
bench/fakes: the directive `@error_after=2`, e.g. ``fake-model@error_after=2``).

--examples is the number of cases per property and model (default 25); --seed fixes
them (default 0), so a run is reproducible; a failing case is shrunk (more requests)
unless --no-shrink. --header adds a header to every request (Portkey routes by
``x-portkey-provider`` and ``x-portkey-custom-host``). A progress line goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.conform.http import Endpoint
from bench.conform.properties import PROPERTIES, Context, Property
from bench.conform.report import as_json, as_text, write_junit
from bench.conform.runner import Result, run_property
from bench.subcommand import at_least, parser_for, write_json

__all__ = ["add_parser", "conform", "run", "select"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``conform`` on the ``python -m bench`` parser."""
    parser = parser_for(subparsers, "conform", "conformance of an endpoint", __doc__)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--key", default=None, help="bearer key (none: auth not applicable)")
    parser.add_argument("--model", action="append", required=True, help="a model (repeatable)")
    parser.add_argument("--error-model", default=None, help="a model whose streams fail")
    parser.add_argument("--examples", type=at_least(int, 1), default=25, help="cases each")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("--only", default=None, help="comma list of properties or groups")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra header"
    )
    parser.add_argument("--timeout", type=at_least(float, 0, strict=True), default=60.0)
    parser.add_argument("--no-shrink", action="store_true", help="report failures unshrunk")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def select(only: str | None) -> list[Property]:
    """The properties `--only` names (by name or group), in the standard order."""
    if not only:
        return list(PROPERTIES)
    wanted = {word.strip() for word in only.split(",") if word.strip()}
    known = {p.name for p in PROPERTIES} | {p.group for p in PROPERTIES}
    unknown = wanted - known
    if unknown:
        raise ValueError(
            f"--only: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    return [p for p in PROPERTIES if p.name in wanted or p.group in wanted]


def _headers(values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {value!r}: expected 'Name: value'")
        out.append((name.strip(), rest.strip()))
    return out


def conform(
    endpoint: Endpoint,
    models: Sequence[str],
    properties: Sequence[Property],
    *,
    examples: int = 25,
    seed: int = 0,
    error_model: str | None = None,
    shrink: bool = True,
    progress: bool = False,
) -> list[Result]:
    """Run `properties` against each of `models` on `endpoint`; the results in order."""
    results: list[Result] = []
    total = len(models) * len(properties)
    for model in models:
        ctx = Context(endpoint, model, error_model)
        for prop in properties:
            if progress:
                print(f"\r[{len(results) + 1}/{total}] {model} {prop.name} ...\033[K",
                      end="", file=sys.stderr, flush=True)  # fmt: skip
            results.append(run_property(prop, ctx, examples, seed, shrink))
    if progress:
        failed = sum(r.status == "failed" for r in results)
        print(f"\r[{total}/{total}] done: {failed} failed\033[K", file=sys.stderr, flush=True)
    return results


def run(args: argparse.Namespace) -> int:
    """``python -m bench conform``: the exit status (0 only when nothing failed)."""
    try:
        properties = select(args.only)
        headers = _headers(args.header)
    except ValueError as exc:
        print(f"python -m bench conform: {exc}", file=sys.stderr)
        return 2
    endpoint = Endpoint(args.url, args.key, headers, args.timeout)
    probe = endpoint.post(b"{}")
    if probe.status is None:  # nothing to judge: not a failure of any property
        print(f"python -m bench conform: {endpoint.url}: {probe.transport_error}", file=sys.stderr)
        endpoint.close()
        return 1
    try:
        results = conform(
            endpoint,
            args.model,
            properties,
            examples=args.examples,
            seed=args.seed,
            error_model=args.error_model,
            shrink=not args.no_shrink,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print("python -m bench conform: interrupted", file=sys.stderr)
        return 130
    finally:
        endpoint.close()
    print(as_text(results, args.url), end="")
    options = {
        "models": args.model,
        "examples": args.examples,
        "seed": args.seed,
        "only": args.only,
        "error_model": args.error_model,
    }
    write_json(args.json, as_json(results, args.url, options))
    if args.junit is not None:
        write_junit(args.junit, results, args.url)
        print(f"wrote {args.junit}")
    return 1 if any(r.status == "failed" for r in results) else 0
