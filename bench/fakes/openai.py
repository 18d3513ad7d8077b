"""A fake OpenAI Chat Completions upstream: exact wire format, injectable failures.

`FakeOpenAI` serves ``POST /v1/chat/completions``, ``POST /v1/responses`` (the Responses
API: bench/fakes/openai_responses.py) and ``GET /v1/models`` on
`bench.fakes.server`. It checks requests the way OpenAI does (bearer key, JSON body,
``model``, non-empty ``messages``, ``stream_options`` only with ``stream: true``; with
``strict_roles`` also role ``developer`` and ``max_completion_tokens``, like older
OpenAI-compatible servers) and answers in OpenAI's shapes: a ``chat.completion`` with
usage, or ``chat.completion.chunk`` SSE events ending in ``data: [DONE]``. A request
with ``tools`` (and ``tool_choice`` not ``"none"``) is answered with tool calls: the
named function of ``tool_choice`` (``allowed_tools`` narrows the tools first), else
every tool the last user message mentions (by name or by a word of the name, generic
verbs such as "get" aside; in the order mentioned), else the first tool; several calls
only while ``parallel_tool_calls`` is not false. After tool results under ``auto``, a
text answer. Streamed calls come like OpenAI's: each opens with a fragment carrying its
index, id, type, name and empty arguments, then argument pieces carrying only the index.
``response_format`` is honoured: ``json_schema`` answers a JSON document satisfying the
schema (`instance_for`), ``json_object`` a JSON object. ``n`` > 1 gets that many
identical choices (streamed one after the other).

Behaviour (delays, pace, failures) comes from `Behaviour` knobs: constructor defaults,
`configure`, and per-request directives in the model name (see `directives`). The
answer echoes the model name without its directives.

Timeline of a stream: ``ttft_ms``, then the status line, headers, role chunk and first
content chunk in one write; then, when paced by ``chunk_interval_ms``/``tokens_per_s``,
one write per content chunk; the finish chunk, the usage chunk (only with
``stream_options.include_usage``) and ``[DONE]`` go with the last content chunk. An
unpaced stream is written at once (cheap: the fake must not bound a benchmark).

For tests in another thread: `requests` (when recording), `request_count`,
`disconnects` (clients that went away before their response ended) and the blocking,
thread-safe `wait_for_requests`/`wait_for_disconnects`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from bench.fakes.base import (
    STAMP_HOLE,
    FakeUpstream,
    RecordedRequest,
    StreamOut,
    failure_positions,
    stamped,
    write_paced,
)
from bench.fakes.directives import Behaviour, DirectiveError, apply_knobs, drawn, split_model
from bench.fakes.openai_responses import (
    ResponsesAnswer,
    ResponsesRefusal,
    chat_view,
    stream_responses,
)
from bench.fakes.server import CoarseTimer, Reply, Request
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for

DEFAULT_KEY = "sk-fake-upstream"
_WORDS = ("This", " is", " a", " fake", " answer", " from", " the", " fake", " upstream", ".")
_DONE = b"data: [DONE]\n\n"
_JSON = ("content-type", "application/json")
_SSE = ("content-type", "text/event-stream; charset=utf-8")
_FINGERPRINT = "fp_fake"
_RNG = random.Random()  # chunks_max draws
_CREATED_MODELS = 1_700_000_000
_GENERIC_VERBS = frozenset(
    {
        "get",
        "set",
        "list",
        "fetch",
        "find",
        "search",
        "lookup",
        "create",
        "update",
        "delete",
        "do",
        "run",
        "call",
    }
)
_NAME_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


class _Refusal(Exception):
    """An OpenAI-shaped error answer, raised while checking a request."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, error_type, param=param, code=code)
        self.headers = headers


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """OpenAI's error object: all four keys, always."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return orjson.dumps({"error": error})


class FakeOpenAI(FakeUpstream[RecordedRequest]):
    """The fake OpenAI upstream; `handle` is its `bench.fakes.server` handler."""

    default_key = DEFAULT_KEY
    default_models = ("fake-model",)
    base_path = "/v1"
    thread_name = "fake-openai"

    def __init__(self, *, strict_roles: bool = False, **options: Any) -> None:
        """`strict_roles` refuses what older OpenAI-compatible servers refuse; `options`
        are `FakeUpstream`'s (`api_key`, `models`, `seed`, `record`, behaviour knobs)."""
        self.strict_roles = strict_roles
        super().__init__(**options)

    def _recorded(self, request: Request, body: Any) -> RecordedRequest:
        return RecordedRequest.of(request, body)

    async def _dispatch(self, request: Request, body: Any, reply: Reply) -> None:
        request_id = f"req_{next(self._ids):016x}"
        try:
            if request.path == "/v1/chat/completions":
                _check_method(request, "POST")
                self._check_auth(request)
                await self._chat(request_id, body, request.body, reply)
            elif request.path == "/v1/responses":
                _check_method(request, "POST")
                self._check_auth(request)
                await self._responses(request_id, body, request.body, reply)
            elif request.path == "/v1/models":
                _check_method(request, "GET")
                self._check_auth(request)
                data = [
                    {"id": m, "object": "model", "created": _CREATED_MODELS, "owned_by": "fake"}
                    for m in self.models
                ]
                listing = orjson.dumps({"object": "list", "data": data})
                await reply.send(200, [_JSON, ("x-request-id", request_id)], listing)
            else:
                raise _Refusal(404, f"Invalid URL ({request.method} {request.path})")
        except _Refusal as refusal:
            headers = [_JSON, ("x-request-id", request_id), *refusal.headers]
            await reply.send(refusal.status, headers, refusal.body)

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            raise _Refusal(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = key.strip()
        if key != self.api_key:
            masked = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            raise _Refusal(401, f"Incorrect API key provided: {masked}.", code="invalid_api_key")

    # -- chat completions --------------------------------------------------------

    async def _chat(self, request_id: str, body: Any, raw: bytes, reply: Reply) -> None:
        if body is None and raw:
            raise _Refusal(400, "We could not parse the JSON body of your request.")
        behaviour, model, stream = self._check_chat(body)
        if behaviour.hang:
            await trio.sleep_forever()
        if self._should_fail(behaviour.fail_rate):
            raise _Refusal(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        if behaviour.status is not None:
            raise _injected_refusal(behaviour, model)
        answer = _Answer.build(f"chatcmpl-{request_id[4:]}", model, body, behaviour)
        if stream:
            await _stream(reply, request_id, answer, behaviour, self._timer)
            return
        await self._timer.sleep_until(trio.current_time() + behaviour.latency_ms / 1000.0)
        if behaviour.reset_after is not None:
            reply.abort()
        await reply.send(200, [_JSON, ("x-request-id", request_id)], answer.completion())

    async def _responses(self, request_id: str, body: Any, raw: bytes, reply: Reply) -> None:
        """POST /v1/responses (bench/fakes/openai_responses.py), with the same knobs."""
        if body is None and raw:
            raise _Refusal(400, "We could not parse the JSON body of your request.")
        try:
            view = chat_view(body)
        except ResponsesRefusal as e:
            raise _Refusal(400, str(e), param=e.param) from None
        name, knobs = split_model(view["model"])
        try:
            behaviour = apply_knobs(self.defaults, knobs) if knobs else self.defaults
        except DirectiveError as exc:
            raise _Refusal(400, f"Bad fake directive: {exc}", param="model") from None
        if behaviour.hang:
            await trio.sleep_forever()
        if behaviour.status is not None:
            raise _injected_refusal(behaviour, name)
        answer = ResponsesAnswer(
            _Answer.build(f"chatcmpl-{request_id[4:]}", name, view, behaviour),
            body,
            next(self._ids),
        )
        if body.get("stream") is True:
            await stream_responses(reply, request_id, answer, behaviour, self._timer)
            return
        await self._timer.sleep_until(trio.current_time() + behaviour.latency_ms / 1000.0)
        if behaviour.reset_after is not None:
            reply.abort()
        await reply.send(200, [_JSON, ("x-request-id", request_id)], answer.whole())

    def _check_chat(self, body: Any) -> tuple[Behaviour, str, bool]:
        """Validate like OpenAI; return the request's behaviour, bare model and stream flag."""
        if not isinstance(body, dict):
            raise _Refusal(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Refusal(400, "You must provide a model parameter.", param="model")
        messages = body.get("messages")
        if messages is None:
            raise _Refusal(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list):
            raise _Refusal(400, "Invalid type for 'messages': expected an array.", param="messages")
        if not messages:
            raise _Refusal(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                param="messages",
                code="empty_array",
            )
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _Refusal(400, "Invalid type for 'stream': expected a boolean.", param="stream")
        if body.get("stream_options") is not None and stream is not True:
            raise _Refusal(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if self.strict_roles:
            _check_strict_roles(body, messages)
        name, raw = split_model(model)
        try:
            behaviour = apply_knobs(self.defaults, raw) if raw else self.defaults
        except DirectiveError as exc:
            raise _Refusal(400, f"Bad fake directive: {exc}", param="model") from None
        return drawn(behaviour, _RNG), name, stream is True


def _check_method(request: Request, method: str) -> None:
    if request.method != method:
        raise _Refusal(
            405,
            f"Invalid method for URL ({request.method} {request.path})",
            headers=[("allow", method)],
        )


def _check_strict_roles(body: dict[str, Any], messages: list[Any]) -> None:
    """Refuse what servers written before the o-series reject."""
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "developer":
            raise _Refusal(
                400,
                "Unexpected role 'developer'. Allowed roles: system, user, assistant, tool.",
                param=f"messages[{index}].role",
            )
    if "max_completion_tokens" in body:
        raise _Refusal(
            400,
            "Unrecognized request argument supplied: max_completion_tokens",
            param="max_completion_tokens",
        )


def _injected_refusal(behaviour: Behaviour, model: str) -> _Refusal:
    """The error answer of the `status` knob, with OpenAI's usual type/code per status."""
    status = behaviour.status or 500
    error_type, code, message = "invalid_request_error", None, "Injected failure."
    if status == 401:
        code, message = "invalid_api_key", "Incorrect API key provided."
    elif status == 403:
        error_type, message = "permission_error", "You are not allowed to use this model."
    elif status == 404:
        code = "model_not_found"
        message = f"The model `{model}` does not exist or you do not have access to it."
    elif status == 429:
        error_type, code = "requests", "rate_limit_exceeded"
        message = f"Rate limit reached for {model} on requests per min (RPM)."
    elif status >= 500:
        error_type, message = "server_error", "The server is overloaded or not ready yet."
    headers = [("retry-after", behaviour.retry_after)] if behaviour.retry_after else []
    return _Refusal(
        status,
        behaviour.error_message or message,
        behaviour.error_type or error_type,
        code=code,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class _Call:
    """One tool call of an answer."""

    id: str
    name: str
    pieces: tuple[str, ...]  # the arguments JSON, as streamed fragments


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one request is answered with, renderable as a completion or as chunks."""

    id: str
    created: int
    model: str
    pieces: tuple[str, ...]  # content pieces (none when answering with tool calls)
    calls: tuple[_Call, ...]
    finish_reason: str
    usage: dict[str, Any]
    include_usage: bool
    n: int = 1  # choices, all alike (OpenAI's `n`)

    @classmethod
    def build(cls, answer_id: str, model: str, body: dict[str, Any], b: Behaviour) -> _Answer:
        tools = _pick_tools(body)
        pieces: tuple[str, ...] = ()
        calls: tuple[_Call, ...] = ()
        if tools:
            calls = tuple(
                _Call(f"call_{answer_id[9:]}_{k}", name, _split(arguments, max(1, b.chunks)))
                for k, (name, arguments) in enumerate(tools)
            )
            finish = "tool_calls"
            completion_tokens = sum(len(call.pieces) for call in calls)
        else:
            finish = "stop"
            content = _formatted(body.get("response_format"))
            if b.stamp:  # each piece says when it was written (`write_paced`)
                pieces = (STAMP_HOLE.decode(),) * b.chunks
            elif content is None:
                pieces = tuple(_WORDS[i % len(_WORDS)] for i in range(b.chunks))
            else:
                pieces = _split(content, max(1, b.chunks))
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(pieces):
                pieces, finish = pieces[:limit], "length"
            completion_tokens = len(pieces)
        n = body.get("n")
        n = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        completion_tokens *= n
        prompt = _estimate_prompt_tokens(body.get("messages"))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        created = int(time.time())
        return cls(answer_id, created, model, pieces, calls, finish, usage, include_usage, n)

    def completion(self) -> bytes:
        """The non-streamed ``chat.completion`` body."""
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if not self.calls:
            message["content"] = "".join(self.pieces)
        else:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.pieces)},
                }
                for call in self.calls
            ]
        message["annotations"] = []
        choices = [
            {"index": k, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            for k in range(self.n)
        ]
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                "usage": self.usage,
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )

    def events(self) -> list[bytes]:
        """The stream's data events, without [DONE]: role, pieces, finish, usage?"""
        if not self.calls:
            deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
            deltas += [{"content": piece} for piece in self.pieces]
        else:
            deltas = [{"role": "assistant", "content": None, "refusal": None}]
            for k, call in enumerate(self.calls):
                first = {
                    "index": k,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                deltas.append({"tool_calls": [first]})
                deltas += [
                    {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                    for piece in call.pieces
                ]
        events = []
        for k in range(self.n):  # choice after choice (OpenAI interleaves them; both are valid)
            events += [
                self._chunk([{"index": k, "delta": d, "logprobs": None, "finish_reason": None}])
                for d in deltas
            ]
            finish = {
                "index": k,
                "delta": {},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            events.append(self._chunk([finish]))
        if self.include_usage:
            events.append(self._chunk([], self.usage))
        return events

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _stream(
    reply: Reply, request_id: str, answer: _Answer, b: Behaviour, timer: CoarseTimer
) -> None:
    """Write the answer as SSE events on schedule, with a reset or an error where asked.

    Events due at the same moment go out in one write: the role chunk with the first
    piece, the last piece with the finish and usage chunks and [DONE], and a whole
    unpaced stream at once. A paced stream (chunk_interval_ms or tokens_per_s) writes
    each piece on its own, on an absolute schedule (to the millisecond, see
    `CoarseTimer`) so that delays do not drift. An injected failure after some events
    comes in a write of its own, at least `FAILURE_GAP_S` after them, so that the
    client sees those events before the failure even in an unpaced stream.
    """
    events = answer.events()
    end = len(events)
    last_piece = end - (2 if answer.include_usage else 1) - 1
    reset_at, fail_at = failure_positions(b, end)
    out = StreamOut(reply, [_SSE, ("cache-control", "no-cache"), ("x-request-id", request_id)])

    start = trio.current_time() + b.ttft_ms / 1000.0
    await timer.sleep_until(start)
    pending = await write_paced(
        out,
        timer,
        events,
        start=start,
        interval=b.chunk_interval_s,
        jitter=b.chunk_jitter_ms / 1000.0,
        paced=range(2, last_piece + 1),
        reset_at=reset_at,
        fail_at=fail_at,
        stamp=b.stamp,
    )
    if fail_at is not None:
        error = error_body(
            b.error_message or "The model produced an error while generating.",
            b.error_type or "server_error",
        )
        pending += b"data: " + error + b"\n\n"
    await out.flush(stamped(pending + _DONE) if b.stamp else pending + _DONE)
    await reply.end()


def _pick_tools(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (name, JSON arguments) of each tool to call, in order; empty for a text answer."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return []
    functions = {
        t["function"].get("name"): t["function"].get("parameters")
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    names = [n for n in functions if isinstance(n, str)]
    allowed = choice.get("allowed_tools") if isinstance(choice, dict) else None
    if isinstance(allowed, dict):  # only the listed tools, under mode auto or required
        listed = {
            ref["function"].get("name")
            for ref in allowed.get("tools") or ()
            if isinstance(ref, dict) and isinstance(ref.get("function"), dict)
        }
        names = [n for n in names if n in listed]
        choice = allowed.get("mode", "auto")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = choice["function"].get("name")
        names = [named] if isinstance(named, str) else []
    else:
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if isinstance(last, dict) and last.get("role") == "tool" and choice in (None, "auto"):
            return []  # tool results came back: answer them in text, as a model would
        mentioned = _mentioned(_last_user_text(messages), names)
        names = mentioned or names[:1]
        if body.get("parallel_tool_calls") is False:
            names = names[:1]
    return [(name, orjson.dumps(_sample(functions.get(name), 0)).decode()) for name in names]


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part["text"]
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
            return ""
    return ""


def _mentioned(text: str, names: Sequence[str]) -> list[str]:
    """The tools `text` mentions, by name or by a word of the name (split on _ - and
    camelCase; generic verbs aside) as a whole word, in order of first mention."""
    found: list[tuple[int, int, str]] = []
    for order, name in enumerate(names):
        words = {w.lower() for w in _NAME_WORD.findall(name)} - _GENERIC_VERBS
        starts = [
            match.start()
            for term in (name, *sorted(words))
            if (match := re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, re.I))
        ]
        if starts:
            found.append((min(starts), order, name))
    return [name for *_, name in sorted(found)]


def _formatted(response_format: Any) -> str | None:
    """The JSON content `response_format` asks for; None for free text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            try:
                return orjson.dumps(instance_for(schema, seed="fake")).decode()
            except (SchemaInstanceError, TypeError):
                pass  # unsatisfiable (or beyond orjson): answer like json_object
        return orjson.dumps({"answer": "".join(_WORDS)}).decode()
    if kind == "json_object":
        return orjson.dumps({"answer": "".join(_WORDS)}).decode()
    return None


def _sample(schema: Any, depth: int) -> Any:
    """A small value that satisfies a simple JSON Schema (type, enum, const, properties)."""
    if not isinstance(schema, dict) or depth > 6:
        return {} if depth == 0 else "fake"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {key: _sample(sub, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        minimum = schema.get("minItems")
        count = minimum if isinstance(minimum, int) and 0 < minimum <= 8 else 0
        return [_sample(schema.get("items"), depth + 1) for _ in range(count)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(
        kind if isinstance(kind, str) else "", {} if depth == 0 else "fake"
    )


def _split(text: str, parts: int) -> tuple[str, ...]:
    """Cut `text` into at most `parts` consecutive non-empty pieces."""
    size = max(1, -(-len(text) // parts))
    return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


def _estimate_prompt_tokens(messages: Any) -> int:
    """A cheap, deterministic prompt token count: 4 characters per token plus framing."""
    if not isinstance(messages, list):
        return 0
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    chars += len(text)
    return 3 + 4 * len(messages) + chars // 4
