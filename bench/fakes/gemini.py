"""A fake Gemini API upstream: Gemini's wire format, its strictness, injectable failures.

`FakeGemini` serves, under the base URL ``http://HOST:PORT/v1beta``:

- ``POST /v1beta/models/{model}:generateContent`` - one ``GenerateContentResponse``;
- ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` - SSE, one
  ``data: <GenerateContentResponse>`` per event with CRLF framing (``\\r\\n\\r\\n``) and no
  ``[DONE]``: the stream ends at EOF. Without ``alt=sse`` the same responses come as
  one JSON array, as the real API sends them;
- ``GET /v1beta/models`` and ``GET /v1beta/models/{model}``.

Requests are authenticated with ``x-goog-api-key`` (or ``?key=``): a wrong key is
answered 400 ``INVALID_ARGUMENT`` with an ``API_KEY_INVALID`` ErrorInfo, a missing key 403
``PERMISSION_DENIED``, as the real API does. Bodies are checked by
`bench.fakes.gemini_rules.check_request`; refusals use Google's error shape
``{"error": {"code", "message", "status", "details"?}}``. Unknown URLs get an HTML 404,
like Google's front end.

Answers (deterministic):

- text: ``chunks`` words, one text part per stream event; ``maxOutputTokens`` below
  that cuts the answer with ``finishReason: MAX_TOKENS``;
- function calls, when the request declares functions and ``functionCallingConfig``
  allows: the declared (and allowed) functions named in the last user text, in
  parallel when several are named, else the first one; args satisfy the declared schema;
  ``finishReason`` is ``STOP`` (Gemini has no tool finish reason). In AUTO mode a request
  whose last user content carries function responses gets a text answer, so a two-turn
  tool conversation ends. Streams from newer models (all but ``gemini-1*``/``gemini-2.0*``)
  send the calls in one chunk and ``finishReason`` in a trailing chunk with an empty text
  part; older models put both in one chunk. Gemini 3 models put a ``thoughtSignature`` on
  the first call of each response (and on the last text part of a text answer);
- thoughts: with ``thinkingConfig.includeThoughts`` (and a budget other than 0) two
  ``thought: true`` parts come first and ``usageMetadata.thoughtsTokenCount`` is set;
- JSON: with ``responseMimeType: application/json``, text that satisfies
  ``responseJsonSchema`` (or ``responseSchema``), split over the text events;
  ``text/x.enum`` answers the schema's first enum value;
- ``candidateCount`` > 1: that many candidates (``index`` 0..n-1) in every response;
- a last user text containing ``BLOCKME``: no candidates, ``promptFeedback.blockReason:
  SAFETY``.

Usage is where Gemini puts it: ``usageMetadata`` on every response (running totals on
every stream event, never deltas), ``totalTokenCount`` = prompt + candidates + thoughts.
Every response carries ``modelVersion`` and ``responseId``.

Behaviour knobs are those of `bench.fakes.directives` (constructor defaults, `configure`,
per-request directives in the model name of the URL, percent-encoded or not). Stream
positions count data events (there is no role event: the first text event is event 1).
``status`` answers in Gemini's shape (``RESOURCE_EXHAUSTED``, ``UNAVAILABLE``...); with
``retry_after`` the delay is in a ``google.rpc.RetryInfo`` detail and the message, not in
a header, because Gemini sends no ``Retry-After``. ``error_after`` sends Gemini's in-band
``{"error": {...}}`` event and ends the stream. ``fail_rate`` answers 500 ``INTERNAL``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import orjson
import trio

from bench.fakes.base import (
    FakeUpstream,
    StreamOut,
    failure_positions,
    run_fake,
    write_paced,
)
from bench.fakes.directives import Behaviour, DirectiveError, apply_knobs, split_model
from bench.fakes.gemini_rules import (
    VendorRefusal,
    check_request,
    error_body,
    mint_thought_signature,
)
from bench.fakes.server import CoarseTimer, Reply, Request
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for

DEFAULT_KEY: Final = "AIzaFakeGeminiUpstreamKey-0123456789"
DEFAULT_MODELS: Final = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview")
_PREFIX: Final = "/v1beta/models"
_WORDS: Final = (
    "This",
    " is",
    " a",
    " fake",
    " answer",
    " from",
    " the",
    " fake",
    " Gemini",
    " upstream",
    ".",
)
_THOUGHTS: Final = ("**Reading the request**\n\n", "I will answer briefly and plainly.")
_THOUGHT_TOKENS: Final = 24  # thinking costs more than its visible summary
_MEDIA_TOKENS: Final = 258  # what Gemini bills per image (used for every medium here)
_MODALITIES: Final = {"image": "IMAGE", "audio": "AUDIO", "video": "VIDEO"}
_JSON: Final = ("content-type", "application/json; charset=UTF-8")
_SSE: Final = ("content-type", "text/event-stream")
_HTML: Final = ("content-type", "text/html; charset=UTF-8")
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_QUOTA_METRIC: Final = "generativelanguage.googleapis.com/generate_content_requests"
_STATUS_CODES: Final = {name: code for code, name in _STATUS_NAMES.items()}
_INTERNAL_MESSAGE: Final = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it; `time` is `time.monotonic()` at arrival."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body; None when absent or not JSON
    time: float


class FakeGemini(FakeUpstream[RecordedRequest]):
    """The fake Gemini upstream; `handle` is its `bench.fakes.server` handler."""

    default_key = DEFAULT_KEY
    default_models = DEFAULT_MODELS
    base_path = "/v1beta"
    thread_name = "fake-gemini"

    def _recorded(self, request: Request, body: Any) -> RecordedRequest:
        return RecordedRequest(
            request.method, request.path, request.query, request.headers, body, time.monotonic()
        )

    async def _dispatch(self, request: Request, body: Any, reply: Reply) -> None:
        number = next(self._ids)
        query = parse_qs(request.query)
        route = _route(request)
        if route is None:
            page = (
                "<!DOCTYPE html>\n<title>Error 404 (Not Found)</title>\n"
                f"<p>The requested URL <code>{request.path}</code> was not found on this server."
            )
            await reply.send(404, [_HTML], page.encode())
            return
        model, method = route
        try:
            self._check_auth(request, query)
            if method == "list":
                await reply.send(200, [_JSON], orjson.dumps({"models": self._listing()}))
            elif method == "get":
                await reply.send(200, [_JSON], orjson.dumps(self._model_info(model)))
            else:
                stream = method == "streamGenerateContent"
                sse = query.get("alt") == ["sse"]
                await self._generate(number, model, body, request.body, stream, sse, reply)
        except VendorRefusal as refusal:
            await reply.send(refusal.status, [_JSON, *refusal.headers], orjson.dumps(refusal.body))

    def _check_auth(self, request: Request, query: dict[str, list[str]]) -> None:
        key = request.headers.get("x-goog-api-key") or next(iter(query.get("key", [])), "")
        if not key:
            raise VendorRefusal(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to "
                "call this API.",
                "PERMISSION_DENIED",
            )
        if key != self.api_key:
            message = "API key not valid. Please pass a valid API key."
            raise VendorRefusal(
                400,
                message,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": message,
                    },
                ],
            )

    def _listing(self) -> list[dict[str, Any]]:
        return [_model_entry(name) for name in self.models]

    def _model_info(self, model: str) -> dict[str, Any]:
        if model not in self.models:
            raise VendorRefusal(
                404, f"models/{model} is not found for API version v1beta.", "NOT_FOUND"
            )
        return _model_entry(model)

    # -- generateContent ------------------------------------------------------------

    async def _generate(
        self,
        number: int,
        raw_model: str,
        body: Any,
        raw: bytes,
        stream: bool,
        sse: bool,
        reply: Reply,
    ) -> None:
        if body is None and raw:
            message = "Invalid JSON payload received. Unexpected token."
            raise VendorRefusal(
                400,
                message,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"description": message}],
                    }
                ],
            )
        try:
            model, directives = split_model(raw_model)
            behaviour = apply_knobs(self.defaults, directives) if directives else self.defaults
        except DirectiveError as exc:
            raise VendorRefusal(400, f"Bad fake directive: {exc}") from None
        request = {} if body is None else body
        check_request(request, model=model)
        if behaviour.hang:
            await trio.sleep_forever()
        if self._should_fail(behaviour.fail_rate):
            raise VendorRefusal(500, _INTERNAL_MESSAGE, "INTERNAL")
        if behaviour.status is not None:
            raise _injected_refusal(behaviour, model)
        answer = _Answer.build(_response_id(number), model, request, behaviour)
        if stream:
            await _stream(reply, answer, behaviour, self._timer, sse=sse)
            return
        await self._timer.sleep_until(trio.current_time() + behaviour.latency_ms / 1000.0)
        if behaviour.reset_after is not None:
            reply.abort()
        await reply.send(200, [_JSON], orjson.dumps(answer.response()))


def run_fake_gemini(**defaults: Any) -> AbstractContextManager[tuple[FakeGemini, str]]:
    """Run a `FakeGemini(**defaults)` on a free loopback port; yield it and its base URL.

    The base URL ends in ``/v1beta``, like Gemini's.
    """
    return run_fake(FakeGemini, **defaults)


def _route(request: Request) -> tuple[str, str] | None:
    """(model, method) for a known URL: method is a generate method, "list" or "get"."""
    path = request.path
    if path == _PREFIX:
        return ("", "list") if request.method == "GET" else None
    if not path.startswith(_PREFIX + "/"):
        return None
    name = unquote(path[len(_PREFIX) + 1 :])
    if request.method == "GET" and name and ":" not in name:
        return name, "get"
    model, _, method = name.rpartition(":")
    if request.method != "POST" or not model:
        return None
    if method not in ("generateContent", "streamGenerateContent"):
        return None
    return model, method


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": f"Fake {name} for tests and benchmarks.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
        "temperature": 1,
        "maxTemperature": 2,
        "topP": 0.95,
        "topK": 64,
        "thinking": "2.5" in name or "gemini-3" in name,
    }


def _response_id(number: int) -> str:
    digest = hashlib.sha256(f"fake-gemini-{number}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:17]).decode().rstrip("=")


def _injected_refusal(behaviour: Behaviour, model: str) -> VendorRefusal:
    """The error answer of the `status` knob, with Gemini's usual status name and message."""
    status = behaviour.status or 500
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    details: list[dict[str, Any]] = []
    message = "Injected failure."
    if status == 404:
        message = (
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods."
        )
    elif status == 429:
        message = (
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, head to: "
            "https://ai.google.dev/gemini-api/docs/rate-limits."
        )
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _QUOTA_METRIC,
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "10",
                    }
                ],
            }
        )
    elif status == 503:
        message = "The model is overloaded. Please try again later."
    elif status == 504:
        message = "Deadline expired before operation could complete."
    elif status == 500:
        message = _INTERNAL_MESSAGE
    elif status == 403:
        message = "The caller does not have permission"
    if behaviour.retry_after:
        delay = behaviour.retry_after.removesuffix("s")
        message += f" Please retry in {delay}s."
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}
        )
    return VendorRefusal(
        status, behaviour.error_message or message, behaviour.error_type or name, details=details
    )


