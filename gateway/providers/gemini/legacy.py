"""Google Gemini (generateContent) behind the OpenAI chat-completions surface.

Requests go to `{base_url}/models/{model}:generateContent`, or
`:streamGenerateContent?alt=sse` when streaming, with the deployment's key in
`x-goog-api-key` (never the client's Authorization). wire-formats.md C and D are the
specification; what follows are the decisions it leaves open.

Messages (D2):
- system and developer messages, wherever they are, become `systemInstruction`
  text parts in order (a system message loses its position in the conversation);
- user -> role `user`, assistant -> role `model`; tool and legacy function results
  go into role `user` (never `function`, E3); consecutive turns of one role are merged
  into one Content (E18), and messages left without parts (empty text) are skipped;
- assistant tool calls -> `functionCall` parts (arguments parsed; "" is `{}`);
  tool results -> `functionResponse` parts named after the call they answer, looked
  up by `tool_call_id` in the preceding assistant turn (E2), with
  `response: {"output": value}` where value is the content parsed as JSON when it is
  an object or array, else the text. All results of one model turn go in one user
  Content in the order of the calls, before any user parts merged into that turn.
  A result that answers no call of the preceding assistant turn, a duplicate result,
  and a call left unanswered are refused (400), as OpenAI refuses them; so is a tool
  call before any user message (Gemini wants a user turn before a function call turn);
- images, audio and files -> `inlineData` (data URLs decoded into mime type and
  base64; http(s) URLs are fetched by the gateway when option `fetch_media` is on,
  the default, and are a 400 naming the part when it is off); Gemini Files-API and
  `gs://` URIs -> `fileData`. `file.file_data` without a data URL takes its type from
  `filename` or its leading bytes; `file.file_id` is accepted only as a Files-API or
  gs:// URI (OpenAI file ids are not portable). Media declared as an image, a PDF or
  application/octet-stream go with the type their leading bytes show (PNG, JPEG, GIF,
  WebP, HEIC/HEIF, PDF), whatever the declared type: Gemini refuses a mismatch, and
  clients often label a PNG as JPEG; bytes that match none of them under a PNG, JPEG,
  GIF, WebP or PDF label are a 400. Inline media must then be of a type Gemini reads
  (PNG, JPEG, WebP, HEIC/HEIF images; PDF, JSON, XML, RTF, code; any audio, video or
  text type) and non-empty, else a 400 naming the part (a GIF, for instance);
- a user Content with media but no text gets a one-space text part (E17: Vertex
  wants a text part beside media and refuses empty text; one space is the least text);
- thought signatures (E4, D3) travel inside the OpenAI tool-call id, see "Tool-call
  ids" below. The first function call of a model Content that carries none gets the
  documented `skip_thought_signature_validator` sentinel (Gemini 3 checks the first
  call of each step), so histories written by clients or other models still pass.

Tools: one `{"functionDeclarations": [...]}` entry from `tools` (and legacy
`functions`). Parameter schemas are sent as `parametersJsonSchema` (real JSON Schema)
after `gemini_schema.clean_schema`, never as the OpenAPI-subset `parameters` (E5).
A missing root `type` becomes "object"; another root type is a 400. Names must start
with a letter or underscore on Gemini and be unique (400 otherwise). `tool_choice`
(and legacy `function_call`): none -> NONE, auto -> AUTO, required -> ANY, a named
function -> ANY with `allowedFunctionNames`; `allowed_tools` keeps only the listed
declarations, with AUTO or ANY. Custom tools are a 400.

generationConfig (C4): temperature, top_p -> topP, top_k (extension) -> topK,
max_completion_tokens (else max_tokens) -> maxOutputTokens (above int32: 400), capped
at the deployment option `max_output_tokens` when set, which is also sent when the
client gives no limit (Gemini counts thinking tokens within maxOutputTokens), stop ->
stopSequences (empty strings dropped), n -> candidateCount (at most 8, else 400),
seed -> seed (folded into int32, Gemini's type), presence/frequency penalties (sent
unless 0; Gemini's range is [-2, 2), so 2.0 goes as 1.999), logprobs ->
responseLogprobs, top_logprobs -> logprobs; response_format json_object ->
responseMimeType application/json, json_schema -> that plus `responseJsonSchema`
(cleaned). reasoning_effort -> thinkingConfig: models named gemini-3 and later take
`thinkingLevel` (none/minimal MINIMAL, low LOW, medium MEDIUM, high/xhigh/max HIGH; a
model that lacks a level answers 400 itself), older ones `thinkingBudget` (none 0, or
128 on 2.5 Pro, which cannot stop thinking; minimal 512, low 1024, medium 8192,
high/xhigh/max 24576). Option `reasoning_output` adds `includeThoughts` and surfaces
thought parts as `reasoning_content`.

Dropped silently: logit_bias, parallel_tool_calls, user, safety_identifier,
prompt_cache_key, metadata, store, service_tier, verbosity, prediction,
web_search_options, modalities ["text"], stream_options (the gateway emits usage
itself), message `name`, image `detail`, assistant `refusal` and `audio`,
`reasoning_content` echoed in history, thought signatures of text parts, and unknown
extension fields. Refused (400 naming the field): audio output (`audio`), custom
tools, n > 8, a `top_k` that is not a positive int32, and what is listed above.

Responses (C5, D5, D6): id and created are the gateway's, `model` is the id the
client asked for. Text parts -> content; functionCall parts -> tool_calls with
compact JSON arguments and finish_reason `tool_calls` even though Gemini says STOP
(E1); a blocked prompt -> one choice with content null and `content_filter`.
MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
MISSING_THOUGHT_SIGNATURE and MALFORMED_RESPONSE are upstream failures (502), never an
empty success; RECITATION, LANGUAGE and OTHER are `content_filter` like the safety
reasons. Usage: prompt = promptTokenCount + toolUsePromptTokenCount, completion =
candidatesTokenCount + thoughtsTokenCount, total = their sum (Gemini's
totalTokenCount), cached and reasoning details; the stream keeps the last
usageMetadata, never a sum (E10), and sends it as its own `choices: []` chunk only
when the client asked (E11). A response or stream event of an unexpected shape (a
wrong type anywhere in candidates, parts, logprobs or usageMetadata), a body that is
not a JSON object and an SSE line or event over the decoder's limit are upstream
failures (502; an error event once a stream has begun); odd values that do not stop
the answer are read leniently (a token count that is not an int32 counts 0).

Errors (C7, D8): HTTP status as `common.upstream_status_error` maps it (an in-stream
error takes it from `error.code`, else from the google.rpc status); `API_KEY_INVALID`
is the gateway's key refused, like 401/403. The code is OpenAI's where D8 gives one
(404 `model_not_found`, 413 `request_too_large`, 429 `rate_limit_exceeded`, a 400
about too many input tokens `context_length_exceeded`), else the google.rpc status
(`INVALID_ARGUMENT`, `UNAVAILABLE`, ...); a 429 without `retry-after` takes it from
`RetryInfo.retryDelay`.

Tool-call ids: `<head>` or `<head>__sig_<signature>`, where the head is `gid_<id>`
for an id Gemini gave (echoed back upstream on the call and its response) or
`call_<24 hex>` derived from the request id, choice and call ordinal (never sent
upstream), and the signature is the part's `thoughtSignature` bytes in unpadded
base64url. Ids stay in `[A-Za-z0-9_-]`. A Gemini id outside `[A-Za-z0-9-]` words
joined by single underscores, or over 128 characters, is replaced by a derived head;
a signature over 8192 characters is dropped (the sentinel then stands in for it).

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import orjson

from gateway.config import GeminiOptions
from gateway.errors import GatewayError, InvalidRequest, UpstreamError
from gateway.openai.sse import DONE, SSEDecoder, SSEProtocolError
from gateway.providers.base import JSON, CallContext, Completion, UpstreamRequest
from gateway.providers.common import (
    encode_body,
    load_json_object,
    sniff_media_type,
    upstream_status_error,
)
from gateway.providers.gemini.schema import clean_schema

__all__ = [
    "SKIP_SIGNATURE",
    "GeminiProvider",
    "GeminiStreamTranslator",
    "build_payload",
    "decode_call_id",
    "encode_call_id",
]

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"
SKIP_SIGNATURE: Final = "skip_thought_signature_validator"
MAX_CANDIDATES: Final = 8
MAX_SIGNATURE_CHARS: Final = 8192
MAX_GEMINI_ID_CHARS: Final = 128
_INT32_MAX: Final = 2**31 - 1
_MAX_PENALTY: Final = 1.999  # Gemini's penalties lie in [-2, 2): OpenAI's 2.0 is sent as this
_MIN_PRO_BUDGET: Final = 128  # Gemini 2.5 Pro cannot turn thinking off: its least budget

_SIG_SEP: Final = "__sig_"
_GEMINI_ID: Final = "gid_"
_GEMINI_ID_SHAPE = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_DATA_URL = re.compile(r"data:([^;,]+)((?:;[^;,]*)*?);base64,", re.IGNORECASE)
_FILES_API = re.compile(r"https://generativelanguage\.googleapis\.com/[^?#]*/files/[^/?#]+")
_HTTP = ("http://", "https://")
_MODEL_GENERATION = re.compile(r"gemini-(\d+)")

_JSON_HEADERS: Final = {"content-type": "application/json", "accept": "application/json"}
_STREAM_HEADERS: Final = {"content-type": "application/json", "accept": "text/event-stream"}

_AUDIO_MIME: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}
# What Gemini reads inline (its documented image, document, audio, video and text types).
_INLINE_MIME: Final = frozenset(
    (
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "application/json",
        "application/xml",
        "application/rtf",
        "application/x-javascript",
        "application/x-typescript",
        "application/x-python-code",
    )
)
_INLINE_FAMILIES: Final = frozenset(("audio", "video", "text"))
# Declared types whose bytes are checked: an image or PDF goes with the type its bytes
# show (Gemini refuses a mismatch, and clients often label a PNG as JPEG).
_SNIFFED_FAMILIES: Final = frozenset(("image",))
_SNIFFED_MIME: Final = frozenset(("application/pdf", "application/octet-stream"))
# Of those, the types with an unambiguous signature: bytes matching none are refused.
_SIGNED_MIME: Final = frozenset(
    ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")
)
_SNIFF_B64_CHARS: Final = 24  # 18 bytes: enough for every signature above
_MIME_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_EXTENSION_MIME: Final = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "html": "text/html",
    "htm": "text/html",
    "xml": "text/xml",
    "json": "application/json",
    "rtf": "text/rtf",
    "py": "text/x-python",
    "js": "text/javascript",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "aiff": "audio/aiff",
    "mp4": "video/mp4",
    "mpeg": "video/mpeg",
    "mov": "video/mov",
    "webm": "video/webm",
}

_THINKING_LEVELS: Final = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
    "max": "HIGH",
}
_THINKING_BUDGETS: Final = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}

_FINISH: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "content_filter",
}
# Finish reasons that mean the model's answer is broken: an error, not an empty success.
_FAILED: Final = frozenset(
    (
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
    )
)
# What reading an upstream JSON value of an unexpected shape can raise (orjson's
# JSONEncodeError is a TypeError): mapped to a 502, never a crash of the request.
_SHAPE_ERRORS: Final = (TypeError, ValueError, AttributeError, KeyError, IndexError)
# HTTP status -> the OpenAI error code D8 gives it (401 and 403 are the gateway's own
# key refused: `upstream_status_error` makes them 502 `upstream_auth_failed`).
_ERROR_CODES: Final = {
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}
# google.rpc status -> HTTP status, for in-stream errors that carry no usable code.
_RPC_STATUS: Final = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# --------------------------------------------------------------------------- tool-call ids


def _options(ctx: CallContext) -> GeminiOptions:
    return ctx.deployment.options_of(GeminiOptions)


def encode_call_id(head: str, signature: str | None) -> str:
    """The OpenAI tool-call id carrying `head` and, if it fits, the thought signature."""
    if not signature:
        return head
    try:  # Gemini sends standard base64; the altchars also admit the url-safe alphabet
        raw = base64.b64decode(signature + "=" * (-len(signature) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        return head
    packed = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if not packed or len(packed) > MAX_SIGNATURE_CHARS:
        return head
    return head + _SIG_SEP + packed


def decode_call_id(call_id: str) -> tuple[str | None, str | None]:
    """(Gemini's own call id or None, thought signature in standard base64 or None)."""
    head, sep, packed = call_id.partition(_SIG_SEP)
    signature = None
    if sep and packed and _B64URL.fullmatch(packed) is not None:
        try:
            raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if raw:
            signature = base64.b64encode(raw).decode()
    gemini_id = head[len(_GEMINI_ID) :] if head.startswith(_GEMINI_ID) else None
    return gemini_id or None, signature


def _call_head(gemini_id: object, request_id: str, choice: int, ordinal: int) -> str:
    """`gid_<id>` for a usable id from Gemini, else one derived from the request."""
    if (
        isinstance(gemini_id, str)
        and len(gemini_id) <= MAX_GEMINI_ID_CHARS
        and _GEMINI_ID_SHAPE.fullmatch(gemini_id) is not None
    ):
        return _GEMINI_ID + gemini_id
    key = f"{request_id}:{choice}:{ordinal}".encode()
    return "call_" + hashlib.blake2b(key, digest_size=12).hexdigest()


# --------------------------------------------------------------------------- request: messages


@dataclass(slots=True)
class _Call:
    """A tool call of the latest model turn, waiting for its result."""

    key: str | None  # the client's tool_call id; None for a legacy function_call
    name: str
    gemini_id: str | None
    path: str  # where the call is, for errors: messages[3].tool_calls[1]
    answered: bool = False


@dataclass(slots=True)
class _Turn:
    """One Content being built; results are kept apart to be put in call order."""

    role: str
    parts: list[JSON] = field(default_factory=list)
    results: list[tuple[int, JSON]] = field(default_factory=list)  # (call ordinal, part)

    def content(self) -> JSON:
        parts = [part for _, part in sorted(self.results, key=lambda r: r[0])] + self.parts
        if self.role == "user" and not self.results and not any("text" in p for p in parts):
            parts.append({"text": " "})  # E17: media alone is refused where a text is required
        return {"role": self.role, "parts": parts}


class _History:
    """Turns OpenAI messages into Gemini `contents` and `systemInstruction` parts."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.system: list[JSON] = []
        self.turns: list[_Turn] = []
        self.calls: list[_Call] = []  # calls of the latest model turn

    def add(self, msg: JSON, i: int) -> None:
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            self.system.extend({"text": t} for t in _texts(content) if t)
        elif role == "user":
            self._append("user", _user_parts(content, f"messages[{i}].content", self.ctx))
        elif role == "assistant":
            self._assistant(msg, i)
        elif role == "tool":
            self._result(msg.get("tool_call_id"), None, content, i)
        elif role == "function":
            self._result(None, msg.get("name"), content, i)

    def finish(self) -> tuple[list[JSON], list[JSON]]:
        """The contents and system parts; refuses calls left without a result."""
        self._check_answered()
        if not self.turns:
            raise InvalidRequest(
                "Gemini needs at least one user or assistant message with content.",
                param="messages",
            )
        return [turn.content() for turn in self.turns], self.system

    def _append(self, role: str, parts: list[JSON]) -> _Turn | None:
        """Add parts to the last turn if it has this role, else open a new turn.

        Opening a model turn first checks that every call of the previous one was
        answered, then forgets those calls.
        """
        if not parts:
            return None
        last = self.turns[-1] if self.turns else None
        if last is not None and last.role == role:
            last.parts.extend(parts)
            return last
        if role == "model":
            self._check_answered()
            self.calls = []
        turn = _Turn(role, list(parts))
        self.turns.append(turn)
        return turn

    def _check_answered(self) -> None:
        for call in self.calls:
            if not call.answered:
                raise InvalidRequest(
                    f"The tool call '{call.key or call.name}' has no tool message answering it.",
                    param=call.path + (".id" if call.key is not None else ".name"),
                )

    def _assistant(self, msg: JSON, i: int) -> None:
        parts: list[JSON] = [{"text": t} for t in _texts(msg.get("content")) if t]
        new_calls: list[_Call] = []
        tool_calls = msg.get("tool_calls") or []
        for k, call in enumerate(tool_calls):
            path = f"messages[{i}].tool_calls[{k}]"
            if call.get("type") != "function":
                raise InvalidRequest(
                    "Gemini supports only function tool calls.", param=path + ".type"
                )
            fn = call["function"]
            gemini_id, signature = decode_call_id(call["id"])
            part = _function_call(fn, gemini_id, signature, path + ".function")
            parts.append(part)
            new_calls.append(_Call(call["id"], fn["name"], gemini_id, path))
        legacy = msg.get("function_call")
        if legacy is not None:
            parts.append(_function_call(legacy, None, None, f"messages[{i}].function_call"))
            new_calls.append(_Call(None, legacy["name"], None, f"messages[{i}].function_call"))
        turn = self._append("model", parts)
        if not new_calls:
            return
        if turn is self.turns[0]:
            raise InvalidRequest(
                "Gemini needs a user message before the first assistant tool call.",
                param=f"messages[{i}].tool_calls" if tool_calls else f"messages[{i}].function_call",
            )
        self.calls.extend(new_calls)  # merged assistant messages answer as one turn

    def _result(self, call_id: object, name: object, content: object, i: int) -> None:
        """A tool (call_id) or legacy function (name) result for the latest model turn."""
        ordinal, call = self._match(call_id, name)
        if call is None:
            param = f"messages[{i}].tool_call_id" if call_id is not None else f"messages[{i}].name"
            raise InvalidRequest(
                "This tool message does not answer a tool call of the preceding assistant message.",
                param=param,
            )
        if call.answered:  # only by id: a legacy result matches unanswered calls only
            raise InvalidRequest(
                f"The tool call '{call.key}' is answered twice.",
                param=f"messages[{i}].tool_call_id",
            )
        call.answered = True
        response: JSON = {"name": call.name, "response": {"output": _tool_output(content)}}
        if call.gemini_id is not None:
            response["id"] = call.gemini_id
        part = {"functionResponse": response}
        last = self.turns[-1] if self.turns else None
        if last is None or last.role != "user":
            last = _Turn("user")
            self.turns.append(last)
        last.results.append((ordinal, part))

    def _match(self, call_id: object, name: object) -> tuple[int, _Call | None]:
        """The pending call a result answers (by id; by name for legacy functions)."""
        for ordinal, call in enumerate(self.calls):
            if call_id is not None and call.key == call_id:
                return ordinal, call
        if call_id is None:
            for ordinal, call in enumerate(self.calls):
                if call.key is None and call.name == name and not call.answered:
                    return ordinal, call
        return -1, None


def _texts(content: object) -> list[str]:
    """The text of a string or of text (and refusal) parts; other parts are not text."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    out = []
    for part in content:
        if part.get("type") == "text":
            out.append(part["text"])
        elif part.get("type") == "refusal":
            out.append(part["refusal"])
    return out


def _function_call(fn: JSON, gemini_id: str | None, signature: str | None, path: str) -> JSON:
    """A `functionCall` part from an OpenAI call `{name, arguments}`."""
    arguments = fn.get("arguments") or ""
    if not arguments.strip():
        args: object = {}
    else:
        try:
            args = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "The tool call arguments are not valid JSON.", param=path + ".arguments"
            ) from None
    if not isinstance(args, dict):
        raise InvalidRequest(
            "Gemini needs tool call arguments that are a JSON object.", param=path + ".arguments"
        )
    call: JSON = {"name": fn["name"], "args": args}
    if gemini_id is not None:
        call["id"] = gemini_id
    part: JSON = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _tool_output(content: object) -> object:
    """A tool result's value: JSON objects and arrays parsed, anything else as text."""
    text = "".join(_texts(content))
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, dict | list):
            return value
    return text


