"""The load-test harness: figures on known data, and short runs against real loopback servers."""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import trio

from bench.fakes.openai import FakeOpenAI
from bench.fakes.server import Reply, Request, serve_http
from bench.fakes.threaded import run_fake_openai
from bench.load import add_parser, run
from bench.loadgen.client import Target
from bench.loadgen.metrics import (
    Distribution,
    RequestRecord,
    RunCounters,
    bucket_width,
    percentile,
    summarize,
    timeline,
)
from bench.loadgen.report import SCHEMA, format_progress, format_report
from bench.loadgen.runner import LoadConfig, LoadResult, Progress, run_load
from bench.loadgen.workload import PREFIX_TOKENS, Workload, synthetic_prompt
from gateway.tokens.count import count_text_tokens

KEY = "sk-fake-upstream"
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    with run_fake_openai(api_key=KEY) as running:
        yield running


def config(url: str, model: str = "fake-model", **overrides: Any) -> LoadConfig:
    options: dict[str, Any] = {"api_key": KEY, "requests": 8, "concurrency": 2}
    options.update(overrides)
    if "rate" in overrides:
        options.pop("concurrency")
    if "duration_s" in overrides:
        options.pop("requests")
    return LoadConfig(url=url, model=model, **options)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["load", *argv])


def record(
    scheduled: float, end: float, *, error: str | None = None, status: int = 200, **kw: Any
) -> RequestRecord:
    return RequestRecord(
        scheduled=scheduled,
        start=kw.pop("start", scheduled),
        end=end,
        status=status,
        error=error,
        **kw,
    )


# -- metrics on known data -------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    hundred = [float(i) for i in range(1, 101)]
    assert [percentile(hundred, q) for q in (0, 1, 50, 90, 99, 100)] == [1, 1, 50, 90, 99, 100]
    thousand = [float(i) for i in range(1, 1001)]
    assert percentile(thousand, 99.9) == 999
    assert percentile(thousand, 99.95) == 1000
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0  # an observed value, not 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution_of_values() -> None:
    dist = Distribution.of([0.3, 0.1, 0.2, 0.4])
    assert dist is not None
    assert (dist.count, dist.p50, dist.p90, dist.p99, dist.max) == (4, 0.2, 0.4, 0.4, 0.4)
    assert dist.mean == pytest.approx(0.25)
    assert Distribution.of([]) is None


def test_summarize_counts_outcomes_rates_and_tokens() -> None:
    records = [
        record(0.0, 0.1, first_token=0.05, output_tokens=10, tokens_from_usage=True, chunks=3),
        record(0.5, 0.7, first_token=0.6, output_tokens=10, tokens_from_usage=True, chunks=3),
        record(1.0, 1.3, first_token=1.1, output_tokens=20, tokens_from_usage=True, chunks=3),
        record(1.0, 1.1, error="status", status=429),
        record(1.5, 1.6, error="status", status=429),
        record(1.5, 2.0, error="reset", status=0),
    ]
    counters = RunCounters(connections=3, retries=1, cpu_s=0.012)
    s = summarize(records, [0.01, 0.02, 0.03], counters, mode="closed", elapsed_s=1.5)
    assert (s.requests, s.ok, s.failed) == (6, 3, 3)
    assert s.errors_by_status == {429: 2}
    assert s.errors_by_kind == {"reset": 1}
    assert s.duration_s == 2.0  # the last end is later than elapsed_s
    assert s.throughput_rps == pytest.approx(1.5)
    assert s.completed_rps == pytest.approx(3.0)
    assert s.latency is not None and s.latency.max == pytest.approx(0.3)
    assert s.latency.p50 == pytest.approx(0.2)
    assert s.ttft is not None and (s.ttft.p50, s.ttft.max) == pytest.approx((0.1, 0.1))
    assert s.itl is not None and s.itl.mean == pytest.approx(0.02)
    assert (s.output_tokens, s.tokens_source) == (40, "usage")
    assert s.output_tokens_per_s == pytest.approx(20.0)
    assert s.client_cpu_per_request_s == pytest.approx(0.002)
    assert s.offered_rps is None and s.achieved_rps is None and s.send_lag is None
    assert s.to_dict()["errors_by_status"] == {"429": 2}


