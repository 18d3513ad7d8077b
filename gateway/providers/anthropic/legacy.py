"""Anthropic Messages behind the OpenAI chat-completions surface (wire-formats.md B, D).

The request is rebuilt from scratch (Anthropic rejects unknown fields), the answer
and the stream are translated back into OpenAI's shapes. Everything here is pure.

Request mapping (OpenAI -> Anthropic):
- `system` and `developer` messages -> top-level `system` text blocks, in order.
- `max_tokens` is always set: `max_completion_tokens`, else `max_tokens`, else the
  deployment option `default_max_tokens` (4096); never above the option
  `max_output_tokens` (the model's output limit) when it is set.
- Consecutive same-role turns are merged; `tool` (and legacy `function`) messages
  become `tool_result` blocks in the user turn right after the assistant turn that
  called them, results first, then any user content that follows. A result for a
  call that is not in the previous assistant turn, or a call left without a result,
  is a 400 (OpenAI refuses both as well). Text blocks that are empty or only
  whitespace are never sent (E6); a turn left with nothing is dropped, and trailing
  whitespace is cut from a final assistant (prefill) turn, which Anthropic refuses.
- Assistant `tool_calls` -> `tool_use` blocks (arguments parsed; "" -> {}); an
  assistant `refusal` (part or field) is replayed as text.
  Tool-call ids outside `[a-zA-Z0-9_-]` (or longer than 64) are rewritten
  deterministically, the same way for `tool_use.id` and `tool_result.tool_use_id`.
  An id that an earlier assistant turn already used (clients that number calls per
  turn: call_0, call_1, ...) is rewritten too, from the id and the turn's position,
  on the tool_use and on its results, since Anthropic needs unique ids.
- Images: data URL -> base64 source (jpeg, png, gif, webp; a PDF -> `document`),
  http(s) URL -> url source, or base64 of the bytes the gateway fetched when the
  option `fetch_media` is on. `file.file_data` (a data URL, or bare base64 of a PDF)
  -> `document` (PDF as base64, text/plain as a text source, images as images).
  The media type sent is the one the bytes show (Anthropic refuses a mismatch).
- `stop` -> `stop_sequences` (whitespace-only strings dropped); `user` or
  `safety_identifier` -> `metadata.user_id` (left out when it looks like an email
  address or phone number, which Anthropic asks never to receive); `top_k` (an
  extension) -> `top_k`; `service_tier: auto` -> `auto`.
- `tools` (and legacy `functions`) -> `tools` with `input_schema` (absent parameters
  -> an empty object schema); `strict` is sent only with `structured_output =
  "native"` (older models reject it). A history with tool calls but no `tools`
  gets minimal definitions of the tools it used and `tool_choice: none`, because
  Anthropic refuses tool blocks without tool definitions.
- `tool_choice`: auto -> auto, none -> none, required -> any, a named function ->
  tool, `allowed_tools` -> the listed tools only with auto/any; legacy
  `function_call` likewise; `parallel_tool_calls: false` ->
  `disable_parallel_tool_use` (with `auto` when no choice was given). A choice
  that leaves no tools to send (no `tools`, `tools: []`, `allowed_tools` listing
  none of them in mode auto) is not sent: Anthropic refuses a `tool_choice`
  without tools.
- `temperature` above 1 is clamped to 1: Anthropic's range is 0-1 and a portable
  body should not fail on a vendor's narrower range. With both `temperature` and
  `top_p`, `top_p` is dropped (newer models refuse the pair, E12).
- `reasoning_effort` -> `thinking: {type: enabled, budget_tokens}` with budgets
  minimal 1024, low 2048, medium 4096, high 8192, xhigh 16384, max 32768 tokens;
  `none` -> no thinking. The budget is capped below the client's max tokens (no
  thinking when that leaves less than 1024); without a client maximum,
  `max_tokens` becomes the budget plus the default. `max_output_tokens` caps that
  sum too: the budget shrinks to fit (keeping the default for the answer when the
  client gave no maximum), and thinking is off when less than 1024 remains. With
  thinking on, forced tool choices (any/tool) are sent as auto (E13),
  `temperature` and `top_k` are dropped and `top_p` is kept only within 0.95-1, as
  Anthropic requires. Thinking is left off when the last assistant turn called
  tools (Anthropic then requires that turn's signed thinking blocks, which
  OpenAI's format cannot carry) and when the conversation ends with an assistant
  turn (a prefill, which extended thinking does not allow).
- `response_format` json_schema / json_object: a forced tool named
  `json_tool_call` (`json_tool_call_value` wraps a schema whose root is not an
  object as `{"value": schema}`), its input unwrapped into `message.content` (and
  streamed as `delta.content`) with `finish_reason: stop`. With client tools the
  choice is `any` (a real tool or the JSON answer); with thinking it is not forced.
  These two names are reserved: client tools may not use them. With the option
  `structured_output = "native"`, a json_schema goes to `output_config.format`
  instead (json_object has no native form and keeps the tool). When the JSON tool
  answers, its JSON is the whole `content`: text written beside it (possible when
  thinking leaves the tool unforced) is dropped, and a stream holds text back
  until the end to do the same (see `AnthropicStreamTranslator`). A wrapped answer
  cut short by max_tokens never shows the wrapper. With `tool_choice: required`
  the JSON answer also counts as a tool call.

Refused with a 400 naming the field: `n` > 1, `logprobs: true`, audio output
(`modalities` with "audio"), `input_audio` parts, `file_id`, media types Anthropic
does not read, invalid base64, custom tools and custom tool calls, duplicate tool
names, parameters whose root is not an object, tool arguments that are not a JSON
object, duplicate tool-call ids within one assistant turn, unmatched tool
calls/results, the reserved tool names, `allowed_tools` in mode required that lists
none of the tools, a conversation with no user or assistant content.

Dropped (no Anthropic equivalent): `presence_penalty`, `frequency_penalty`,
`logit_bias`, `seed`, `logprobs: false`, `metadata`, `store`, `prediction`,
`web_search_options`, `prompt_cache_key`, `verbosity`, `service_tier` other than
auto, `audio` (without the audio modality), `stream_options` (handled by the
gateway), message `name`, image `detail`, `file.filename` (kept as the document
title), `parallel_tool_calls: true`, and any unknown field.

Response mapping: `model` is the client's model id (as for Gemini), not Anthropic's
model name; text blocks are concatenated into `content` (null when there are
only tool calls); `tool_use` -> `tool_calls` with compact JSON arguments; thinking
-> `reasoning_content` only with the option `reasoning_output`; stop reasons per D5
(end_turn, stop_sequence, pause_turn -> stop; max_tokens and
model_context_window_exceeded -> length; tool_use -> tool_calls; refusal ->
content_filter); usage per D6 (`prompt_tokens` = input + cache reads + cache
writes, `cached_tokens` = cache reads). The stream follows D7 (see
`AnthropicStreamTranslator`).

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.config import AnthropicOptions
from gateway.errors import GatewayError, InvalidRequest, UpstreamError
from gateway.openai.sse import DONE, SSEDecoder, SSEProtocolError
from gateway.providers.base import JSON, CallContext, Completion, UpstreamRequest
from gateway.providers.common import (
    encode_body,
    load_json_object,
    sniff_media_type,
    upstream_status_error,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "JSON_TOOL",
    "JSON_VALUE_TOOL",
    "THINKING_BUDGETS",
    "AnthropicProvider",
    "AnthropicStreamTranslator",
    "translate_request",
]

DEFAULT_BASE_URL: Final = "https://api.anthropic.com/v1"
DEFAULT_API_VERSION: Final = "2023-06-01"
DEFAULT_MAX_TOKENS: Final = 4096

JSON_TOOL: Final = "json_tool_call"  # response_format emulation, object schema
JSON_VALUE_TOOL: Final = "json_tool_call_value"  # the same, schema wrapped in {"value": ...}
_RESERVED_TOOLS: Final = frozenset((JSON_TOOL, JSON_VALUE_TOOL))

THINKING_BUDGETS: Final[Mapping[str, int]] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 4096,
    "high": 8192,
    "xhigh": 16384,
    "max": 32768,
}
_MIN_THINKING_BUDGET: Final = 1024

_IMAGE_TYPES: Final = frozenset(("image/jpeg", "image/png", "image/gif", "image/webp"))
_MIME_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_PDF: Final = "application/pdf"
_TEXT: Final = "text/plain"
_OCTET_STREAM: Final = "application/octet-stream"
_DATA_URL: Final = re.compile(r"data:([a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+)((?:;[^;,]*)*);base64,")
_SAFE_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_UNSAFE_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE: Final = re.compile(r"\+?[0-9 ().-]{7,}")
_MAX_USER_ID: Final = 256
_EMPTY_OBJECT_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}
_JSON_OBJECT_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {},
    "additionalProperties": True,
}
_JSON_TOOL_DESCRIPTION: Final = (
    "Give your final answer by calling this tool: its input is the JSON response."
)

_FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types (B6) -> the HTTP status they come with, for errors in a stream.
_ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --------------------------------------------------------------------------- small helpers


def _options(ctx: CallContext) -> AnthropicOptions:
    return ctx.deployment.options_of(AnthropicOptions)


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _has_text(text: str) -> bool:
    """Whether a text can be a text block: Anthropic refuses empty and whitespace-only ones."""
    return bool(text) and not text.isspace()


def _text_blocks(content: object) -> list[JSON]:
    """Text blocks of a string or an array of text/refusal parts, skipping blank ones."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if _has_text(content) else []
    blocks: list[JSON] = []
    if isinstance(content, list):
        for part in content:
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and _has_text(text):
                blocks.append({"type": "text", "text": text})
    return blocks


