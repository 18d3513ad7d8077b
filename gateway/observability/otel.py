"""The OpenTelemetry tracer (`[observability] traces = true`; the `otel` extra).

One SERVER span per request, named `chat {model}` on the chat route (`{METHOD} {path}`
elsewhere), and one CLIENT child span per upstream attempt, `chat {upstream model}`,
with the GenAI semantic conventions' attributes (`gen_ai.operation.name`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.provider.name`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
`gen_ai.usage.cache_read.input_tokens`, `gen_ai.request.stream`, `error.type`) and
the HTTP ones (`http.request.method`, `url.path`, `http.response.status_code`,
`client.address`). Never a prompt, a completion or a key (docs/reliability.md R22).

A client's W3C `traceparent` becomes the request span's parent (its sampling decision
is kept); each attempt sends its own `traceparent` upstream. Spans leave through a
`BatchSpanProcessor` (the SDK's own export thread, off the event loop) to OTLP/HTTP;
`shutdown()` at the end of the worker's life exports what is left. The tracer
provider is ours, not the process-global one.

Only imported when traces are on: without the extra nothing here is loaded.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.config import ObservabilityConfig
from gateway.observability.record import RequestRecord

CHAT_PATH: Final = "/v1/chat/completions"
# gen_ai.provider.name's well-known values where a kind's name is not one.
PROVIDER_NAMES: Final = {"gemini": "gcp.gemini"}
_PROPAGATOR: Final = TraceContextTextMapPropagator()


def _provider_name(request: RequestRecord) -> str:
    return PROVIDER_NAMES.get(request.provider_kind, request.provider_kind)


def _span_name(request: RequestRecord) -> str:
    if request.path == CHAT_PATH and request.model:
        return f"chat {request.model}"
    return f"{request.method} {request.path}"


class _AttemptSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier.get("traceparent")

    def end(self, status: int, outcome: str, error_code: str | None) -> None:
        span = self._span
        if status:
            span.set_attribute("http.response.status_code", status)
        span.set_attribute("gateway.outcome", outcome)
        if outcome != "ok":
            span.set_attribute("error.type", error_code or outcome)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class _RequestSpan:
    __slots__ = ("_span", "_tracer")

    def __init__(self, tracer: OtelTracer, span: Span) -> None:
        self._tracer = tracer
        self._span = span

    def attempt(self, request: RequestRecord, deployment: str) -> _AttemptSpan:
        model = request.response_model or request.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.provider.name": _provider_name(request),
            "gateway.deployment": deployment,
            "gateway.attempt": request.attempts,
        }
        span = self._tracer.tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(self._span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return _AttemptSpan(span)

    def end(self, request: RequestRecord) -> None:
        span = self._span
        span.update_name(_span_name(request))
        attributes: dict[str, Any] = {
            "http.response.status_code": request.status,
            "gateway.request_id": request.request_id,
            "gateway.attempts": request.attempts,
        }
        if request.key_id:
            attributes["gateway.key_id"] = request.key_id
        if request.model:
            attributes.update(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": request.model,
                    "gen_ai.response.model": request.response_model or request.model,
                    "gen_ai.provider.name": _provider_name(request),
                    "gen_ai.request.stream": request.stream,
                    "gen_ai.usage.input_tokens": request.prompt_tokens,
                    "gen_ai.usage.output_tokens": request.completion_tokens,
                    "gen_ai.usage.cache_read.input_tokens": request.cached_tokens,
                    "gateway.deployment": request.deployment,
                    "gateway.cost_usd": request.cost_micros / 1e6,
                }
            )
            if request.completion_id:  # the ledger's row key (not always the body's `id`)
                attributes["gateway.completion_id"] = request.completion_id
            if request.first_byte is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = (
                    request.first_byte - request.started
                )
        span.set_attributes(attributes)
        if request.error_code is not None or request.status >= 500:
            span.set_attribute("error.type", request.error_code or str(request.status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class OtelTracer:
    """`traces.Tracer` on the OpenTelemetry SDK, exporting OTLP/HTTP (or to `exporter`)."""

    def __init__(
        self,
        config: ObservabilityConfig,
        exporter: SpanExporter | None = None,
        *,
        batch: bool = True,
    ) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
        resource = Resource.create(
            {"service.name": config.service_name, "service.version": __version__}
        )
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(config.trace_sample_ratio))
        )
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("gateway", __version__)

    def start(self, request: RequestRecord) -> _RequestSpan:
        parent: Context | None = None
        if request.traceparent is not None:
            carrier = {"traceparent": request.traceparent.decode("latin-1")}
            parent = _PROPAGATOR.extract(carrier)
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "gateway.request_id": request.request_id,
        }
        if request.client:
            attributes["client.address"] = request.client
        span = self.tracer.start_span(
            f"{request.method} {request.path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=int(request.wall_start * 1e9),
        )
        return _RequestSpan(self, span)

    def shutdown(self) -> None:
        self.provider.shutdown()