# -- answers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """One stream event's share of one candidate: its parts, tokens and finish reason."""

    parts: tuple[dict[str, Any], ...]
    tokens: int  # candidate tokens this step adds
    finish: str | None


@dataclass(frozen=True, slots=True)
class _Candidate:
    thoughts: tuple[str, ...]
    pieces: tuple[str, ...]  # text pieces (JSON text when asked for JSON)
    calls: tuple[dict[str, Any], ...]  # whole functionCall parts
    finish: str
    signature: str | None  # Gemini 3: on the last text part of a text answer
    split_finish: bool  # newer models: calls in one event, finishReason in the next

    def steps(self) -> list[_Step]:
        """The candidate as stream events."""
        steps = [_Step(({"text": t, "thought": True},), 0, None) for t in self.thoughts]
        for index, piece in enumerate(self.pieces):
            last = index == len(self.pieces) - 1 and not self.calls
            part: dict[str, Any] = {"text": piece}
            if last and self.signature:
                part["thoughtSignature"] = self.signature
            steps.append(_Step((part,), 1, self.finish if last else None))
        if self.calls:
            tokens = sum(_call_tokens(c) for c in self.calls)
            finish = None if self.split_finish else self.finish
            steps.append(_Step(self.calls, tokens, finish))
            if self.split_finish:
                steps.append(_Step(({"text": ""},), 0, self.finish))
        if not steps or steps[-1].finish is None:
            steps.append(_Step(({"text": ""},), 0, self.finish))
        return steps

    def parts(self) -> list[dict[str, Any]]:
        """The candidate's parts in a non-streamed response."""
        parts: list[dict[str, Any]] = []
        if self.thoughts:
            parts.append({"text": "".join(self.thoughts), "thought": True})
        if self.pieces:
            text: dict[str, Any] = {"text": "".join(self.pieces)}
            if self.signature and not self.calls:
                text["thoughtSignature"] = self.signature
            parts.append(text)
        parts.extend(self.calls)
        return parts or [{"text": ""}]

    @property
    def tokens(self) -> int:
        return len(self.pieces) + sum(_call_tokens(c) for c in self.calls)