def _sniff_b64(data: str) -> str | None:
    """`_sniff` of the first bytes of base64 `data` (standard or url-safe alphabet)."""
    head = data[:_SNIFF_B64_CHARS].replace("-", "+").replace("_", "/")
    try:
        raw = binascii.a2b_base64(head[: len(head) - len(head) % 4])
    except (binascii.Error, ValueError):
        return None
    return sniff_media_type(raw)


def _inline(mime: str, data: str, path: str) -> JSON:
    """An `inlineData` part, refusing what Gemini cannot read (a 400 naming the part).

    Images and PDFs go with the type their bytes show, whatever they were declared as.
    """
    mime = mime.partition(";")[0].strip().lower()
    mime = _MIME_ALIASES.get(mime, mime)
    if not data:
        raise InvalidRequest("The media data is empty.", param=path)
    if mime.partition("/")[0] in _SNIFFED_FAMILIES or mime in _SNIFFED_MIME:
        actual = _sniff_b64(data)
        if actual is not None:
            mime = actual
        elif mime in _SIGNED_MIME:
            raise InvalidRequest(
                f"The data is not what its type '{mime}' says: its bytes are not a PNG, JPEG, "
                "GIF, WebP, HEIC or HEIF image nor a PDF.",
                param=path,
            )
    if mime not in _INLINE_MIME and mime.partition("/")[0] not in _INLINE_FAMILIES:
        raise InvalidRequest(f"Gemini does not accept media of type '{mime}'.", param=path)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _user_parts(content: object, path: str, ctx: CallContext) -> list[JSON]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[JSON] = []
    for j, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type")
        where = f"{path}[{j}]"
        if kind == "text":
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_url_part(part["image_url"]["url"], where + ".image_url.url", ctx))
        elif kind == "input_audio":
            audio = part["input_audio"]
            mime = _AUDIO_MIME[audio["format"]]
            parts.append(_inline(mime, audio["data"], where + ".input_audio.data"))
        elif kind == "file":
            parts.append(_file_part(part["file"], where + ".file", ctx))
    return parts


