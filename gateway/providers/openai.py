"""OpenAI and every OpenAI-compatible server: a near passthrough.

The request goes out as the client sent it, with the upstream's model name and only
the rewrites the deployment's capability flags ask for (developer role to system,
`max_tokens` <-> `max_completion_tokens`) plus `stream_options.include_usage`, so that
usage is always exact. Unknown fields pass through untouched.

Responses are normalised where OpenAI-compatible servers differ from OpenAI
(docs/wire-formats.md A9): usage-only chunks whose `choices` is null or missing, tool
calls without an `index`, `finish_reason: stop` after tool calls, in-band
`{"error": ...}` events after a 200, and error bodies that are not nested.

Streaming keeps the bytes of ordinary content chunks as they came (a cheap byte scan
proves nothing in them needs rewriting) and parses only the chunks that matter.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config import OpenAIOptions
from gateway.errors import GatewayError, UpstreamError
from gateway.openai.sse import SSEEvent
from gateway.providers.base import (
    JSON,
    CallContext,
    Capabilities,
    Completion,
    Deployment,
    UpstreamRequest,
)
from gateway.providers.common import encode_body, load_json_object, upstream_status_error
from gateway.providers.sse_translator import SSETranslator

MAX_EVENT_BYTES = 4 * 1024 * 1024  # one upstream SSE event larger than this is refused
_DATA = b"data: "
_EOE = b"\n\n"
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_STREAM_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


def normalise_request(body: JSON, ctx: CallContext) -> JSON:
    """The OpenAI body to send upstream: a shallow copy with the deployment's rewrites."""
    dep = ctx.deployment
    opts = dep.options_of(OpenAIOptions)
    out = dict(body)
    out["model"] = dep.upstream_model
    if not opts.developer_role:
        messages = body["messages"]
        if any(m.get("role") == "developer" for m in messages):
            out["messages"] = [
                {**m, "role": "system"} if m.get("role") == "developer" else m for m in messages
            ]
    field = opts.max_tokens_field
    if field is not None:
        other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
        if other in out:
            value = out.pop(other)
            if out.get(field) is None:
                out[field] = value
    if not opts.stream_usage:
        out.pop("stream_options", None)  # the upstream rejects the field altogether
    elif ctx.stream:
        options = body.get("stream_options") or {}
        if options.get("include_usage") is not True:
            out["stream_options"] = {**options, "include_usage": True}
    return out


class OpenAIProvider:
    """Provider for `kind = "openai"`: OpenAI and OpenAI-compatible servers."""

    kind = "openai"

    def capabilities(self, deployment: Deployment) -> Capabilities:
        return Capabilities()  # passed through: the upstream model decides

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        return []  # OpenAI-compatible servers take image URLs themselves

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        payload = normalise_request(body, ctx)
        headers = dict(_STREAM_HEADERS if ctx.stream else _JSON_HEADERS)
        if dep.api_key:
            headers["authorization"] = "Bearer " + dep.api_key
        headers.update(dep.headers)
        return UpstreamRequest(
            url=dep.base_url + "/chat/completions",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def speaks_responses(self, dep: Deployment) -> bool:
        return dep.options_of(OpenAIOptions).responses_api

    def responses_request(self, payload: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        headers = dict(_STREAM_HEADERS if ctx.stream else _JSON_HEADERS)
        if dep.api_key:
            headers["authorization"] = "Bearer " + dep.api_key
        headers.update(dep.headers)
        return UpstreamRequest(
            url=dep.base_url + "/responses",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        obj = load_json_object(body)
        if "error" in obj and not obj.get("choices"):
            raise _error_from_object(obj, 502)
        changed = False
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise UpstreamError("The upstream response has no choices.")
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("tool_calls"), list):
                continue
            for call in message["tool_calls"]:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), dict):
                    fn["arguments"] = orjson.dumps(fn["arguments"]).decode()  # Ollama
                    changed = True
            if message["tool_calls"] and choice.get("finish_reason") == "stop":
                choice["finish_reason"] = "tool_calls"
                changed = True
        usage = obj.get("usage")
        return Completion(
            body=orjson.dumps(obj) if changed else body,
            usage=usage if isinstance(usage, dict) else None,
        )

    def new_stream_translator(self, ctx: CallContext) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator(ctx)

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            text = body[:200].decode("utf-8", "replace").strip()
            obj = {"error": {"message": text or f"HTTP {status}"}}
        return _error_from_object(obj, status, headers)