def _call_tokens(part: dict[str, Any]) -> int:
    return 2 + len(orjson.dumps(part["functionCall"])) // 4


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one request is answered with, renderable as one response or as stream events."""

    response_id: str
    model: str
    prompt_tokens: int
    prompt_details: tuple[dict[str, Any], ...]
    candidates: tuple[_Candidate, ...]  # empty: the prompt was blocked
    thought_tokens: int

    @classmethod
    def build(cls, response_id: str, model: str, body: dict[str, Any], b: Behaviour) -> _Answer:
        text_tokens, media = _prompt_tokens(body)
        details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        details += [{"modality": m, "tokenCount": n} for m, n in sorted(media.items())]
        prompt = text_tokens + sum(media.values())
        if "BLOCKME" in _last_user_text(body):
            return cls(response_id, model, prompt, tuple(details), (), 0)
        config = body.get("generationConfig") or {}
        thinking = config.get("thinkingConfig") or {}
        thinks = thinking.get("includeThoughts") is True and thinking.get("thinkingBudget") != 0
        count = _int(config.get("candidateCount"), 1)
        candidates = tuple(
            _candidate(response_id, model, body, b, index, thinks) for index in range(count)
        )
        return cls(
            response_id,
            model,
            prompt,
            tuple(details),
            candidates,
            _THOUGHT_TOKENS * len(candidates) if thinks else 0,
        )

    def response(self) -> dict[str, Any]:
        """The non-streamed ``GenerateContentResponse``."""
        if not self.candidates:
            return self._blocked()
        candidates = [
            {
                "content": {"parts": c.parts(), "role": "model"},
                "finishReason": c.finish,
                "index": index,
            }
            for index, c in enumerate(self.candidates)
        ]
        tokens = sum(c.tokens for c in self.candidates)
        return self._wrap({"candidates": candidates}, tokens, self.thought_tokens)

    def events(self) -> tuple[list[dict[str, Any]], int]:
        """The stream's responses, and how many of them are paced (the rest follow the last)."""
        if not self.candidates:
            return [self._blocked()], 1
        per_candidate = [c.steps() for c in self.candidates]
        events: list[dict[str, Any]] = []
        tokens = thoughts = 0
        for position in range(len(per_candidate[0])):
            candidates = []
            for index, steps in enumerate(per_candidate):
                step = steps[position]
                tokens += step.tokens
                if step.parts[0].get("thought"):
                    thoughts = self.thought_tokens
                entry: dict[str, Any] = {
                    "content": {"parts": list(step.parts), "role": "model"},
                    "index": index,
                }
                if step.finish is not None:
                    entry["finishReason"] = step.finish
                candidates.append(entry)
            events.append(self._wrap({"candidates": candidates}, tokens, thoughts))
        trailing = per_candidate[0][-1].tokens == 0 and len(events) > 1
        return events, len(events) - (1 if trailing else 0)

    def _blocked(self) -> dict[str, Any]:
        feedback = {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            ],
        }
        return self._wrap({"promptFeedback": feedback}, 0, 0)

    def _wrap(self, fields: dict[str, Any], tokens: int, thoughts: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if self.candidates:
            usage["candidatesTokenCount"] = tokens
        usage["totalTokenCount"] = self.prompt_tokens + tokens + thoughts
        usage["promptTokensDetails"] = list(self.prompt_details)
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return {
            **fields,
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        }


def _candidate(
    response_id: str, model: str, body: dict[str, Any], b: Behaviour, index: int, thinks: bool
) -> _Candidate:
    """One candidate: function calls when the tools allow, else text (or JSON)."""
    gemini3 = "gemini-3" in model
    split = not model.startswith(("gemini-1", "gemini-2.0"))
    thoughts = _THOUGHTS if thinks else ()
    signature_seed = f"{response_id}/{index}"
    calls = _pick_calls(body)
    if calls:
        parts = []
        for position, (name, schema) in enumerate(calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": _args(schema, name)}}
            if gemini3 and position == 0:
                part["thoughtSignature"] = mint_thought_signature(signature_seed)
            parts.append(part)
        return _Candidate(thoughts, (), tuple(parts), "STOP", None, split)
    pieces, finish = _text_pieces(body, b, index)
    signature = mint_thought_signature(signature_seed) if gemini3 and pieces else None
    return _Candidate(thoughts, pieces, (), finish, signature, split)


def _text_pieces(body: dict[str, Any], b: Behaviour, index: int) -> tuple[tuple[str, ...], str]:
    """The answer's text pieces and finish reason, cut at ``maxOutputTokens``."""
    config = body.get("generationConfig") or {}
    mime = config.get("responseMimeType")
    if mime in ("application/json", "text/x.enum"):
        text = _structured_text(config, mime, index)
        size = max(1, -(-len(text) // max(1, b.chunks)))
        pieces = tuple(text[i : i + size] for i in range(0, len(text), size))
    else:
        pieces = tuple(_WORDS[(index + i) % len(_WORDS)] for i in range(b.chunks))
    limit = _int(config.get("maxOutputTokens"), len(pieces))
    if limit < len(pieces):
        return pieces[:limit], "MAX_TOKENS"
    return pieces, "STOP"


def _structured_text(config: dict[str, Any], mime: str, index: int) -> str:
    """JSON satisfying the requested schema, or the first value of an enum schema."""
    json_schema = config.get("responseJsonSchema")
    schema: Any = json_schema if json_schema is not None else config.get("responseSchema")
    if schema is not None and json_schema is None:
        schema = _from_openapi(schema)
    if mime == "text/x.enum":
        options = schema.get("enum") if isinstance(schema, dict) else None
        return str(options[0]) if options else "fake"
    if schema is None or isinstance(schema, bool):
        return orjson.dumps({"answer": "This is a fake answer", "candidate": index}).decode()
    try:
        value = instance_for(schema, seed=str(index))
    except SchemaInstanceError:
        value = {"answer": "This is a fake answer"}
    return orjson.dumps(value).decode()


def _pick_calls(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """The (name, JSON Schema) of each function to call; empty for a text answer."""
    declarations: dict[str, Any] = {}
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            schema = declaration.get("parametersJsonSchema")
            if schema is None and declaration.get("parameters") is not None:
                schema = _from_openapi(declaration["parameters"])
            declarations[declaration["name"]] = schema
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode") or "AUTO"
    if not declarations or mode == "NONE":
        return []
    allowed = calling.get("allowedFunctionNames") if mode in ("ANY", "VALIDATED") else None
    names = [n for n in declarations if not allowed or n in allowed]
    last_user = _last_user(body)
    if mode != "ANY" and any(p.get("functionResponse") for p in last_user.get("parts") or []):
        return []
    if not names:
        return []
    text = _last_user_text(body)
    named = [n for n in names if n in text]
    chosen = named if len(named) > 1 else [named[0] if named else names[0]]
    return [(name, declarations[name]) for name in chosen]


def _args(schema: Any, name: str) -> Any:
    """Arguments satisfying `schema` (an object; ``{}`` when there is no schema)."""
    if not isinstance(schema, dict):
        return {}
    try:
        value = instance_for(schema, seed=name)
    except SchemaInstanceError:
        return {}
    return value if isinstance(value, dict) else {}


def _from_openapi(schema: Any) -> Any:
    """Gemini's OpenAPI-subset Schema as JSON Schema (lower-case types, nullable)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _from_openapi(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _from_openapi(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [_from_openapi(sub) for sub in value]
        elif key in (
            "minItems",
            "maxItems",
            "minLength",
            "maxLength",
            "minProperties",
            "maxProperties",
        ):
            out[key] = int(value)
        elif key in ("enum", "required", "minimum", "maximum", "pattern", "format"):
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _int(value: Any, default: int) -> int:
    """A proto-JSON integer (a number or a numeric string), or `default` when absent."""
    return default if value is None else int(float(value))


def _last_user(body: dict[str, Any]) -> dict[str, Any]:
    for content in reversed(body.get("contents") or []):
        if (content.get("role") or "user") == "user":
            found: dict[str, Any] = content
            return found
    return {}


def _last_user_text(body: dict[str, Any]) -> str:
    parts = _last_user(body).get("parts") or []
    return " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))


def _prompt_tokens(body: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """A cheap, deterministic prompt count: text tokens, and media tokens per modality."""
    contents = list(body.get("contents") or [])
    if body.get("systemInstruction"):
        contents.append(body["systemInstruction"])
    chars = 0
    media: dict[str, int] = {}
    for content in contents:
        for part in content.get("parts") or []:
            blob = part.get("inlineData") or part.get("fileData")
            if isinstance(part.get("text"), str):
                chars += len(part["text"])
            elif blob is not None:
                family = str(blob.get("mimeType") or "").partition("/")[0]
                modality = _MODALITIES.get(family, "DOCUMENT")
                media[modality] = media.get(modality, 0) + _MEDIA_TOKENS
            elif part.get("functionCall") or part.get("functionResponse"):
                chars += len(orjson.dumps(part))
    return 3 + 4 * len(contents) + chars // 4, media


# -- streaming ---------------------------------------------------------------------------


async def _stream(
    reply: Reply, answer: _Answer, b: Behaviour, timer: CoarseTimer, *, sse: bool
) -> None:
    """Write the answer's events on schedule, with a reset or an in-band error where asked.

    Same schedule as the OpenAI fake: the first event after ``ttft_ms``; when paced, one
    write per event on an absolute schedule; unpaced, everything in one write. An
    injected failure comes in a write of its own, `FAILURE_GAP_S` after the events
    before it. With ``sse`` the events are SSE with CRLF framing; without, the elements
    of one JSON array.
    """
    responses, paced_end = answer.events()
    frames = [_frame(r, i, sse) for i, r in enumerate(responses)]
    closing = b"" if sse else b"]"
    end = len(frames)
    reset_at, fail_at = failure_positions(b, end)
    out = StreamOut(reply, [_SSE if sse else _JSON, ("cache-control", "no-cache")])

    start = trio.current_time() + b.ttft_ms / 1000.0
    await timer.sleep_until(start)
    if fail_at == 0 and fail_at == reset_at:
        reply.abort()  # before any response byte
    pending = await write_paced(
        out,
        timer,
        frames,
        start=start,
        interval=b.chunk_interval_s,
        jitter=b.chunk_jitter_ms / 1000.0,
        paced=range(1, paced_end),
        reset_at=reset_at,
        fail_at=fail_at,
    )
    if fail_at is not None:
        status = b.error_type or "INTERNAL"
        error = error_body(
            _STATUS_CODES.get(status, 500),
            b.error_message or "An internal error has occurred while generating.",
            status,
        )
        pending += _frame(error, fail_at, sse)
    await out.flush(pending + closing)
    await reply.end()


def _frame(response: dict[str, Any], position: int, sse: bool) -> bytes:
    """One response as an SSE event (CRLF framing) or as a JSON array element."""
    data = orjson.dumps(response)
    if sse:
        return b"data: " + data + b"\r\n\r\n"
    return (b"[" if position == 0 else b",\r\n") + data