def tool_id(raw: str) -> str:
    """A tool-call id Anthropic accepts: `raw` itself when safe, else a stable rewrite.

    The rewrite keeps the safe characters (for readability) and appends a hash of the
    original, so distinct ids stay distinct and the same id always maps the same way.
    """
    if _SAFE_ID.fullmatch(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return _UNSAFE_ID_CHARS.sub("_", raw)[:40] + "_" + digest


def _clean_mime(mime: str) -> str:
    mime = mime.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(mime, mime)


def _b64_decode(data: str, param: str) -> bytes:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _invalid("The data is not valid base64.", param) from None


def _media_block(mime: str, data: str, param: str, title: object = None) -> JSON:
    """An image or document block for base64 `data` declared as `mime`.

    The bytes decide the type sent: Anthropic refuses an image whose declared type
    differs from its content, and clients often label a PNG as JPEG.
    """
    declared = _clean_mime(mime)
    raw = _b64_decode(data, param)
    if declared == _TEXT:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid("The text/plain file is not valid UTF-8.", param) from None
        block: JSON = {
            "type": "document",
            "source": {"type": "text", "media_type": _TEXT, "data": text},
        }
    elif declared in _IMAGE_TYPES or declared in (_PDF, _OCTET_STREAM):
        actual = sniff_media_type(raw)
        if actual not in _IMAGE_TYPES and actual != _PDF:  # HEIC, unknown: not for Anthropic
            raise _invalid("The content is not a JPEG, PNG, GIF or WebP image nor a PDF.", param)
        if actual != _PDF:
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": actual, "data": data},
            }
        block = {"type": "document", "source": {"type": "base64", "media_type": _PDF, "data": data}}
    else:
        raise _invalid(
            f"Anthropic models do not read '{declared}' content; send a JPEG, PNG, GIF or WebP "
            "image, a PDF or a text/plain file.",
            param,
        )
    if isinstance(title, str) and title:
        block["title"] = title
    return block