def _url_part(url: str, path: str, ctx: CallContext, mime: str | None = None) -> JSON:
    """A data, Files-API, gs:// or http(s) URL as an `inlineData` / `fileData` part."""
    match = _DATA_URL.match(url)
    if match is not None:
        return _inline(match.group(1), url[match.end() :], path)
    if url.startswith("gs://") or _FILES_API.fullmatch(url) is not None:
        file_data: JSON = {"fileUri": url}
        if mime is not None:
            file_data["mimeType"] = mime
        return {"fileData": file_data}
    if url[:8].lower().startswith(_HTTP):
        if not _options(ctx).fetch_media:
            raise InvalidRequest(
                "Gemini needs the bytes of media given by URL, and fetching them is off "
                "for this model: send a base64 data URL instead.",
                param=path,
            )
        media = ctx.media.get(url)
        if media is None:
            raise InvalidRequest("The media at this URL could not be fetched.", param=path)
        return _inline(mime or media.mime_type, base64.b64encode(media.data).decode(), path)
    raise InvalidRequest("Expected a data URL or an http(s) URL.", param=path)


def _file_part(file: JSON, path: str, ctx: CallContext) -> JSON:
    """`file` content: file_data (data URL, URL or raw base64) or a Files-API file_id."""
    mime = _EXTENSION_MIME.get(str(file.get("filename") or "").rpartition(".")[2].lower())
    data = file.get("file_data")
    if isinstance(data, str):
        where = path + ".file_data"
        if data[:5].lower() == "data:" or data[:8].lower().startswith(_HTTP) or data[:5] == "gs://":
            return _url_part(data, where, ctx, mime)
        if mime is None:
            mime = _sniff_b64(data)
        if mime is None:
            raise InvalidRequest(
                "The file's type is unknown: send file_data as a data URL "
                "(data:<mime>;base64,...) or give a filename with an extension.",
                param=where,
            )
        return _inline(mime, data, where)
    file_id = file.get("file_id")
    if isinstance(file_id, str) and (
        file_id.startswith("gs://") or _FILES_API.fullmatch(file_id) is not None
    ):
        return _url_part(file_id, path + ".file_id", ctx, mime)
    raise InvalidRequest(
        "OpenAI file ids cannot be used with Gemini: send file_data, or a Gemini "
        "Files-API or gs:// URI as file_id.",
        param=path + ".file_id",
    )


