"""``python -m bench observe``: what observing one request costs, part by part.

    python -m bench observe [--requests N] [--rounds N]

Times `Observer.begin` + `Observer.end` of one chat request, in process, with each
part of gateway/observability/ switched on in turn: nothing (the record and the
request id alone), the metrics, the access line (JSON, to /dev/null through the same
handler `gateway serve` installs), the no-op tracer against the OpenTelemetry one
(spans batched to an exporter that drops them), and the alternative the metrics module
did not take: prometheus-client's multiprocess values updated per request (what
``--workers N`` would need). Each is the best of ``--rounds`` runs of ``--requests``
requests, in microseconds per request, beside what a served chat request costs in
all (~700 us of CPU, docs/performance.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.config import ObservabilityConfig
from gateway.errors import RateLimited
from gateway.observability import logs
from gateway.observability.metrics import DURATION_BUCKETS, TTFT_BUCKETS, Metrics
from gateway.observability.observer import Observer
from gateway.observability.traces import Tracer

SCOPE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/chat/completions",
    "client": ("127.0.0.1", 50000),
    "headers": [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer sk-bench-0123456789"),
        (b"content-length", b"120"),
        (b"user-agent", b"OpenAI/Python 1.0"),
    ],
}


def add_parser(commands: Any) -> None:
    p = commands.add_parser("observe", help="what observing one request costs, part by part")
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)


def one_request(observer: Observer) -> None:
    """What the app and the chat route do for one streamed request, as observed."""
    rec, token = observer.begin(SCOPE)
    rec.key_name = "bench"
    rec.model, rec.provider, rec.deployment = "m", "openai", "openai"
    rec.provider_kind, rec.response_model, rec.stream = "openai", "m-up", True
    attempt = observer.attempt(rec, "openai")
    attempt.headers()
    attempt.status = 200
    rec.first_byte = time.monotonic()
    attempt.end("ok")
    rec.status = 200
    rec.usage(120, 50, 0, 1700)
    observer.end(rec, token)


def best_us(run: Callable[[], None], requests: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            run()
        best = min(best, time.perf_counter() - start)
    return best / requests * 1e6


def otel_tracer() -> Tracer:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gateway.observability.otel import OtelTracer

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return OtelTracer(ObservabilityConfig(traces=True), Drop())


def prometheus_multiprocess(requests: int, rounds: int) -> float:
    """The same dozen updates per request on prometheus-client's mmap values."""
    with tempfile.TemporaryDirectory() as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram, values

            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            r = CollectorRegistry()
            requests_c = Counter("r", "", ["model", "provider", "status"], registry=r)
            pair = ["model", "provider"]
            duration = Histogram("d", "", pair, buckets=DURATION_BUCKETS, registry=r)
            ttft = Histogram("t", "", pair, buckets=TTFT_BUCKETS, registry=r)
            tokens = Counter("k", "", ["model", "provider", "type"], registry=r)
            cost = Counter("c", "", ["model"], registry=r)
            attempts = Counter("a", "", ["deployment", "outcome"], registry=r)

            def update() -> None:
                requests_c.labels("m", "openai", "200").inc()
                duration.labels("m", "openai").observe(0.2)
                ttft.labels("m", "openai").observe(0.05)
                tokens.labels("m", "openai", "input").inc(120)
                tokens.labels("m", "openai", "output").inc(50)
                cost.labels("m").inc(0.0017)
                attempts.labels("openai", "ok").inc()

            return best_us(update, requests, rounds)
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def run(args: argparse.Namespace) -> int:
    n, rounds = args.requests, args.rounds
    null = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)
    logs.configure("json", "info", null)
    bare = ObservabilityConfig(access_log=False, metrics=False)
    with_log = ObservabilityConfig(metrics=False)
    cases: list[tuple[str, Observer]] = [
        ("record and request id only", Observer(bare)),
        ("+ metrics", Observer(bare, metrics=Metrics(["m"]))),
        ("+ access line (JSON)", Observer(with_log)),
        ("all on, no-op tracer (the default)", Observer(with_log, metrics=Metrics(["m"]))),
    ]
    try:
        cases.append(
            (
                "all on, OpenTelemetry tracer",
                Observer(with_log, metrics=Metrics(["m"]), tracer=otel_tracer()),
            )
        )
    except ImportError:
        print("(the otel extra is not installed: no OpenTelemetry row)")
    print(f"{'per request':<44} {'us':>8}")
    for name, observer in cases:
        us = best_us(lambda o=observer: one_request(o), n, rounds)  # type: ignore[misc]
        print(f"{name:<44} {us:8.2f}")
    # A request that failed: one more dict path (errors, rate limited).
    failing = Observer(bare, metrics=Metrics(["m"]))

    def refused() -> None:
        rec, token = failing.begin(SCOPE)
        rec.model, rec.provider = "m", "openai"
        rec.fail(RateLimited("x", limits=("rpm",)))
        rec.status = 429
        failing.end(rec, token)

    print(f"{'+ metrics, a refused request (429)':<44} {best_us(refused, n, rounds):8.2f}")
    us = prometheus_multiprocess(n, rounds)
    print(f"{'prometheus-client multiprocess, same updates':<44} {us:8.2f}")
    logging.getLogger().handlers.clear()
    null.close()
    return 0