def _split_data_url(url: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a base64 data URL, or None."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group(1), url[match.end() :]


def _is_http(url: object) -> bool:
    return isinstance(url, str) and url[:8].lower().startswith(("http://", "https://"))


# --------------------------------------------------------------------------- messages


@dataclass(slots=True)
class _Turn:
    """One Anthropic message being built; `paths` names each block's source field."""

    role: str
    blocks: list[JSON] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def add(self, block: JSON, path: str) -> None:
        self.blocks.append(block)
        self.paths.append(path)

    def merge(self, other: _Turn) -> None:
        """Append `other`'s blocks; in a user turn tool results stay in front."""
        if self.role == "user" and any(b["type"] == "tool_result" for b in other.blocks):
            pairs = list(zip(self.blocks, self.paths, strict=True)) + list(
                zip(other.blocks, other.paths, strict=True)
            )
            pairs.sort(key=lambda p: p[0]["type"] != "tool_result")  # stable
            self.blocks = [b for b, _ in pairs]
            self.paths = [p for _, p in pairs]
        else:
            self.blocks.extend(other.blocks)
            self.paths.extend(other.paths)


class _MessageBuilder:
    """Turns OpenAI messages into Anthropic `system` blocks and merged turns."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.system: list[JSON] = []
        self.turns: list[_Turn] = []
        self.tool_names: dict[str, None] = {}  # names called in the history, in order
        self._function_call_id: str | None = None  # legacy function_call awaiting its result

    def build(self, messages: list[JSON]) -> None:
        for i, msg in enumerate(messages):
            role = msg["role"]
            if role in ("system", "developer"):
                self.system.extend(_text_blocks(msg["content"]))
                continue
            if role == "assistant":
                turn = self._assistant(msg, i)
            elif role == "tool":
                turn = self._tool_result(msg["tool_call_id"], msg.get("content"), i)
            elif role == "function":
                turn = self._function_result(msg, i)
            else:
                turn = self._user(msg["content"], i)
            if not turn.blocks:
                continue
            if self.turns and self.turns[-1].role == turn.role:
                self.turns[-1].merge(turn)
            else:
                self.turns.append(turn)
        self._trim_prefill()
        self._renumber_reused_ids()
        self._check_tool_pairs()
        if not self.turns:
            raise _invalid(
                "Anthropic models need at least one user or assistant message with content.",
                "messages",
            )

    # ---------------------------------------------------------------- per role

    def _user(self, content: object, i: int) -> _Turn:
        turn = _Turn("user")
        if isinstance(content, str):
            if _has_text(content):
                turn.add({"type": "text", "text": content}, f"messages[{i}].content")
            return turn
        assert isinstance(content, list)
        for j, part in enumerate(content):
            path = f"messages[{i}].content[{j}]"
            kind = part.get("type")
            if kind == "text":
                if _has_text(part["text"]):
                    turn.add({"type": "text", "text": part["text"]}, path)
            elif kind == "image_url":
                turn.add(self._image(part["image_url"]["url"], path + ".image_url.url"), path)
            elif kind == "file":
                turn.add(self._file(part["file"], path + ".file"), path)
            elif kind == "input_audio":
                raise _invalid("Anthropic models do not accept audio input.", path + ".input_audio")
            else:
                raise _invalid(f"Unsupported content part type '{kind}'.", path + ".type")
        return turn

    def _image(self, url: str, param: str) -> JSON:
        data_url = _split_data_url(url)
        if data_url is not None:
            return _media_block(data_url[0], data_url[1], param)
        media = self.ctx.media.get(url)
        if media is not None:
            encoded = base64.b64encode(media.data).decode("ascii")
            return _media_block(media.mime_type, encoded, param)
        if _is_http(url):
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise _invalid("Expected an http(s) URL or a base64 data URL.", param)

    def _file(self, file: JSON, param: str) -> JSON:
        if file.get("file_id") is not None:
            raise _invalid(
                "File ids refer to OpenAI's Files API and cannot be sent to Anthropic models; "
                "send the file's content in 'file_data'.",
                param + ".file_id",
            )
        data = file.get("file_data")
        path = param + ".file_data"
        if not isinstance(data, str):
            raise _invalid("Expected the file's content in 'file_data'.", path)
        title = file.get("filename")
        data_url = _split_data_url(data)
        if data_url is not None:
            return _media_block(data_url[0], data_url[1], path, title)
        return _media_block(_OCTET_STREAM, data, path, title)  # bare base64: sniffed

    def _assistant(self, msg: JSON, i: int) -> _Turn:
        turn = _Turn("assistant")
        content = msg.get("content")
        for block in _text_blocks(content):
            turn.add(block, f"messages[{i}].content")
        refusal = msg.get("refusal")
        if not turn.blocks and isinstance(refusal, str) and _has_text(refusal):
            turn.add({"type": "text", "text": refusal}, f"messages[{i}].refusal")
        for j, call in enumerate(msg.get("tool_calls") or ()):
            path = f"messages[{i}].tool_calls[{j}]"
            if call.get("type") != "function":
                raise _invalid("Anthropic models do not support custom tool calls.", path)
            fn = call["function"]
            block = self._tool_use(call["id"], fn["name"], fn["arguments"], path)
            turn.add(block, path + ".id")
        function_call = msg.get("function_call")
        if function_call is not None:
            path = f"messages[{i}].function_call"
            self._function_call_id = f"call_function_{i}"
            block = self._tool_use(
                self._function_call_id,
                function_call["name"],
                function_call["arguments"],
                path,
            )
            turn.add(block, path)
        return turn

    def _tool_use(self, call_id: str, name: str, arguments: str, path: str) -> JSON:
        args: object = {}
        if arguments.strip():
            try:
                args = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                raise _invalid(
                    "The tool call's arguments are not valid JSON.", path + ".function.arguments"
                ) from None
            if not isinstance(args, dict):
                raise _invalid(
                    "The tool call's arguments must be a JSON object.",
                    path + ".function.arguments",
                )
        self.tool_names[name] = None
        return {"type": "tool_use", "id": tool_id(call_id), "name": name, "input": args}

    def _tool_result(self, call_id: str, content: object, i: int) -> _Turn:
        block: JSON = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
        if isinstance(content, str):
            if _has_text(content):
                block["content"] = content
        else:
            texts = _text_blocks(content)
            if texts:
                block["content"] = texts
        turn = _Turn("user")
        turn.add(block, f"messages[{i}].tool_call_id")
        return turn

    def _function_result(self, msg: JSON, i: int) -> _Turn:
        call_id = self._function_call_id
        if call_id is None:
            raise _invalid(
                "A 'function' message must answer an assistant message's 'function_call'.",
                f"messages[{i}]",
            )
        self._function_call_id = None
        return self._tool_result(call_id, msg.get("content"), i)

    # ---------------------------------------------------------------- checks

    def _trim_prefill(self) -> None:
        """Cut trailing whitespace from a final assistant turn: Anthropic refuses it.

        The text stays non-empty, as blank text blocks are never added.
        """
        if self.turns and self.turns[-1].role == "assistant":
            last = self.turns[-1]
            block = last.blocks[-1]
            if block["type"] == "text":
                last.blocks[-1] = {"type": "text", "text": block["text"].rstrip()}

    def _renumber_reused_ids(self) -> None:
        """Give a tool-call id that an earlier assistant turn used a new, stable id.

        Clients that number calls per turn (call_0, call_1, ...) repeat ids across turns;
        Anthropic needs every tool_use id to be unique. The repeat in turn `k` becomes
        `tool_id(f"{id}#{k}")`, on the tool_use and on the results in the next turn, so
        the same history always gives the same ids. A repeat within one turn is left for
        `_check_tool_pairs` to refuse.
        """
        used: set[str] = set()
        for k, turn in enumerate(self.turns):
            if turn.role != "assistant":
                continue
            renamed: dict[str, str] = {}
            for block, _ in _blocks_of(turn, "tool_use"):
                old = block["id"]
                if old in used:
                    block["id"] = renamed.setdefault(old, tool_id(f"{old}#{k}"))
            used.update(b["id"] for b, _ in _blocks_of(turn, "tool_use"))
            after = self.turns[k + 1] if k + 1 < len(self.turns) else None
            if renamed and after is not None and after.role == "user":
                for block, _ in _blocks_of(after, "tool_result"):
                    block["tool_use_id"] = renamed.get(block["tool_use_id"], block["tool_use_id"])

    def _check_tool_pairs(self) -> None:
        """Every tool_use is answered in the next turn, every tool_result answers one."""
        seen: set[str] = set()
        for k, turn in enumerate(self.turns):
            if turn.role == "assistant":
                calls = list(_blocks_of(turn, "tool_use"))
                for block, path in calls:
                    if block["id"] in seen:
                        raise _invalid(f"Duplicate tool call id '{block['id']}'.", path)
                    seen.add(block["id"])
                after = self.turns[k + 1] if k + 1 < len(self.turns) else None
                answered = {b["tool_use_id"] for b, _ in _blocks_of(after, "tool_result")}
                for block, path in calls:
                    if block["id"] not in answered:
                        raise _invalid(
                            "An assistant message with 'tool_calls' must be followed by tool "
                            f"messages responding to each call; '{block['id']}' has none.",
                            path,
                        )
            else:
                before = self.turns[k - 1] if k > 0 else None
                called = {b["id"] for b, _ in _blocks_of(before, "tool_use")}
                answered_here: set[str] = set()
                for block, path in _blocks_of(turn, "tool_result"):
                    use_id = block["tool_use_id"]
                    if use_id not in called:
                        raise _invalid(
                            "Messages with role 'tool' must answer a tool call of the "
                            "assistant message right before them.",
                            path,
                        )
                    if use_id in answered_here:
                        raise _invalid(f"Duplicate result for tool call '{use_id}'.", path)
                    answered_here.add(use_id)

    def excludes_thinking(self) -> bool:
        """Whether the conversation cannot be sent with thinking on.

        True when it ends with an assistant turn (a prefill, which extended thinking does
        not allow) or when the last assistant turn called tools (Anthropic then wants
        that turn's signed thinking blocks, which OpenAI's format cannot carry).
        """
        for turn in reversed(self.turns):
            if turn.role == "assistant":
                return turn is self.turns[-1] or any(b["type"] == "tool_use" for b in turn.blocks)
        return False

    def messages(self) -> list[JSON]:
        return [{"role": t.role, "content": t.blocks} for t in self.turns]


def _blocks_of(turn: _Turn | None, kind: str) -> Iterator[tuple[JSON, str]]:
    if turn is not None:
        for block, path in zip(turn.blocks, turn.paths, strict=True):
            if block["type"] == kind:
                yield block, path


# --------------------------------------------------------------------------- tools


@dataclass(slots=True)
class _ToolPlan:
    tools: list[JSON]
    choice: JSON | None


def _function_tool(spec: JSON, param: str, strict: bool) -> JSON:
    name = spec["name"]
    if name in _RESERVED_TOOLS:
        raise _invalid(
            f"The tool name '{name}' is reserved by the gateway for response_format.",
            param + ".name",
        )
    schema = spec.get("parameters")
    if schema is None:
        schema = dict(_EMPTY_OBJECT_SCHEMA)
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    elif schema["type"] != "object":
        raise _invalid("A function's parameters must be a JSON Schema of type 'object'.", param)
    tool: JSON = {"name": name, "input_schema": schema}
    description = spec.get("description")
    if isinstance(description, str) and description:
        tool["description"] = description
    if strict and spec.get("strict") is True:
        tool["strict"] = True
    return tool


def _client_tools(body: JSON, native: bool) -> list[JSON]:
    """The client's function tools (or legacy functions) as Anthropic tools."""
    tools = body.get("tools")
    specs: list[tuple[JSON, str]] = []
    if tools:
        for i, tool in enumerate(tools):
            if tool["type"] != "function":
                raise _invalid("Anthropic models do not support custom tools.", f"tools[{i}]")
            specs.append((tool["function"], f"tools[{i}].function"))
    else:
        specs = [(fn, f"functions[{i}]") for i, fn in enumerate(body.get("functions") or ())]
    out: list[JSON] = []
    names: set[str] = set()
    for spec, param in specs:
        tool = _function_tool(spec, param, native)
        if tool["name"] in names:
            raise _invalid(f"Tool names must be unique: '{tool['name']}' repeats.", param + ".name")
        names.add(tool["name"])
        out.append(tool)
    return out


def _tool_choice(body: JSON, tools: list[JSON]) -> tuple[JSON | None, list[JSON]]:
    """The Anthropic tool_choice for the client's choice, and the tools it leaves offered."""
    choice = body.get("tool_choice")
    if choice is None and not body.get("tools"):
        choice = _legacy_choice(body.get("function_call"))
    if choice is None:
        return None, tools
    if isinstance(choice, str):
        return {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}, tools
    kind = choice["type"]
    if kind == "function":
        return {"type": "tool", "name": choice["function"]["name"]}, tools
    if kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names = {ref[ref["type"]]["name"] for ref in allowed["tools"]}
        kept = [t for t in tools if t["name"] in names]
        if not kept and allowed["mode"] == "required":
            raise _invalid(
                "'required' needs at least one allowed tool among 'tools'.",
                "tool_choice.allowed_tools.tools",
            )
        return {"type": "any" if allowed["mode"] == "required" else "auto"}, kept
    raise _invalid("Anthropic models do not support custom tools.", "tool_choice")


def _legacy_choice(function_call: object) -> object:
    if isinstance(function_call, str):
        return function_call
    if isinstance(function_call, dict):
        return {"type": "function", "function": {"name": function_call["name"]}}
    return None


def _response_tool(fmt: JSON) -> JSON:
    """The forced tool that emulates `response_format` (D4)."""
    description = _JSON_TOOL_DESCRIPTION
    schema: Any = None
    if fmt["type"] == "json_schema":
        spec = fmt["json_schema"]
        schema = spec.get("schema")
        if isinstance(spec.get("description"), str) and spec["description"]:
            description = spec["description"] + " " + description
    if schema is None:
        schema = dict(_JSON_OBJECT_SCHEMA)
        return {"name": JSON_TOOL, "description": description, "input_schema": schema}
    if schema.get("type") == "object":
        return {"name": JSON_TOOL, "description": description, "input_schema": schema}
    inner = dict(schema)
    wrapper: JSON = {"type": "object"}
    for key in ("$defs", "definitions"):  # references stay valid from the new root
        if key in inner:
            wrapper[key] = inner.pop(key)
    inner.pop("$schema", None)
    wrapper["properties"] = {"value": inner}
    wrapper["required"] = ["value"]
    return {"name": JSON_VALUE_TOOL, "description": description, "input_schema": wrapper}


def _plan_tools(
    body: JSON, builder: _MessageBuilder, thinking: bool, native: bool
) -> tuple[_ToolPlan, JSON | None]:
    """Tools and tool_choice for the request, and the native output format if any."""
    tools = _client_tools(body, native)
    choice, tools = _tool_choice(body, tools)
    if not tools:
        choice = None  # Anthropic refuses a tool_choice without tools
    if not tools and builder.tool_names:
        # Anthropic refuses tool blocks in a history without tool definitions.
        tools = [
            {"name": n, "input_schema": dict(_EMPTY_OBJECT_SCHEMA)} for n in builder.tool_names
        ]
        choice = {"type": "none"}
    output_format = None
    fmt = body.get("response_format")
    if fmt is not None and fmt["type"] != "text":
        schema = fmt["json_schema"].get("schema") if fmt["type"] == "json_schema" else None
        if native and schema is not None:
            output_format = {"type": "json_schema", "schema": schema}
        else:
            choice, tools = _with_response_tool(fmt, choice, tools)
    if choice is not None and thinking and choice["type"] in ("any", "tool"):
        choice = {**choice, "type": "auto"}  # forced tool use and thinking exclude (E13)
        choice.pop("name", None)
    if body.get("parallel_tool_calls") is False and tools:
        if choice is None:
            choice = {"type": "auto"}
        if choice["type"] != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
    return _ToolPlan(tools, choice), output_format


def _with_response_tool(
    fmt: JSON, choice: JSON | None, tools: list[JSON]
) -> tuple[JSON, list[JSON]]:
    """Add the response_format tool (D4) and the choice that makes the model use it.

    Without usable client tools the JSON tool is forced; with them (auto or
    required) the model must call some tool: a real one, or the JSON answer. A
    named choice stays as it is.
    """
    json_tool = _response_tool(fmt)
    forced = {"type": "tool", "name": json_tool["name"]}
    if choice is None:
        choice = {"type": "any"} if tools else forced
    elif choice["type"] == "auto":
        choice = {"type": "any"}
    elif choice["type"] == "none":
        choice = forced
    return choice, [*tools, json_tool]


# --------------------------------------------------------------------------- sampling


def _max_tokens(body: JSON) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            return int(value)
    return None


def _thinking_plan(
    body: JSON, client_max: int | None, default: int, cap: int | None, allowed: bool
) -> tuple[JSON | None, int]:
    """The thinking block (or None) and the max_tokens that goes with it.

    `cap` (the model's output limit) bounds max_tokens, budget included: the budget
    shrinks to fit (leaving `default` tokens for the answer when the client set no
    maximum), and thinking is left off when less than the 1024 minimum remains.
    """
    max_tokens = client_max if client_max is not None else default
    if cap is not None:
        max_tokens = min(max_tokens, cap)
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None or not allowed:
        return None, max_tokens
    if client_max is None:
        with_budget = budget + default if cap is None else min(budget + default, cap)
        budget = min(budget, with_budget - default)
    else:
        with_budget = max_tokens
        budget = min(budget, with_budget - 1)
    if budget < _MIN_THINKING_BUDGET:
        return None, max_tokens
    return {"type": "enabled", "budget_tokens": budget}, with_budget


def _sampling(body: JSON, out: JSON, thinking: bool) -> None:
    """temperature, top_p, top_k and stop_sequences into `out`."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise _invalid("Expected 'top_k' to be a positive integer.", "top_k")
    if thinking:
        temperature = top_k = None
        if top_p is not None and not 0.95 <= top_p <= 1:
            top_p = None
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)
        top_p = None  # E12: newer models refuse both
    if top_p is not None:
        out["top_p"] = top_p
    if top_k is not None:
        out["top_k"] = top_k
    stop = body.get("stop")
    if stop is not None:
        sequences = [s for s in ([stop] if isinstance(stop, str) else stop) if _has_text(s)]
        if sequences:
            out["stop_sequences"] = sequences


def _refuse_unsupported(body: JSON) -> None:
    n = body.get("n")
    if n is not None and n > 1:
        raise _invalid("Anthropic models return one choice: 'n' must be 1.", "n")
    if body.get("logprobs") is True:
        raise _invalid("Anthropic models do not return log probabilities.", "logprobs")
    if "audio" in (body.get("modalities") or ()):
        raise _invalid("Anthropic models do not produce audio.", "modalities")


def _looks_like_phone(value: str) -> bool:
    """A phone number as people write it: 7+ digits with a leading + or separators.

    A bare run of digits is kept: it is far more often a database id.
    """
    if _PHONE.fullmatch(value) is None or sum(c.isdigit() for c in value) < 7:
        return False
    return value.startswith("+") or any(c in " ().-" for c in value)


def _user_id(body: JSON) -> str | None:
    """An opaque end-user id for `metadata.user_id`; never an email address or phone number."""
    for key in ("safety_identifier", "user"):
        value = body.get(key)
        if (
            isinstance(value, str)
            and value.strip()
            and len(value) <= _MAX_USER_ID
            and _EMAIL.search(value) is None
            and not _looks_like_phone(value)
        ):
            return value
    return None


# --------------------------------------------------------------------------- request


def translate_request(body: JSON, ctx: CallContext) -> JSON:
    """The Anthropic Messages body for a validated OpenAI chat-completions body.

    Raises InvalidRequest (with `param`) for what Anthropic cannot express.
    """
    _refuse_unsupported(body)
    options = _options(ctx)
    native = options.structured_output == "native"
    default = options.default_max_tokens

    builder = _MessageBuilder(ctx)
    builder.build(body["messages"])
    thinking, max_tokens = _thinking_plan(
        body,
        _max_tokens(body),
        default,
        ctx.deployment.max_output_tokens,
        not builder.excludes_thinking(),
    )
    tools, output_format = _plan_tools(body, builder, thinking is not None, native)

    out: JSON = {
        "model": ctx.deployment.upstream_model,
        "max_tokens": max_tokens,
        "messages": builder.messages(),
    }
    if builder.system:
        out["system"] = builder.system
    if tools.tools:
        out["tools"] = tools.tools
    if tools.choice is not None:
        out["tool_choice"] = tools.choice
    if thinking is not None:
        out["thinking"] = thinking
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    _sampling(body, out, thinking is not None)
    user_id = _user_id(body)
    if user_id is not None:
        out["metadata"] = {"user_id": user_id}
    if body.get("service_tier") == "auto":
        out["service_tier"] = "auto"
    if ctx.stream:
        out["stream"] = True
    return out


def _image_urls(body: JSON) -> Iterator[str]:
    for msg in body["messages"]:
        content = msg.get("content")
        if msg["role"] == "user" and isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if _is_http(url):
                        yield url


# --------------------------------------------------------------------------- responses


def _usage(raw: Mapping[str, Any]) -> JSON:
    """OpenAI usage from Anthropic counts (D6): cache reads and writes are prompt tokens."""
    fresh = _count(raw.get("input_tokens"))
    read = _count(raw.get("cache_read_input_tokens"))
    written = _count(raw.get("cache_creation_input_tokens"))
    output = _count(raw.get("output_tokens"))
    details = raw.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _finish_reason(stop_reason: object, json_only: bool) -> str:
    """OpenAI's finish_reason (D5); `json_only`: the response_format tool was the only call."""
    if stop_reason == "tool_use" and json_only:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _json_answer(name: str, args: object) -> str:
    """The response_format tool's input as the answer text (unwrapped when wrapped).

    A wrapped input without its `value` (cut short by max_tokens) gives "": the
    client never sees the wrapper.
    """
    if name == JSON_VALUE_TOOL:
        if not isinstance(args, dict) or "value" not in args:
            return ""
        args = args["value"]
    return orjson.dumps(args).decode()


def _completion(msg: JSON, ctx: CallContext) -> JSON:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    answer: str | None = None
    for block in msg.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            name = str(block.get("name") or "")
            if name in _RESERVED_TOOLS:
                answer = _json_answer(name, block.get("input"))
                continue
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
    content = answer if answer is not None else ("".join(texts) if texts else None)
    message: JSON = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    if thoughts and _options(ctx).reasoning_output:
        message["reasoning_content"] = "".join(thoughts)
    usage = msg.get("usage")
    return {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.deployment.model_id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(
                    msg.get("stop_reason"), answer is not None and not calls
                ),
            }
        ],
        "usage": _usage(usage if isinstance(usage, dict) else {}),
        "system_fingerprint": None,
    }