# --------------------------------------------------------------------------- request: tools


def _declaration(fn: JSON, path: str) -> JSON:
    """A `functionDeclaration` from an OpenAI function definition."""
    name = fn["name"]
    if not (name[0].isalpha() or name[0] == "_"):
        raise InvalidRequest(
            "Gemini function names must start with a letter or an underscore.",
            param=path + ".name",
        )
    decl: JSON = {"name": name}
    description = fn.get("description")
    if description:
        decl["description"] = description
    params = fn.get("parameters")
    if params:
        root_type = params.get("type", "object")
        if root_type != "object":
            raise InvalidRequest(
                "Function parameters must be a JSON Schema of type 'object'.",
                param=path + ".parameters",
            )
        schema = clean_schema(params)
        decl["parametersJsonSchema"] = schema if "type" in schema else {"type": "object", **schema}
    return decl


def _declarations(body: JSON) -> list[JSON]:
    specs: list[tuple[JSON, str]] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != "function":
            raise InvalidRequest("Gemini supports only function tools.", param=f"tools[{i}].type")
        specs.append((tool["function"], f"tools[{i}].function"))
    specs.extend((fn, f"functions[{i}]") for i, fn in enumerate(body.get("functions") or ()))
    out: list[JSON] = []
    seen: set[str] = set()
    for fn, path in specs:
        if fn["name"] in seen:
            raise InvalidRequest(
                "Gemini refuses two functions with one name.", param=path + ".name"
            )
        seen.add(fn["name"])
        out.append(_declaration(fn, path))
    return out