def test_summarize_open_loop_rates_and_lag() -> None:
    # 10 req/s offered; four sent on time, the fifth 0.05 s late.
    records = [record(i / 10, i / 10 + 0.01, start=i / 10) for i in range(4)]
    records.append(record(0.4, 0.5, start=0.45))
    s = summarize(records, [], RunCounters(dropped=2), mode="open", offered_rps=10.0)
    assert s.offered_rps == 10.0
    assert s.achieved_rps == pytest.approx(5 / 0.55)
    assert s.send_lag is not None and s.send_lag.max == pytest.approx(0.05)
    assert s.latency is not None and s.latency.max == pytest.approx(0.1)  # from scheduled
    assert s.dropped == 2
    assert s.tokens_source == "none"


def test_timeline_buckets_answers_by_end_time() -> None:
    records = [
        record(0.0, 0.05, output_tokens=4),
        record(0.0, 0.15, output_tokens=6),
        record(0.0, 0.12, error="timeout"),
        record(0.2, 0.35),
    ]
    buckets = timeline(records, 0.1)
    assert [(b.ok, b.failed) for b in buckets] == [(1, 0), (1, 1), (0, 0), (1, 0)]
    assert buckets[1].latency_p50 == pytest.approx(0.15)
    assert buckets[2].latency_p50 is None
    assert buckets[1].output_tokens == 6
    assert buckets[1].ok_rps == pytest.approx(10.0)
    assert bucket_width(5.0) == 0.1
    assert bucket_width(60.0) == 0.5
    assert bucket_width(3600.0) == 30.0


# -- requests and targets ------------------------------------------------------------


def test_synthetic_prompt_is_about_the_asked_tokens_and_unique() -> None:
    for tokens in (0, 5, 64, 1000):
        prompt = synthetic_prompt(tokens, 42)
        assert count_text_tokens(prompt) == max(tokens, PREFIX_TOKENS)  # the gateway's count
        assert prompt == synthetic_prompt(tokens, 42)
    assert synthetic_prompt(64, 1) != synthetic_prompt(64, 2)


def test_workload_bodies() -> None:
    work = Workload(
        host="h:1",
        path="/v1/chat/completions",
        model="m",
        stream=True,
        prompt_tokens=16,
        max_tokens=7,
        api_key="k",
        extra_body={"temperature": 0, "messages": "ignored"},
    )
    first, second = work.body(1), work.body(123_456_789)
    assert len(first) == len(second)
    body = orjson.loads(second)
    assert body["model"] == "m" and body["max_tokens"] == 7 and body["temperature"] == 0
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": synthetic_prompt(16, 23_456_789)}]
    headers = dict(work.head.headers)
    assert headers[b"content-length"] == str(len(first)).encode()
    assert headers[b"authorization"] == b"Bearer k"
    assert "stream" not in orjson.loads(
        Workload(host="h", path="/", model="m", stream=False, prompt_tokens=1, max_tokens=1).body(0)
    )


def test_target_from_base_url() -> None:
    target = Target.from_base_url("http://127.0.0.1:8080/v1/")
    assert (target.host, target.port, target.path) == ("127.0.0.1", 8080, "/v1/chat/completions")
    assert target.host_header == "127.0.0.1:8080"
    ipv6 = Target.from_base_url("https://[::1]/api")
    assert (ipv6.port, ipv6.host_header, ipv6.url) == (
        443,
        "[::1]",
        "https://[::1]/api/chat/completions",
    )
    for bad in (
        "ftp://h/v1",
        "http:///v1",
        "http://u:p@h/v1",
        "http://h:99999/v1",
        "http://h/v1?x",
    ):
        with pytest.raises(ValueError):
            Target.from_base_url(bad)


def test_config_requires_one_shape_and_one_stop() -> None:
    with pytest.raises(ValueError, match="exactly one of concurrency"):
        LoadConfig(url="http://h/v1", model="m", concurrency=1, rate=1.0, requests=1)
    with pytest.raises(ValueError, match="exactly one of duration"):
        LoadConfig(url="http://h/v1", model="m", concurrency=1)


# -- closed loop against the fake upstream ---------------------------------------------