def _error_from(status: int, obj: object, headers: Mapping[str, str] | None) -> GatewayError:
    """The gateway error for an Anthropic error body `{"type":"error","error":{...}}`."""
    err = obj.get("error") if isinstance(obj, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = f"The upstream reported an error (HTTP {status})."
    code = etype if isinstance(etype, str) else None
    error_type = "invalid_request_error"
    if status == 404:
        code = "model_not_found"
    elif status == 413:
        code = "request_too_large"
    elif status == 402:
        error_type = "billing_error"
    elif status == 400 and "prompt is too long" in message:
        code = "context_length_exceeded"
    return upstream_status_error(status, message, error_type=error_type, code=code, headers=headers)


# --------------------------------------------------------------------------- stream

_TEXT_BLOCK: Final = 0
_TOOL_BLOCK: Final = 1
_JSON_BLOCK: Final = 2  # the response_format tool: arguments become content
_THINKING_BLOCK: Final = 3
_OTHER_BLOCK: Final = 4


class _Block:
    """What the translator remembers of one open Anthropic content block."""

    __slots__ = ("buffer", "kind", "ordinal", "sent", "wrapped")

    def __init__(self, kind: int, ordinal: int = -1, wrapped: bool = False) -> None:
        self.kind = kind
        self.ordinal = ordinal  # OpenAI tool_calls index of a tool block
        self.sent = False  # a non-empty arguments fragment was emitted
        self.wrapped = wrapped  # JSON answer wrapped in {"value": ...}: buffered
        self.buffer: list[str] = []


class AnthropicStreamTranslator:
    """Anthropic SSE in, OpenAI chunks out: the D7 state machine.

    - `message_start`: the role chunk; input usage recorded. Every chunk names the
      client's model id, as the Gemini provider's do.
    - text deltas -> `delta.content`; thinking deltas -> `delta.reasoning_content`
      with the option `reasoning_output`, else dropped.
    - a `tool_use` block -> a tool call numbered 0, 1, ... in order (not the block
      index); empty `partial_json` fragments are skipped (E8), and a call that got
      no argument fragment at all is given "{}" when its block stops, so assembled
      arguments always parse.
    - The response_format tool streams as `delta.content`; a wrapped answer
      (`json_tool_call_value`) is sent whole when its block ends, unwrapped (cut
      short by max_tokens: the value's text as far as it came, never the wrapper).
      While the tool emulates response_format, text deltas are held back until the
      finish: sent then only if no JSON tool block came, so the streamed content is
      the non-streamed one. (Not with native json_schema, whose text is the answer.)
    - `message_delta`: the finish chunk (once); usage is cumulative, the last wins
      (E10). `message_stop`: a "stop" finish chunk if no `message_delta` gave one,
      the usage chunk (`choices: []`, only when the client asked, E11), `[DONE]`.
    - an `error` event -> the OpenAI error event, `error` set, no `[DONE]` (E9);
      EOF before `message_stop` -> a truncation error from `close()`.
    - `ping`, `signature_delta`, `citations_delta`, `content_block_stop` of text,
      server-tool blocks and unknown events produce nothing.
    """

    __slots__ = (
        "_base",
        "_blocks",
        "_counts",
        "_created",
        "_decoder",
        "_finished",
        "_held",
        "_include_usage",
        "_json_seen",
        "_model",
        "_next_tool",
        "_open",
        "_reasoning",
        "_request_id",
        "_tail",
        "_tools_seen",
        "done",
        "error",
        "usage",
    )

    def __init__(self, ctx: CallContext) -> None:
        self._decoder = SSEDecoder()
        self._include_usage = ctx.include_usage
        self._reasoning = _options(ctx).reasoning_output
        self._request_id = ctx.request_id
        self._created = ctx.created
        self._model = ctx.deployment.model_id
        self._base = b""  # `data: {"id":...,"choices":`, built on first use
        self._open = b""  # _base + `[{"index":0,"delta":`
        self._tail = (
            b',"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
            if ctx.include_usage
            else b',"logprobs":null,"finish_reason":null}]}\n\n'
        )
        self._blocks: dict[int, _Block] = {}
        self._next_tool = 0
        self._tools_seen = False  # a real tool call was streamed
        self._json_seen = False  # the response_format tool was streamed
        self._finished = False  # the finish chunk was sent
        # Text held back while the JSON tool may still come (None: text streams as is).
        self._held: list[str] | None = [] if _emulates_json(ctx) else None
        self.done = False  # message_stop seen, [DONE] sent: the relay stops reading
        self._counts: dict[str, Any] = {}
        self.usage: JSON | None = None
        self.error: GatewayError | None = None

    # ---------------------------------------------------------------- protocol

    def feed(self, data: bytes) -> bytes:
        if self.error is not None or self.done:
            return b""
        try:
            events = self._decoder.feed(data)
        except SSEProtocolError as e:
            return self._fail(UpstreamError(f"The upstream stream is malformed: {e}."))
        out: list[bytes] = []
        for event in events:
            try:
                obj = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                out.append(
                    self._fail(UpstreamError("The upstream sent a stream event that is not JSON."))
                )
                break
            if not isinstance(obj, dict):
                out.append(
                    self._fail(UpstreamError("The upstream sent a stream event that is not JSON."))
                )
                break
            chunk = self._event(obj)
            if chunk:
                out.append(chunk)
            if self.error is not None or self.done:
                break
        return b"".join(out)

    def close(self) -> bytes:
        if self.error is not None or self.done:
            return b""
        self.error = UpstreamError(
            "The upstream stream ended before the response was complete.",
            code="upstream_stream_truncated",
        )
        return self.error.sse_event()

    # ---------------------------------------------------------------- events

    def _event(self, obj: JSON) -> bytes:
        kind = obj.get("type")
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "content_block_stop":
            return self._block_stop(obj)
        if kind == "message_start":
            return self._message_start(obj)
        if kind == "message_delta":
            return self._message_delta(obj)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            return self._fail(_stream_error(obj))
        return b""  # ping and event types added later

    def _message_start(self, obj: JSON) -> bytes:
        message = obj.get("message")
        if isinstance(message, dict):
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._record_usage(usage)
        return self._chunk(b'{"role":"assistant","content":""}')

    def _block_start(self, obj: JSON) -> bytes:
        index = obj.get("index")
        block = obj.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return b""
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = _Block(_TEXT_BLOCK)
            text = block.get("text")
            return self._text(text) if isinstance(text, str) and text else b""
        if kind == "thinking":
            self._blocks[index] = _Block(_THINKING_BLOCK)
            return b""
        if kind != "tool_use":
            self._blocks[index] = _Block(_OTHER_BLOCK)
            return b""
        name = str(block.get("name") or "")
        if name in _RESERVED_TOOLS:
            self._json_seen = True
            self._blocks[index] = _Block(_JSON_BLOCK, wrapped=name == JSON_VALUE_TOOL)
            return b""
        ordinal = self._next_tool
        self._next_tool += 1
        self._tools_seen = True
        self._blocks[index] = _Block(_TOOL_BLOCK, ordinal)
        call = {
            "index": ordinal,
            "id": str(block.get("id") or ""),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._chunk(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")

    def _delta(self, obj: JSON) -> bytes:
        index = obj.get("index")
        delta = obj.get("delta")
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            return b""
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return self._text(text) if isinstance(text, str) and text else b""
        if kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str) or not fragment:
                return b""  # E8: empty fragments carry nothing
            return self._arguments(block, fragment)
        if kind == "thinking_delta" and self._reasoning:
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                return self._chunk(b'{"reasoning_content":' + orjson.dumps(text) + b"}")
        return b""

    def _arguments(self, block: _Block, fragment: str) -> bytes:
        if block.kind == _TOOL_BLOCK:
            block.sent = True
            return self._chunk(
                b'{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}'
                % (block.ordinal, orjson.dumps(fragment))
            )
        if block.kind == _JSON_BLOCK:
            block.sent = True
            if block.wrapped:
                block.buffer.append(fragment)
                return b""
            return self._content(fragment)
        return b""

    def _block_stop(self, obj: JSON) -> bytes:
        index = obj.get("index")
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is None:
            return b""
        if block.kind == _TOOL_BLOCK and not block.sent:
            return self._arguments(block, "{}")  # a call without arguments (E8)
        if block.kind == _JSON_BLOCK:
            if block.wrapped:
                answer = _unwrap("".join(block.buffer))
                return self._content(answer) if answer else b""
            if not block.sent:
                return self._content("{}")
        return b""

    def _message_delta(self, obj: JSON) -> bytes:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._record_usage(usage)
        delta = obj.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if self._finished or reason is None:
            return b""
        out = self._settle()
        return out + self._finish(_finish_reason(reason, self._json_seen and not self._tools_seen))

    def _message_stop(self) -> bytes:
        self.done = True
        out = b"" if self._finished else self._settle() + self._finish("stop")  # no message_delta
        if self._include_usage and self.usage is not None:
            out += self._header() + b'[],"usage":' + orjson.dumps(self.usage) + b"}\n\n"
        return out + DONE

    def _settle(self) -> bytes:
        """Content owed before the finish chunk: wrapped JSON still open, held-back text."""
        out = b""
        for index, block in list(self._blocks.items()):
            if block.kind == _JSON_BLOCK and block.wrapped:
                out += self._block_stop({"index": index})  # no content_block_stop came
        if self._held:
            if not self._json_seen:
                out += self._content("".join(self._held))
            self._held.clear()
        return out

    def _finish(self, reason: str) -> bytes:
        """The chunk carrying `finish_reason`; sent once per stream."""
        self._finished = True
        usage = b',"usage":null' if self._include_usage else b""
        return (
            self._header()
            + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}]%b}\n\n'
            % (reason.encode(), usage)
        )

    # ---------------------------------------------------------------- output

    def _record_usage(self, usage: JSON) -> None:
        """Keep the latest value of each counter: Anthropic's counts are cumulative (E10)."""
        for key, value in usage.items():
            if value is not None:
                self._counts[key] = value
        self.usage = _usage(self._counts)

    def _header(self) -> bytes:
        """`data: {"id":...,"model":...,"choices":` for this stream's chunks."""
        if not self._base:
            self._base = (
                b'data: {"id":%b,"object":"chat.completion.chunk","created":%d,"model":%b,'
                b'"system_fingerprint":null,"choices":'
                % (orjson.dumps(self._request_id), self._created, orjson.dumps(self._model))
            )
            self._open = self._base + b'[{"index":0,"delta":'
        return self._base

    def _chunk(self, delta: bytes) -> bytes:
        if not self._base:
            self._header()
        return self._open + delta + self._tail

    def _content(self, text: str) -> bytes:
        return self._chunk(b'{"content":' + orjson.dumps(text) + b"}")

    def _text(self, text: str) -> bytes:
        """A text block's delta: content now, or held back while JSON mode decides."""
        if self._held is not None:
            self._held.append(text)
            return b""
        return self._content(text)

    def _fail(self, error: GatewayError) -> bytes:
        self.error = error
        return error.sse_event()