def _tool_config(body: JSON, decls: list[JSON]) -> tuple[list[JSON], JSON | None]:
    """The declarations to send and the `functionCallingConfig`, from the tool choice."""
    choice = body.get("tool_choice")
    if choice is None:
        choice = body.get("function_call")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": choice}
    if choice is None:
        return decls, None
    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]
        return decls, {"mode": mode}
    kind = choice.get("type")
    if kind == "function":
        name = choice["function"]["name"]
        return decls, {"mode": "ANY", "allowedFunctionNames": [name]}
    if kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names = set()
        for k, ref in enumerate(allowed["tools"]):
            if ref.get("type") != "function":
                raise InvalidRequest(
                    "Gemini supports only function tools.",
                    param=f"tool_choice.allowed_tools.tools[{k}].type",
                )
            names.add(ref["function"]["name"])
        kept = [d for d in decls if d["name"] in names]
        if not kept and allowed["mode"] == "required":
            raise InvalidRequest(
                "'required' needs at least one allowed tool.",
                param="tool_choice.allowed_tools.tools",
            )
        return kept, {"mode": "ANY" if allowed["mode"] == "required" else "AUTO"}
    raise InvalidRequest("Gemini supports only function tools.", param="tool_choice.type")


# --------------------------------------------------------------------------- request: config


def _uses_thinking_levels(model: str) -> bool:
    """Gemini 3 and later take `thinkingLevel`; older models only `thinkingBudget`."""
    match = _MODEL_GENERATION.search(model)
    return match is not None and int(match.group(1)) >= 3


def _int32(value: int) -> int:
    """`value` folded into a signed 32-bit integer (identity inside that range)."""
    return (value + 2**31) % 2**32 - 2**31


def _max_output_tokens(ctx: CallContext) -> int | None:
    """The deployment's `max_output_tokens` cap, if set to a positive int32 (config checks it)."""
    cap = ctx.deployment.max_output_tokens
    if isinstance(cap, int) and not isinstance(cap, bool) and 0 < cap <= _INT32_MAX:
        return cap
    return None


