"""The provider interface: what every upstream kind implements, purely.

A provider turns a validated OpenAI request body into an upstream request
(`build_request`), an upstream body into an OpenAI `chat.completion`
(`parse_response`), upstream stream bytes into OpenAI SSE bytes (a
`StreamTranslator`), and an upstream error response into a `GatewayError`
(`map_error`). None of these do I/O: `relay.py` owns the sockets, and feeds the
provider bytes it received.

Per-vendor differences live here as methods, never as `if kind == ...` branches in
the relay or the routes.

Pure module: no trio, httpx or quart imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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
    """Upstream stream bytes in, OpenAI SSE bytes out; one instance per request.

    `feed` takes any split of the upstream body and returns the bytes to write to the
    client now (possibly empty). `close` is called once when the upstream body ended
    and returns the trailer: `data: [DONE]` normally, or an error event if the
    upstream stopped before finishing. When the upstream reports an error in the
    stream, the translator sets `error` and returns its OpenAI error event from that
    `feed`; the relay stops reading and writes no trailer. (If nothing was written to
    the client yet, the relay answers with `error`'s HTTP status instead.)
    `usage` holds the last usage the upstream reported, in OpenAI's shape.
    """

    usage: JSON | None
    error: GatewayError | None
    done: bool  # the upstream signalled the end (e.g. `[DONE]`): the relay stops reading

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Provider(Protocol):
    """A provider kind. Stateless: one instance serves every deployment of its kind."""

    kind: str

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        """The http(s) URLs in content parts whose bytes the upstream needs inlined.

        The routes fetch them safely (gateway/fetch.py) into `ctx.media` before
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
