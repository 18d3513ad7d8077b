"""Traces: a span per request, a child per upstream attempt, the client's traceparent
continued and passed upstream; with the SDK's in-memory exporter and over OTLP/HTTP to
a receiver the test runs."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway.app import create_app
from gateway.config import load_config
from gateway.observability.otel import OtelTracer
from gateway.observability.traces import NO_TRACER
from tests.conftest import KEY_ALL, UPSTREAM_KEY, Stack, free_port, serve_app
from tests.observability.served import serve

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
CONFIG = """
[state]
sqlite_path = "{dir}/gw.sqlite3"
[observability]
traces = true
{extra}
[providers.fake]
kind = "openai"
base_url = "{fake}"
api_key = "{upstream_key}"
[models."gpt-test"]
provider = "fake"
upstream_model = "fake-model"
[[keys]]
name = "alice"
key = "{key}"
"""


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[str, FakeOpenAI, InMemorySpanExporter]]:
    """A gateway exporting its spans to memory, in front of a fake OpenAI."""
    with run_fake_openai(api_key=UPSTREAM_KEY) as (fake, fake_url):
        path = tmp_path / "gw.toml"
        path.write_text(
            CONFIG.format(
                dir=tmp_path, extra="", fake=fake_url, upstream_key=UPSTREAM_KEY, key=KEY_ALL
            )
        )
        config = load_config(path)
        app = create_app(config)
        exporter = InMemorySpanExporter()
        app.gateway.observer.tracer = OtelTracer(config.observability, exporter, batch=False)
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            yield f"http://127.0.0.1:{port}/v1", fake, exporter


def spans_of(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The request's span and its attempts' spans. The request's span ends just after
    its last byte went out, so it may end just after the client has the answer."""
    deadline = time.monotonic() + 5
    while not any(s.kind == SpanKind.SERVER for s in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, "the request's span never ended"
        time.sleep(0.01)
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    attempts = [s for s in spans if s.kind == SpanKind.CLIENT]
    return server, attempts


def test_a_request_span_continues_the_client_trace_with_an_attempt_child(
    traced: tuple[str, FakeOpenAI, InMemorySpanExporter],
) -> None:
    url, fake, exporter = traced
    client = OpenAI(base_url=url, api_key=KEY_ALL, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-test", messages=HELLO, extra_headers={"traceparent": TRACEPARENT}
    )
    spans = spans_of(exporter)
    print("SPANS", [dict(a.attributes or {}) for a in spans[1]])
    server, (attempt,) = spans
    assert server.context is not None and attempt.context is not None
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # the client's trace, continued
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert server.name == "chat gpt-test" and attempt.name == "chat fake-model"
    a = dict(server.attributes or {})
    assert completion.usage is not None
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-test"
    assert a["gen_ai.response.model"] == "fake-model"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert a["gen_ai.request.stream"] is False
    assert a["http.response.status_code"] == 200 and a["http.request.method"] == "POST"
    request_id = a["gateway.request_id"]
    assert isinstance(request_id, str) and request_id.startswith("req_")
    b = dict(attempt.attributes or {})
    assert b["gateway.deployment"] == "fake" and b["gateway.outcome"] == "ok"
    assert b["http.response.status_code"] == 200
    # The upstream heard the attempt's own traceparent, in the same trace.
    sent = fake.requests[-1].headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
    assert fake.requests[-1].headers["x-request-id"] == a["gateway.request_id"]


def test_failed_attempts_and_streams_are_marked(
    traced: tuple[str, FakeOpenAI, InMemorySpanExporter],
) -> None:
    url, _, exporter = traced
    client = OpenAI(base_url=url, api_key=KEY_ALL, max_retries=0)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="fake/m@status=500", messages=HELLO)
    server, attempts = spans_of(exporter)
    # A 500 is retried (docs/routing.md): one span per attempt the response reports.
    assert len(attempts) == int(failed.value.response.headers["x-gateway-attempts"]) >= 1
    attempt = attempts[-1]
    assert server.status.status_code == StatusCode.ERROR
    assert dict(server.attributes or {})["error.type"] == "upstream_error"
    assert attempt.status.status_code == StatusCode.ERROR
    assert dict(attempt.attributes or {})["gateway.outcome"] == "server_error"
    exporter.clear()
    list(client.chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    server, _ = spans_of(exporter)
    a = dict(server.attributes or {})
    assert a["gen_ai.request.stream"] is True
    ttft = a["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float) and 0 < ttft < 10
    assert server.context is not None and f"{server.context.trace_id:032x}" != TRACE_ID


def test_probes_are_not_traced(traced: tuple[str, FakeOpenAI, InMemorySpanExporter]) -> None:
    url, _, exporter = traced
    base = url.removesuffix("/v1")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(base + path).status_code == 200
    assert exporter.get_finished_spans() == ()


def test_without_traces_the_client_traceparent_goes_upstream_as_it_came(stack: Stack) -> None:
    assert stack.config.observability.traces is False
    client = OpenAI(base_url=stack.url, api_key=KEY_ALL, max_retries=0)
    client.chat.completions.create(
        model="gpt-test", messages=HELLO, extra_headers={"traceparent": TRACEPARENT}
    )
    assert stack.fake.requests[-1].headers["traceparent"] == TRACEPARENT
    client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert "traceparent" not in stack.fake.requests[-1].headers


def test_no_tracer_is_the_default() -> None:
    from gateway.config import ObservabilityConfig
    from gateway.state import make_tracer

    assert make_tracer(ObservabilityConfig()) is NO_TRACER


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_http_receiver(tmp_path: Path) -> None:
    bodies: list[bytes] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        port = receiver.server_address[1]
        extra = f'otlp_endpoint = "http://127.0.0.1:{port}/v1/traces"\nservice_name = "gw-test"'
        with run_fake_openai(api_key=UPSTREAM_KEY) as (_, fake_url):
            text = CONFIG.format(
                dir=tmp_path, extra=extra, fake=fake_url, upstream_key=UPSTREAM_KEY, key=KEY_ALL
            )
            with serve(tmp_path, text) as gw:
                client = OpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0)
                client.chat.completions.create(
                    model="gpt-test", messages=HELLO, extra_headers={"traceparent": TRACEPARENT}
                )
                assert gw.stop() == 0  # the shutdown exports what is left
    finally:
        receiver.shutdown()
        receiver.server_close()
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            assert service["service.name"] == "gw-test"
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    names = sorted(s.name for s in spans)
    assert names == ["chat fake-model", "chat gpt-test"], names
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    server = next(s for s in spans if s.name == "chat gpt-test")
    attributes = {kv.key for kv in server.attributes}
    assert {"gen_ai.operation.name", "gen_ai.usage.input_tokens"} <= attributes