def _generation_config(body: JSON, ctx: CallContext) -> JSON:
    config: JSON = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(src) is not None:
            config[dst] = body[src]
    top_k = body.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 0 < top_k <= _INT32_MAX:
            raise InvalidRequest("top_k must be a positive integer.", param="top_k")
        config["topK"] = top_k
    field = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    max_tokens = body.get(field)
    cap = _max_output_tokens(ctx)
    if cap is not None:
        max_tokens = cap if max_tokens is None else min(max_tokens, cap)
    if max_tokens is not None:
        if max_tokens > _INT32_MAX:
            raise InvalidRequest(f"{field} must be at most {_INT32_MAX} for Gemini.", param=field)
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    stops = [s for s in stops if s]
    if stops:
        config["stopSequences"] = stops
    n = body.get("n")
    if n is not None and n > 1:
        if n > MAX_CANDIDATES:
            raise InvalidRequest(
                f"Gemini returns at most {MAX_CANDIDATES} choices per request.", param="n"
            )
        config["candidateCount"] = n
    if body.get("seed") is not None:
        config["seed"] = _int32(body["seed"])
    for src, dst in (
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(src):
            config[dst] = min(body[src], _MAX_PENALTY)
    if body.get("logprobs"):
        config["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            config["logprobs"] = body["top_logprobs"]
    _response_format(body.get("response_format"), config)
    thinking = _thinking_config(body, ctx)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _response_format(fmt: JSON | None, config: JSON) -> None:
    if fmt is None or fmt.get("type") == "text":
        return
    config["responseMimeType"] = "application/json"
    if fmt.get("type") == "json_schema":
        schema = fmt["json_schema"].get("schema")
        if schema is not None:
            config["responseJsonSchema"] = clean_schema(schema)


def _thinking_config(body: JSON, ctx: CallContext) -> JSON:
    config: JSON = {}
    effort = body.get("reasoning_effort")
    if effort is not None:
        if _uses_thinking_levels(ctx.deployment.upstream_model):
            config["thinkingLevel"] = _THINKING_LEVELS[effort]
        else:
            budget = _THINKING_BUDGETS[effort]
            if budget == 0 and "2.5-pro" in ctx.deployment.upstream_model:
                budget = _MIN_PRO_BUDGET
            config["thinkingBudget"] = budget
    if _options(ctx).reasoning_output:
        config["includeThoughts"] = True
    return config


def _refuse_unsupported(body: JSON) -> None:
    """Fields Gemini cannot honour: a 400 naming the field.

    Audio output needs `audio` (the validator requires it with modality "audio").
    """
    if body.get("audio") is not None:
        raise InvalidRequest("Audio output is not supported for Gemini models.", param="audio")


def _add_signature_sentinels(contents: list[JSON]) -> None:
    """Give the first call of each model Content the bypass sentinel if it has no signature.

    Gemini 3 checks the first functionCall part of every step (parallel calls carry a
    signature on the first only); later calls are left as they are.
    """
    for content in contents:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and "thoughtSignature" not in first:
            first["thoughtSignature"] = SKIP_SIGNATURE


def build_payload(body: JSON, ctx: CallContext) -> JSON:
    """The generateContent request body for a validated OpenAI request body."""
    _refuse_unsupported(body)
    history = _History(ctx)
    for i, msg in enumerate(body["messages"]):
        history.add(msg, i)
    contents, system = history.finish()
    _add_signature_sentinels(contents)
    payload: JSON = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": system}
    decls, calling = _tool_config(body, _declarations(body))
    if decls:
        payload["tools"] = [{"functionDeclarations": decls}]
        if calling is not None:
            payload["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body, ctx)
    if config:
        payload["generationConfig"] = config
    return payload


# --------------------------------------------------------------------------- responses


def _openai_usage(meta: JSON) -> JSON:
    """OpenAI usage from Gemini `usageMetadata` (wire-formats.md D6)."""
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(meta, "cachedContentTokenCount"),
            "audio_tokens": _modality(meta.get("promptTokensDetails"), "AUDIO"),
        },
        "completion_tokens_details": {
            "reasoning_tokens": thoughts,
            "audio_tokens": _modality(meta.get("candidatesTokensDetails"), "AUDIO"),
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _count(meta: JSON, key: str) -> int:
    """A token count: Gemini's are int32, so anything else (negative, huge, not an int) is 0."""
    value = meta.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT32_MAX:
        return value
    return 0


def _modality(details: object, modality: str) -> int:
    if not isinstance(details, list):
        return 0
    return sum(
        _count(d, "tokenCount")
        for d in details
        if isinstance(d, dict) and d.get("modality") == modality
    )


def _logprobs(result: object) -> JSON | None:
    """OpenAI `logprobs` from a candidate's `logprobsResult`."""
    if not isinstance(result, dict):
        return None
    chosen = _list(result.get("chosenCandidates"))
    tops = _list(result.get("topCandidates"))
    content = []
    for k, token in enumerate(chosen):
        if not isinstance(token, dict):
            continue
        alternatives = tops[k] if k < len(tops) and isinstance(tops[k], dict) else {}
        top = _list(alternatives.get("candidates"))
        entry = _token_logprob(token)
        entry["top_logprobs"] = [_token_logprob(t) for t in top if isinstance(t, dict)]
        content.append(entry)
    return {"content": content, "refusal": None}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _token_logprob(token: JSON) -> JSON:
    text = token.get("token")
    text = text if isinstance(text, str) else ""
    logprob = token.get("logProbability")
    if not isinstance(logprob, int | float) or isinstance(logprob, bool):
        logprob = 0.0
    return {
        "token": text,
        "logprob": float(logprob),
        "bytes": list(text.encode()),
    }


def _finish_reason(reason: str, saw_tool_call: bool) -> str:
    """OpenAI finish_reason for a (non-failure) Gemini finishReason (D5, E1)."""
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if saw_tool_call and mapped == "stop" else mapped


def _failed_finish(reason: str, candidate: JSON) -> UpstreamError:
    message = candidate.get("finishMessage")
    detail = f": {message}" if isinstance(message, str) and message else "."
    return UpstreamError(
        f"Gemini stopped without a usable answer ({reason}){detail}",
        code="upstream_" + reason.lower(),
    )


def _blocked(obj: JSON) -> bool:
    """No candidates because the prompt itself was blocked."""
    feedback = obj.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


@dataclass(slots=True)
class _Parts:
    """A candidate's parts sorted into what OpenAI reports."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[JSON] = field(default_factory=list)


class _Builder:
    """Per-request context for turning Gemini parts into OpenAI pieces."""

    __slots__ = ("model", "reasoning", "request_id")

    def __init__(self, ctx: CallContext) -> None:
        self.request_id = ctx.request_id
        self.model = ctx.deployment.model_id
        self.reasoning = _options(ctx).reasoning_output

    def tool_call(self, part: JSON, choice: int, ordinal: int) -> JSON:
        fn = part["functionCall"]
        head = _call_head(fn.get("id"), self.request_id, choice, ordinal)
        signature = part.get("thoughtSignature")
        args = fn.get("args")
        name = fn.get("name")
        return {
            "id": encode_call_id(head, signature if isinstance(signature, str) else None),
            "type": "function",
            "function": {
                "name": name if isinstance(name, str) else "",
                "arguments": orjson.dumps(args if isinstance(args, dict) else {}).decode(),
            },
        }


def _parts(candidate: JSON) -> list[JSON]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _choice_index(candidate: JSON, position: int) -> int:
    index = candidate.get("index", position)
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _completion_choice(builder: _Builder, candidate: JSON, position: int) -> JSON:
    index = _choice_index(candidate, position)
    sorted_parts = _Parts()
    for part in _parts(candidate):
        if "functionCall" in part and isinstance(part["functionCall"], dict):
            call = builder.tool_call(part, index, len(sorted_parts.calls))
            sorted_parts.calls.append(call)
        elif isinstance(part.get("text"), str):
            (sorted_parts.reasoning if part.get("thought") else sorted_parts.text).append(
                part["text"]
            )
    reason = candidate.get("finishReason")
    reason = reason if isinstance(reason, str) else "STOP"
    if reason in _FAILED:
        raise _failed_finish(reason, candidate)
    message: JSON = {
        "role": "assistant",
        "content": "".join(sorted_parts.text)
        if sorted_parts.text or not sorted_parts.calls
        else None,
        "refusal": None,
        "annotations": [],
    }
    if sorted_parts.calls:
        message["tool_calls"] = sorted_parts.calls
    if builder.reasoning and sorted_parts.reasoning:
        message["reasoning_content"] = "".join(sorted_parts.reasoning)
    return {
        "index": index,
        "message": message,
        "logprobs": _logprobs(candidate.get("logprobsResult")),
        "finish_reason": _finish_reason(reason, bool(sorted_parts.calls)),
    }


def _blocked_choice() -> JSON:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "content_filter",
    }


# --------------------------------------------------------------------------- errors


def _error_parts(obj: object) -> tuple[str, str | None, list[Any], int | None]:
    """message, rpc status, details and code of a Gemini error body (object or array)."""
    if isinstance(obj, list) and obj:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, str):
        return err, None, [], None
    if not isinstance(err, dict):
        return "Gemini reported an error.", None, [], None
    message = err.get("message")
    status = err.get("status")
    details = err.get("details")
    code = err.get("code")
    return (
        message if isinstance(message, str) and message else "Gemini reported an error.",
        status if isinstance(status, str) else None,
        details if isinstance(details, list) else [],
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def _retry_delay(details: list[Any]) -> str | None:
    """`retry-after` seconds from a google.rpc.RetryInfo detail ("37s", "1.5s")."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    return None
                if math.isfinite(seconds) and seconds >= 0:
                    return str(max(1, math.ceil(seconds)))
    return None


def _error(obj: object, status: int | None, headers: Mapping[str, str] | None) -> GatewayError:
    """Map a Gemini error body to the gateway's error tree (wire-formats.md C7, D8)."""
    message, rpc, details, code = _error_parts(obj)
    if status is None:
        status = code if code is not None and 400 <= code < 600 else _RPC_STATUS.get(rpc or "", 502)
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
        status = 401  # Gemini says 400; it is the gateway's key being refused
    # D8: OpenAI's codes where it has one, else the google.rpc status (UNAVAILABLE, ...).
    error_code = _ERROR_CODES.get(status, rpc)
    if status == 400 and "exceeds the maximum number of tokens" in message:
        error_code = "context_length_exceeded"
    kept = dict(headers or {})
    if status == 429 and not any(k.lower() == "retry-after" for k in kept):
        delay = _retry_delay(details)
        if delay is not None:
            kept["retry-after"] = delay
    return upstream_status_error(status, "Gemini: " + message, code=error_code, headers=kept)


# --------------------------------------------------------------------------- the provider


class GeminiProvider:
    """Provider for `kind = "gemini"`: the Gemini API's generateContent."""

    kind = "gemini"

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        """http(s) URLs of image and file parts, unless `fetch_media` is off."""
        if not _options(ctx).fetch_media:
            return []
        urls: list[str] = []
        for msg in body["messages"]:
            content = msg.get("content")
            if msg.get("role") != "user" or not isinstance(content, list):
                continue
            for part in content:
                url = _part_url(part)
                if url is not None and url not in urls:
                    urls.append(url)
        return urls

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        payload = build_payload(body, ctx)
        model = dep.upstream_model.removeprefix("models/")
        action = ":streamGenerateContent?alt=sse" if ctx.stream else ":generateContent"
        base = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        headers = dict(_STREAM_HEADERS if ctx.stream else _JSON_HEADERS)
        if dep.api_key:
            headers["x-goog-api-key"] = dep.api_key
        headers.update(dep.headers)
        return UpstreamRequest(
            url=f"{base}/models/{quote(model, safe='-._~')}{action}",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        try:
            return _completion(load_json_object(body), ctx)
        except _SHAPE_ERRORS:
            raise UpstreamError("Gemini returned a response of an unexpected shape.") from None

    def new_stream_translator(self, ctx: CallContext) -> GeminiStreamTranslator:
        return GeminiStreamTranslator(ctx)

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace").strip()
            obj = {"error": {"message": text or f"HTTP {status}"}}
        return _error(obj, status, headers)


def _completion(obj: JSON, ctx: CallContext) -> Completion:
    """The chat.completion for a generateContent response object."""
    if "error" in obj and not obj.get("candidates"):
        raise _error(obj, None, None)
    builder = _Builder(ctx)
    candidates = obj.get("candidates")
    candidates = (
        [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
    )
    if candidates:
        choices = [_completion_choice(builder, c, k) for k, c in enumerate(candidates)]
        choices.sort(key=lambda c: c["index"])
    elif _blocked(obj):
        choices = [_blocked_choice()]
    else:
        raise UpstreamError("Gemini returned no candidates.")
    meta = obj.get("usageMetadata")
    usage = _openai_usage(meta) if isinstance(meta, dict) else None
    completion = {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": builder.model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }
    return Completion(body=orjson.dumps(completion), usage=usage)


def _part_url(part: JSON) -> str | None:
    """The http(s) URL a content part needs fetched, if any (Files-API URIs excepted)."""
    kind = part.get("type")
    if kind == "image_url":
        url = part["image_url"]["url"]
    elif kind == "file":
        url = part["file"].get("file_data")
    else:
        return None
    if (
        isinstance(url, str)
        and url[:8].lower().startswith(_HTTP)
        and _FILES_API.fullmatch(url) is None
    ):
        return url
    return None


# --------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class _ChoiceState:
    calls: int = 0  # tool calls emitted so far: the next call's index
    finished: bool = False


class GeminiStreamTranslator:
    """Gemini SSE (CRLF framed, no [DONE]) in, OpenAI chat.completion.chunk SSE out."""

    __slots__ = (
        "_builder",
        "_choices",
        "_decoder",
        "_head",
        "_include_usage",
        "_meta",
        "_tail",
        "_usage",
        "done",
        "error",
    )

    def __init__(self, ctx: CallContext) -> None:
        self._decoder = SSEDecoder()
        self._builder = _Builder(ctx)
        self._include_usage = ctx.include_usage
        self._head = (
            b'data: {"id":'
            + orjson.dumps(ctx.request_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(ctx.created).encode()
            + b',"model":'
            + orjson.dumps(ctx.deployment.model_id)
            + b',"system_fingerprint":null,"choices":['
        )
        self._tail = b'],"usage":null}\n\n' if ctx.include_usage else b"]}\n\n"
        self._choices: dict[int, _ChoiceState] = {}
        self._meta: JSON | None = None  # the last usageMetadata seen
        self._usage: JSON | None = None  # its OpenAI form, once asked for
        self.error: GatewayError | None = None
        # Gemini has no end marker: the stream ends at EOF, and usage may still follow a
        # finishReason, so the relay always reads to the end.
        self.done = False

    @property
    def usage(self) -> JSON | None:
        """The last usage Gemini reported, in OpenAI's shape (mapped on first read)."""
        if self._usage is None and self._meta is not None:
            self._usage = _openai_usage(self._meta)
        return self._usage

    @usage.setter
    def usage(self, value: JSON | None) -> None:
        self._usage = value
        self._meta = None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self.error is not None:
            return b""
        try:
            events = self._decoder.feed(data)
        except SSEProtocolError as e:  # an oversized line or event
            self._fail(UpstreamError(f"Gemini sent a malformed stream ({e})."), out)
            return b"".join(out)
        for event in events:
            if self.error is not None:
                break
            try:
                self._event(event.data, out)
            except _SHAPE_ERRORS:
                self._fail(UpstreamError("Gemini sent a stream event of an unexpected shape."), out)
        return b"".join(out)

    def close(self) -> bytes:
        if self.error is not None:
            return b""
        states = self._choices.values()
        if not states or not all(s.finished for s in states) or self._decoder.pending:
            self.error = UpstreamError(
                "The upstream stream ended before the response was complete.",
                code="upstream_stream_truncated",
            )
            return self.error.sse_event()
        if self._include_usage and self.usage is not None:
            return self._head + b'],"usage":' + orjson.dumps(self.usage) + b"}\n\n" + DONE
        return DONE

    def _chunk(
        self,
        index: int,
        delta: JSON,
        finish_reason: str | None = None,
        logprobs: JSON | None = None,
    ) -> bytes:
        return b"".join(
            (
                self._head,
                b'{"index":%d,"delta":' % index,
                orjson.dumps(delta),
                b',"logprobs":',
                orjson.dumps(logprobs),
                b',"finish_reason":',
                orjson.dumps(finish_reason),
                b"}",
                self._tail,
            )
        )

    def _fail(self, error: GatewayError, out: list[bytes]) -> None:
        self.error = error
        out.append(error.sse_event())

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self._fail(UpstreamError("Gemini sent a stream event that is not a JSON object."), out)
            return
        if "error" in obj:
            self._fail(_error(obj, None, None), out)
            return
        meta = obj.get("usageMetadata")
        if isinstance(meta, dict):
            self._meta = meta  # running totals: the last one wins (E10), mapped when read
            self._usage = None
        candidates = obj.get("candidates")
        if isinstance(candidates, list) and candidates:
            for position, candidate in enumerate(candidates):
                if isinstance(candidate, dict) and self.error is None:
                    self._candidate(candidate, position, out)
        elif _blocked(obj) and not self._choices:
            self._state(0, out).finished = True
            out.append(self._chunk(0, {}, "content_filter"))

    def _state(self, index: int, out: list[bytes]) -> _ChoiceState:
        """The choice's state; its first appearance sends the role chunk."""
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _ChoiceState()
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        return state

    def _candidate(self, candidate: JSON, position: int, out: list[bytes]) -> None:
        index = _choice_index(candidate, position)
        state = self._state(index, out)
        if state.finished:
            return
        logprobs = _logprobs(candidate.get("logprobsResult"))
        kind = ""  # "content" or "reasoning_content" while text is being gathered
        pieces: list[str] = []
        for part in _parts(candidate):
            if "functionCall" in part and isinstance(part["functionCall"], dict):
                if pieces:
                    out.append(self._chunk(index, {kind: "".join(pieces)}, None, logprobs))
                    pieces, logprobs = [], None
                call = self._builder.tool_call(part, index, state.calls)
                call["index"] = state.calls
                state.calls += 1
                out.append(self._chunk(index, {"tool_calls": [call]}))
                continue
            text = part.get("text")
            if not isinstance(text, str) or not text:
                continue
            if part.get("thought"):
                if not self._builder.reasoning:
                    continue
                part_kind = "reasoning_content"
            else:
                part_kind = "content"
            if pieces and part_kind != kind:
                out.append(self._chunk(index, {kind: "".join(pieces)}, None, logprobs))
                pieces, logprobs = [], None
            kind = part_kind
            pieces.append(text)
        if pieces:
            out.append(self._chunk(index, {kind: "".join(pieces)}, None, logprobs))
        reason = candidate.get("finishReason")
        if not isinstance(reason, str) or not reason:
            return
        if reason in _FAILED:
            self._fail(_failed_finish(reason, candidate), out)
            return
        state.finished = True
        out.append(self._chunk(index, {}, _finish_reason(reason, state.calls > 0)))