async def test_closed_loop_non_stream(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    before = server.request_count
    result = await run_load(config(url, requests=40, concurrency=4, prompt_tokens=32))
    s = result.summary
    assert (s.requests, s.ok, s.failed) == (40, 40, 0)
    assert server.request_count - before == 40
    assert s.connections == 4  # one keep-alive connection per worker
    assert (s.output_tokens, s.tokens_source) == (40 * 5, "usage")
    assert s.latency is not None and 0 < s.latency.p50 <= s.latency.max < 5
    assert s.ttft is None and s.itl is None
    body = server.requests[-1].body
    assert body["max_tokens"] == 128 and "stream" not in body
    assert count_text_tokens(body["messages"][0]["content"]) == 32
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_closed_loop_stream(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    result = await run_load(
        config(url, "fake-model@chunks=7", stream=True, requests=12, concurrency=3)
    )
    s = result.summary
    assert (s.ok, s.failed) == (12, 0)
    assert all(
        r.chunks == 7 and r.output_tokens == 7 and r.tokens_from_usage for r in result.records
    )
    assert s.ttft is not None and s.ttft.count == 12
    assert s.itl is not None and s.itl.count == 12 * 6
    body = server.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_duration_bounds_a_closed_loop(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    start = trio.current_time()
    result = await run_load(config(url, duration_s=0.3, concurrency=2))
    assert 0.3 <= trio.current_time() - start < 2
    assert result.summary.ok > 2
    assert all(r.start < 0.3 for r in result.records)


async def test_errors_are_counted_by_status(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    result = await run_load(config(url, "fake-model@status=429&retry_after=1", requests=10))
    s = result.summary
    assert (s.ok, s.failed, s.errors_by_status, s.errors_by_kind) == (0, 10, {429: 10}, {})
    assert s.latency is None
    assert s.connections == 2  # error answers keep the connection alive
    assert s.error_examples["status 429"].startswith("Rate limit reached for fake-model")
    assert "status 429: 10" in format_report(result)


async def test_some_failures_among_successes(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake  # the fake fails exactly every 4th request at fail_rate=0.25
    result = await run_load(config(url, "fake-model@fail_rate=0.25", requests=20, concurrency=4))
    s = result.summary
    assert (s.ok, s.errors_by_status) == (15, {500: 5})
    assert s.connections == 4


@pytest.mark.parametrize(
    ("model", "stream", "kind", "detail"),
    [
        ("fake-model@reset_after=0", False, "reset", ""),
        ("fake-model@reset_after=3", True, "reset", ""),
        ("fake-model@error_after=2&error_message=overloaded", True, "stream_error", "overloaded"),
        ("fake-model@hang", False, "timeout", "within 0.3 s"),
    ],
)
async def test_transport_and_stream_errors_by_kind(
    fake: tuple[FakeOpenAI, str], model: str, stream: bool, kind: str, detail: str
) -> None:
    _, url = fake
    result = await run_load(config(url, model, stream=stream, requests=2, timeout_s=0.3))
    assert result.summary.errors_by_kind == {kind: 2}
    assert result.summary.ok == 0
    assert detail in result.summary.error_examples[kind]


async def test_refused_connections_are_counted() -> None:
    with trio.socket.socket() as sock:  # a port that was free a moment ago
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_load(config(f"http://127.0.0.1:{port}/v1", requests=3, concurrency=1))
    assert result.summary.errors_by_kind == {"connect": 3}
    assert "refused" in result.summary.error_examples["connect"].lower()
    assert result.summary.connections == 0


async def test_stale_keep_alive_connection_is_resent_once() -> None:
    async def answer(request: Request, reply: Reply) -> None:
        await reply.send(200, [("content-type", "application/json")], COMPLETION)

    async with trio.open_nursery() as nursery:
        # The server drops a keep-alive connection after 50 ms without a request.
        port = await nursery.start(partial(serve_http, answer, "127.0.0.1", 0, idle_timeout_s=0.05))
        result = await run_load(config(f"http://127.0.0.1:{port}/v1", rate=5.0, requests=3))
        nursery.cancel_scope.cancel()
    s = result.summary
    assert (s.ok, s.retries, s.connections) == (3, 2, 3)


# -- open loop ----------------------------------------------------------------------------


async def test_open_loop_latency_includes_queueing() -> None:
    """A server that serves one request at a time (50/s) offered 100/s: latency grows."""
    service_s = 0.02
    lock = trio.Lock()

    async def serial(request: Request, reply: Reply) -> None:
        async with lock:
            await trio.sleep(service_s)
        await reply.send(200, [("content-type", "application/json")], COMPLETION)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, serial, "127.0.0.1", 0))
        result = await run_load(config(f"http://127.0.0.1:{port}/v1", rate=100.0, requests=40))
        nursery.cancel_scope.cancel()
    s = result.summary
    assert (s.ok, s.dropped) == (40, 0)
    assert s.send_lag is not None and s.send_lag.p99 < 0.05  # the generator kept its schedule
    assert s.achieved_rps is not None and 80 <= s.achieved_rps <= 101
    latencies = [r.latency for r in sorted(result.records, key=lambda r: r.scheduled)]
    first, last = latencies[:10], latencies[-10:]
    # 40 requests need 0.8 s of service but arrive over 0.4 s: the last wait ~0.4 s.
    assert sum(first) / 10 < 0.15
    assert sum(last) / 10 > 0.25
    assert s.latency is not None and s.latency.max > 0.3


async def test_open_loop_drops_arrivals_over_max_inflight(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    before = server.request_count
    result = await run_load(
        config(url, "fake-model@latency_ms=400", rate=200.0, requests=40, max_inflight=5)
    )
    s = result.summary
    assert (s.requests, s.ok, s.dropped) == (5, 5, 35)
    assert server.request_count - before == 5
    assert "dropped 35" in format_report(result)


async def test_open_loop_duration(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    result = await run_load(config(url, rate=50.0, duration_s=0.2))
    assert result.summary.requests == 10  # due at 0, 0.02, ... 0.18
    assert max(r.scheduled for r in result.records) == pytest.approx(0.18)


# -- stream timing -------------------------------------------------------------------------


async def test_ttft_and_itl_of_paced_streams(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    model = "fake-model@ttft_ms=100&chunk_interval_ms=20"
    result = await run_load(config(url, model, stream=True, requests=4, concurrency=2))
    s = result.summary
    assert s.ok == 4
    assert s.ttft is not None and 0.1 <= s.ttft.p50 <= s.ttft.max < 0.4
    assert s.itl is not None and s.itl.count == 4 * 4  # 5 content chunks: 4 gaps each
    assert 0.015 <= s.itl.mean <= 0.05
    assert s.itl.p99 < 0.1
    assert s.latency is not None and s.latency.p50 >= 0.1 + 4 * 0.015
    assert s.output_tokens == 20


# -- command line ----------------------------------------------------------------------------

_SCHEMA = {
    "type": "object",
    "required": ["schema", "config", "interrupted", "summary", "timeline", "requests"],
    "properties": {
        "schema": {"const": SCHEMA},
        "interrupted": {"type": "boolean"},
        "summary": {
            "type": "object",
            "required": [
                "mode",
                "duration_s",
                "requests",
                "ok",
                "failed",
                "dropped",
                "errors_by_status",
                "errors_by_kind",
                "throughput_rps",
                "latency_s",
                "ttft_s",
                "itl_s",
                "output_tokens",
                "output_tokens_per_s",
                "offered_rps",
                "achieved_rps",
                "client_cpu_per_request_s",
            ],
            "properties": {
                "latency_s": {
                    "type": "object",
                    "required": ["count", "mean", "p50", "p90", "p99", "max"],
                    "additionalProperties": {"type": "number"},
                },
                "errors_by_status": {"additionalProperties": {"type": "integer"}},
            },
        },
        "timeline": {
            "type": "array",
            "items": {"type": "object", "required": ["start_s", "width_s", "ok", "failed"]},
        },
        "requests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["scheduled_s", "start_s", "ttft_s", "end_s", "status", "tokens"],
                "properties": {
                    "scheduled_s": {"type": "number"},
                    "start_s": {"type": "number"},
                    "ttft_s": {"type": ["number", "null"]},
                    "end_s": {"type": "number"},
                    "status": {"type": "integer"},
                    "error": {"type": ["string", "null"]},
                    "tokens": {"type": ["integer", "null"]},
                },
            },
        },
    },
}


def test_cli_writes_the_json_document(
    fake: tuple[FakeOpenAI, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    out = tmp_path / "run.json"
    args = parse(
        "--url",
        url,
        "--model",
        "fake-model",
        "--key",
        KEY,
        "--stream",
        "--requests",
        "6",
        "--concurrency",
        "2",
        "--json",
        str(out),
    )
    assert run(args) == 0
    document = orjson.loads(out.read_bytes())
    jsonschema.validate(document, _SCHEMA)
    assert len(document["requests"]) == 6
    assert document["summary"]["ok"] == 6
    assert document["config"]["stream"] is True
    assert all(r["ttft_s"] > 0 and r["tokens"] == 5 for r in document["requests"])
    printed = capsys.readouterr()
    assert "throughput" in printed.out and "ttft" in printed.out
    assert printed.err == ""  # not a terminal: no progress line


def test_cli_plot(fake: tuple[FakeOpenAI, str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _, url = fake
    out = tmp_path / "run.png"
    args = parse(
        "--url",
        url,
        "--model",
        "fake-model",
        "--key",
        KEY,
        "--rate",
        "100",
        "--requests",
        "20",
        "--plot",
        str(out),
    )
    assert run(args) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_plot_without_matplotlib_exits_2_before_the_run(
    fake: tuple[FakeOpenAI, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, url = fake
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    before = server.request_count
    args = parse("--url", url, "--model", "m", "--requests", "1", "--plot", "x.png")
    assert run(args) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert server.request_count == before


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--url", "ftp://h/v1", "--model", "m")) == 2
    assert "http://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--url", "http://h/v1", "--model", "m", "--rate", "5", "--concurrency", "2")
    capsys.readouterr()
    with socket.socket() as sock:  # nothing listens: every request fails
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert (
        run(parse("--url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--requests", "2")) == 1
    )
    assert "connect: 2" in capsys.readouterr().out


def test_progress_line_on_a_terminal(
    fake: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _, url = fake
    args = parse(
        "--url",
        url,
        "--model",
        "fake-model",
        "--key",
        KEY,
        "--duration",
        "1.1",
        "--concurrency",
        "1",
    )
    assert run(args) == 0
    shown = terminal.getvalue()
    assert shown.count("\r") >= 3  # two updates and the final clear
    assert "req/s" in shown and shown.endswith("\r\x1b[K")


def test_format_progress() -> None:
    view = Progress(
        elapsed_s=2.0,
        sent=1200,
        ok=1190,
        failed=3,
        inflight=7,
        dropped=2,
        window_rps=600.0,
        window_p50_s=0.0123,
    )
    line = format_progress(view)
    assert "sent 1,200" in line and "failed 3" in line and "dropped 2" in line
    assert "600 req/s" in line and "p50 12.3 ms" in line


def test_ctrl_c_prints_the_partial_report(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    before = server.request_count
    script = textwrap.dedent(
        """
        import argparse, sys
        from bench.load import add_parser, run
        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers(dest="command"))
        sys.exit(run(parser.parse_args(sys.argv[1:])))
        """
    )
    argv = [
        "load",
        "--url",
        url,
        "--model",
        "fake-model@latency_ms=5",
        "--key",
        KEY,
        "--duration",
        "30",
        "--concurrency",
        "2",
    ]
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(repo)},
    ) as process:
        try:
            assert server.wait_for_requests(before + 10, timeout_s=10)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 130, err
    text = out.decode()
    assert "interrupted" in text and "latency" in text
    sent = re.search(r"requests +([\d,]+) sent in [\d.]+ s: ([\d,]+) ok", text)
    assert sent is not None and int(sent[2].replace(",", "")) >= 5, text


def _result_of(records: list[RequestRecord]) -> LoadResult:
    """A LoadResult for format tests, without a run."""
    from array import array

    cfg = LoadConfig(url="http://h/v1", model="m", concurrency=1, requests=len(records))
    summary = summarize(records, [], RunCounters(cpu_s=10.0), mode="closed")
    return LoadResult(cfg, Target.from_base_url(cfg.url), summary, records, array("d"), False)


def test_report_warns_when_the_harness_is_saturated() -> None:
    report = format_report(_result_of([record(0.0, 1.0)]))
    assert "warning" in report and "CPU core" in report


def test_shed_answers_have_their_own_latency_line() -> None:
    """An overloaded server's 503s are fast on purpose: kept apart from the latency of
    the answered requests, and shown on their own."""
    records = [
        record(0.0, 0.2),
        record(0.0, 0.4),
        record(0.0, 0.01, error="status", status=503),
        record(0.0, 0.03, error="status", status=503),
        record(0.0, 0.5, error="status", status=500),
    ]
    result = _result_of(records)
    s = result.summary
    assert s.latency is not None and s.latency.count == 2
    assert s.shed_latency is not None and s.shed_latency.count == 2
    assert s.shed_latency.p50 == pytest.approx(0.01) and s.to_dict()["shed_latency_s"]["count"] == 2
    assert "503 latency p50 10.0 ms" in format_report(result)
    assert "503 latency" not in format_report(_result_of([record(0.0, 0.2)]))
