"""The provider interface: what every upstream kind implements, purely.

A provider turns a validated OpenAI request body into an upstream request
(`build_request`), an upstream body into an OpenAI `chat.completion`
(`parse_response`), upstream stream bytes into OpenAI chunk events (a
`StreamTranslator`, whose contract with the relay is documented on it), and an
upstream error response into a `GatewayError` (`map_error`). None of these do I/O:
`relay.py` owns the sockets, and feeds the provider bytes it received.

Per-vendor differences live here as methods, never as `if kind == ...` branches in
the relay or the routes.

Pure module: no trio, httpx or quart imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from gateway.config import FREE, OpenAIOptions, Price, ProviderKind, ProviderOptions
from gateway.errors import GatewayError

JSON = dict[str, Any]
OptionsT = TypeVar("OptionsT", bound=ProviderOptions)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model id resolved to one upstream: where to send it and how it behaves.

    `options` is the provider kind's typed options (config/options.py), the model's
    settings already merged over its provider's.
    """

    model_id: str  # the id the client asked for
    provider_name: str  # the [providers.NAME] table it routes to
    kind: ProviderKind
    upstream_model: str  # the model name sent upstream
    base_url: str = ""
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra upstream headers
    options: ProviderOptions = field(default_factory=OpenAIOptions)
    max_output_tokens: int | None = None  # the upstream model's output cap, if known
    price: Price = FREE  # what its tokens cost

    def options_of(self, cls: type[OptionsT]) -> OptionsT:
        """The options as the kind's class; a mismatch is a bug (the router pairs them)."""
        if not isinstance(self.options, cls):
            raise TypeError(f"{self.model_id}: expected {cls.__name__}, got {self.options!r}")
        return self.options


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a deployment's wire format lets a request carry through the gateway (the
    console's Models page shows it). The upstream model itself may still refuse a part
    (a text-only model, an image); `json_schema` says how `response_format:
    json_schema` reaches it: "native" (the upstream enforces the schema) or "emulated"
    (a forced tool call, or the mock's generated instance)."""

    streaming: bool = True
    tools: bool = True
    vision: bool = True
    audio: bool = True
    files: bool = True
    json_schema: str = "native"


@dataclass(frozen=True, slots=True)
class Media:
    """The bytes behind an http(s) URL in a content part, fetched by the gateway."""

    mime_type: str  # from the response's Content-Type, e.g. "image/png"
    data: bytes


@dataclass(slots=True)
class CallContext:
    """What the translators need to know about one client request."""

    deployment: Deployment
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (stream_options)
    request_id: str  # gateway-owned id, e.g. "chatcmpl-..."
    created: int  # unix seconds
    # URL -> fetched bytes, for every URL the provider's `media_urls` asked for.
    media: Mapping[str, Media] = field(default_factory=dict)
    # The client's response_format type ("json_schema", "json_object") or None, so a
    # translator that emulates structured output knows it without parsing the body again.
    response_format: str | None = None
    # The size of the client's body: above gateway.offload.OFFLOAD_BYTES, an in-process
    # provider (the mock) builds its answer in a worker thread.
    request_bytes: int = 0


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request for the relay to send; `payload` is `body` before encoding."""

    url: str
    headers: Mapping[str, str] = field(repr=False)  # holds the upstream's key
    body: bytes
    stream: bool
    payload: JSON | None = None


@dataclass(slots=True)
class Completion:
    """A translated non-streamed answer: OpenAI body bytes plus its usage, if known."""

    body: bytes
    usage: JSON | None


class StreamTranslator(Protocol):
    """Upstream stream bytes in, OpenAI chunk events out; one instance per streamed call.

    The contract with the relay (upstream/relay.py), which alone ends the client's stream:

    - `feed(data)` takes any split of the upstream body and returns the content to write
      to the client now: zero or more whole `data: {...}` chat.completion.chunk events,
      forwarded as they are. `close()` is called once, when the upstream body ended or
      `finished` became true, and returns the last content (the usage chunk, say).
      Neither ever returns `data: [DONE]` nor an error event.
    - `error` is set when the stream failed: an error the upstream reported in the
      stream, a malformed or oddly shaped event, a finish reason that means failure,
      or, from `close()`, an end before the upstream finished (`upstream_stream_truncated`).
      It never changes once set, and `feed` and `close` then return b"". Content
      returned by the call that set it came before the failure and is still written.
    - `finished` becomes true when the upstream said it is done (OpenAI's `[DONE]`,
      Anthropic's `message_stop`): the relay stops reading and calls `close()`.
      Upstreams with no end marker (Gemini) leave it false and end at EOF.
    - `usage` is the last usage the upstream reported, in OpenAI's shape, or None. The
      usage chunk (`choices: []`) is content only when the client asked for it
      (`CallContext.include_usage`).
    - `events` counts the data events in the content returned so far: billing's
      estimate of streamed tokens when the upstream reports no usage.

    With nothing written yet, the relay raises `error` (the client gets a real HTTP
    status); otherwise it settles the request, then writes `[DONE]` or the error event.
    """

    @property
    def usage(self) -> JSON | None: ...

    @property
    def error(self) -> GatewayError | None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def events(self) -> int: ...

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Provider(Protocol):
    """A provider kind. Stateless: one instance serves every deployment of its kind."""

    kind: str

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        """The http(s) URLs in content parts whose bytes the upstream needs inlined.

        The routes fetch them safely (gateway/upstream/media_fetch.py) into `ctx.media` before
        `build_request` runs. Most upstreams take URLs themselves: return [].
        """
        ...

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        """Translate a validated OpenAI request body for the upstream.

        Must not mutate `body`. Raises `InvalidRequest` naming the field for what the
        upstream cannot express.
        """
        ...

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        """Translate a 2xx non-streamed upstream body into an OpenAI chat.completion."""
        ...

    def new_stream_translator(self, ctx: CallContext) -> StreamTranslator:
        """A fresh translator for one streamed response."""
        ...

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """Map a non-2xx upstream response to the gateway's error tree."""
        ...

    def capabilities(self, deployment: Deployment) -> Capabilities:
        """What this kind carries for `deployment` (its options may change it)."""
        ...


@runtime_checkable
class NativeResponses(Protocol):
    """A provider whose upstream may serve the Responses API itself (OpenAI).

    The Responses route sends such a deployment's requests as Responses requests
    instead of bridging them through chat completions (gateway/responses/).
    """

    def speaks_responses(self, dep: Deployment) -> bool:
        """Whether this deployment's upstream serves `POST /responses`."""
        ...

    def responses_request(self, payload: JSON, ctx: CallContext) -> UpstreamRequest:
        """The upstream request for a Responses API body (already made for it)."""
        ...