_VALUE_PREFIX: Final = re.compile(r'\s*\{\s*"value"\s*:\s*')


def _unwrap(raw: str) -> str:
    """The answer inside a streamed wrapped JSON input `{"value": ...}`.

    A complete input gives its value as compact JSON; one cut short (max_tokens) gives
    the value's text as far as it came; anything else gives "". Never the wrapper.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        match = _VALUE_PREFIX.match(raw)
        return raw[match.end() :] if match is not None else ""
    if isinstance(obj, dict) and "value" in obj:
        return orjson.dumps(obj["value"]).decode()
    return ""


def _emulates_json(ctx: CallContext) -> bool:
    """Whether response_format is answered by the JSON tool (not native output_config).

    A native json_schema without a schema also falls back to the tool; the context
    cannot tell it apart, so its text is not held back.
    """
    if ctx.response_format is None:
        return False
    native = _options(ctx).structured_output == "native"
    return not (native and ctx.response_format == "json_schema")


def _stream_error(obj: JSON) -> GatewayError:
    """An `error` event after the 200: mapped as if it had come with its usual status."""
    err = obj.get("error")
    etype = err.get("type") if isinstance(err, dict) else None
    status = _ERROR_STATUS.get(etype, 502) if isinstance(etype, str) else 502
    return _error_from(status, obj, None)


# --------------------------------------------------------------------------- provider


class AnthropicProvider:
    """Provider for `kind = "anthropic"`: the Anthropic Messages API."""

    kind = "anthropic"

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        if not _options(ctx).fetch_media:
            return []  # Anthropic fetches image URLs itself
        return list(dict.fromkeys(_image_urls(body)))

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        payload = translate_request(body, ctx)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if ctx.stream else "application/json",
            "anthropic-version": _options(ctx).api_version,
        }
        if dep.api_key:
            headers["x-api-key"] = dep.api_key
        headers.update(dep.headers)
        base_url = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        return UpstreamRequest(
            url=base_url + "/messages",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        obj = load_json_object(body)
        if obj.get("type") == "error":
            raise _stream_error(obj)
        if obj.get("type") != "message" or not isinstance(obj.get("content"), list):
            raise UpstreamError("The upstream response is not an Anthropic message.")
        out = _completion(obj, ctx)
        return Completion(body=orjson.dumps(out), usage=out["usage"])

    def new_stream_translator(self, ctx: CallContext) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(ctx)

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace").strip()
            obj = {"error": {"message": text}} if text else None
        return _error_from(status, obj, headers)