def _error_fields(obj: JSON) -> tuple[str, str | None, str | None, str | None]:
    """message, type, code, param of `{"error": {...}}`, `{"error": "text"}` or a flat body."""
    err: Any = obj.get("error", obj)
    if isinstance(err, str):
        return err, None, None, None
    if not isinstance(err, dict):
        return "The upstream reported an error.", None, None, None
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = "The upstream reported an error."
    etype, code, param = err.get("type"), err.get("code"), err.get("param")
    return (
        message,
        etype if isinstance(etype, str) else None,
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        param if isinstance(param, str) else None,
    )


def _error_from_object(
    obj: JSON, status: int, headers: Mapping[str, str] | None = None
) -> GatewayError:
    """Map an upstream error (status plus parsed body) onto the gateway's error tree."""
    message, etype, code, param = _error_fields(obj)
    return upstream_status_error(
        status, message, error_type=etype, code=code, param=param, headers=headers
    )


def _stream_error(obj: JSON) -> GatewayError:
    """An in-band error event after a 200: mapped by its code when that is an HTTP status."""
    err = obj.get("error")
    if isinstance(err, dict):
        code = err.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            return _error_from_object(obj, code)
    message, _, code_text, _ = _error_fields(obj)
    return UpstreamError(f"The upstream reported an error mid-stream: {message}", code=code_text)


class _ToolSlots:
    """Per-choice bookkeeping that gives every streamed tool call its own index.

    Servers get this wrong in two ways (docs/wire-formats.md A9, E15): Ollama sends whole
    calls without an `index`, or with index 0 for every parallel call. A fragment
    that carries an `id` starts a call; if its index already belongs to a call with
    another id, the new call gets the next free index. Fragments without an id
    continue the call their index currently maps to.
    """

    __slots__ = ("current", "ids")

    def __init__(self) -> None:
        self.ids: list[str | None] = []  # our index -> id of the call that holds it
        self.current: dict[int, int] = {}  # upstream index -> our index

    def place(self, call: JSON) -> None:
        upstream = call.get("index")
        call_id = call.get("id")
        if not isinstance(upstream, int) or isinstance(upstream, bool):
            ours = len(self.ids)  # no usable index: every call is a new one
            self.ids.append(call_id if isinstance(call_id, str) else None)
        elif upstream in self.current:
            ours = self.current[upstream]
            held = self.ids[ours]
            if isinstance(call_id, str) and held is not None and held != call_id:
                ours = len(self.ids)  # a new call reusing a taken index
                self.ids.append(call_id)
                self.current[upstream] = ours
        else:
            ours = upstream if upstream >= len(self.ids) else len(self.ids)
            while len(self.ids) <= ours:
                self.ids.append(None)
            self.ids[ours] = call_id if isinstance(call_id, str) else None
            self.current[upstream] = ours
        call["index"] = ours
        fn = call.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), dict):
            fn["arguments"] = orjson.dumps(fn["arguments"]).decode()


class OpenAIStreamTranslator(SSETranslator):
    """OpenAI SSE in, OpenAI SSE out, with the A9 normalisations."""

    __slots__ = ("_finished_choices", "_include_usage", "_shape", "_tools", "usage")

    def __init__(self, ctx: CallContext) -> None:
        super().__init__(MAX_EVENT_BYTES)
        self._include_usage = ctx.include_usage
        self._finished_choices: set[Any] = set()  # choice indexes that reported a finish_reason
        self._tools: dict[Any, _ToolSlots] = {}  # choice index -> its tool calls
        self.usage: JSON | None = None
        # The bytes around the content string of the last ordinary delta chunk, which
        # the next ones nearly always share (`_same_shape`).
        self._shape: tuple[bytes, bytes] | None = None

    def feed(self, data: bytes) -> bytes:
        """As `SSETranslator.feed`; a read that is exactly one event of the last
        ordinary chunk's shape (`_same_shape`), as a token stream's reads nearly all
        are, goes out as the bytes that came, without the decoder's event objects
        (the translator 1.80 -> 1.09 us a chunk in a loop; `python -m bench relayloop`
        2.51 -> 1.78 us)."""
        shape = self._shape
        if shape is not None and self.error is None and not self.finished:
            payload = self._decoder.lone_data(data)
            if payload is not None and _same_shape(payload, shape):
                self.events += 1
                if not self._include_usage and b',"usage":null' in payload:
                    return _DATA + payload.replace(b',"usage":null', b"") + _EOE
                return data
        return super().feed(data)

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        payload = event.data
        if event.event is None:
            shape = self._shape
            if shape is not None and _same_shape(payload, shape):
                if not self._include_usage:
                    payload = payload.replace(b',"usage":null', b"")  # as `_forwardable`
                out.append(_DATA + payload + _EOE)
                return
            fast = _forwardable(payload, self._include_usage)
            if fast is not None:
                self._shape = _shape_of(payload)
                out.append(_DATA + fast + _EOE)
                return
        if payload == b"[DONE]":
            self.finished = True
            return
        chunk = self._rewrite(payload, event.event)
        if chunk:
            out.append(chunk)

    def _complete(self) -> bool:
        # No [DONE] (some servers omit it): whole if a choice finished.
        return bool(self._finished_choices)

    def _rewrite(self, payload: bytes, event: bytes | None) -> bytes:
        """The slow path: parse one chunk, record usage, fix what servers get wrong."""
        obj = self._object(payload)
        if obj is None:
            return b""
        if obj.get("error") or event == b"error":
            self.fail(_stream_error(obj))
            return b""
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = obj.get("choices")
        if not choices:
            # A usage-only chunk (`choices` [], null or absent); forward only on request.
            if self._include_usage and isinstance(usage, dict):
                obj["choices"] = []
                return _DATA + orjson.dumps(obj) + _EOE
            return b""
        if not isinstance(choices, list):
            raise TypeError("choices is not a list")
        if not self._include_usage:
            obj.pop("usage", None)
        for choice in choices:
            if isinstance(choice, dict):
                self._fix_choice(choice)
        return _DATA + orjson.dumps(obj) + _EOE

    def _fix_choice(self, choice: JSON) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            raise TypeError("choice index is not an integer")
        delta = choice.get("delta")
        if isinstance(delta, dict):
            calls = delta.get("tool_calls")
            if isinstance(calls, list) and calls:
                slots = self._tools.setdefault(index, _ToolSlots())
                for call in calls:
                    if isinstance(call, dict):
                        slots.place(call)
        reason = choice.get("finish_reason")
        if reason is not None:
            self._finished_choices.add(index)
            if reason == "stop" and index in self._tools:
                choice["finish_reason"] = "tool_calls"


def _forwardable(payload: bytes, include_usage: bool) -> bytes | None:
    """The bytes of an ordinary delta chunk to forward as they are, or None to parse it.

    Ordinary means: no choice finishes in it, and it has no tool calls, error or usage
    object. The needles cannot match inside JSON strings (quotes there are escaped),
    so a bytes result is exact; None merely takes the slower parsing path.
    """
    if b'"tool_calls"' in payload or b'"error"' in payload or b"\n" in payload:
        return None  # (a newline: the event came in several data lines; re-encode it)
    nulls = payload.count(b'"finish_reason":null')
    if not nulls or nulls != payload.count(b'"finish_reason"'):
        return None  # a finishing chunk, a usage-only chunk or odd spacing
    if b'"usage"' in payload:
        if include_usage:
            # "usage":null on every chunk is what OpenAI sends when usage was requested.
            return payload if b'"usage":null' in payload else None
        # We asked for usage, the client did not: drop the key it would not have seen.
        payload = payload.replace(b',"usage":null', b"")
        if b'"usage"' in payload:
            return None
    return payload


_CONTENT = b'"content":"'


def _shape_of(payload: bytes) -> tuple[bytes, bytes] | None:
    """The bytes before and after the one content string of an ordinary delta chunk
    (`_forwardable` said so), or None if it has none, several, or escapes in it.

    Within one stream every delta chunk is the same JSON but for its content (the id,
    the model, `created`, the closing fields are the stream's), so the next chunk that
    starts and ends with these bytes, with a plain string between, is ordinary too:
    checking that is two comparisons and three byte searches of the content, where
    `_forwardable` scans the whole chunk six times (docs/performance.md, "the pump").
    """
    at = payload.find(_CONTENT)
    if at < 0 or payload.find(_CONTENT, at + len(_CONTENT)) >= 0:
        return None
    start = at + len(_CONTENT)
    end = payload.find(b'"', start)
    if end < 0 or 92 in payload[start:end]:  # a backslash: `end` may be an escaped quote
        return None
    return payload[:start], payload[end:]


def _same_shape(payload: bytes, shape: tuple[bytes, bytes]) -> bool:
    """Whether `payload` is the chunk of `shape` with another plain content string: no
    quote, backslash or newline in it, so the JSON around it is the same structure and
    as ordinary. (`_forwardable`'s needles all hold quotes: around a plain string they
    can only be the content itself, a delta saying "error", which it would have sent
    the slow way to the same JSON.)"""
    before, after = shape
    if len(payload) < len(before) + len(after):
        return False
    if not payload.startswith(before) or not payload.endswith(after):
        return False
    content = payload[len(before) : len(payload) - len(after)]
    return 34 not in content and 92 not in content and 10 not in content
