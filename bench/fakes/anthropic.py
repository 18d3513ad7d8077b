"""A fake Anthropic Messages upstream: the API's checks, its wire format, injectable failures.

`FakeAnthropic` serves ``POST /v1/messages`` and ``GET /v1/models`` (base URL
``http://host:port/v1``) on `bench.fakes.server`. It requires ``x-api-key`` (401
``authentication_error``; ``Authorization: Bearer`` is not read) and a known
``anthropic-version`` (400, see `API_VERSIONS`), checks the body with
`bench.fakes.anthropic_rules.check_request` (as strict as the real API), and answers
in Anthropic's shapes: a ``message`` object, or named SSE events
(``event: <type>\\ndata: <json>\\n\\n``): ``message_start`` (input and cache usage),
a ``ping``, each content block's ``content_block_start``/``_delta``/``_stop`` with
0-based indexes (a second ``ping`` mid-stream), ``message_delta`` (stop reason and
cumulative usage) and ``message_stop``. Errors use the vendor's body
``{"type": "error", "error": {"type", "message"}, "request_id"}`` and status names
(429 ``rate_limit_error``, 529 ``overloaded_error``, both with ``retry-after``: the
``retry_after`` knob, 1 s by default, none when set to an empty value).

What it answers, deterministically:

- text: ``chunks`` words, cut by ``stop_sequences`` (``stop_reason: stop_sequence``) or
  by ``max_tokens`` (one token per word, thinking included: ``stop_reason: max_tokens``);
- with ``tools`` and a ``tool_choice`` that allows it: ``tool_use`` blocks whose input
  is `instance_for` of the tool's ``input_schema``; the tool named by
  ``tool_choice: {type: "tool"}``, else every tool named in the last user message
  (parallel calls, unless ``disable_parallel_tool_use``), else the first tool. With
  ``auto`` a short text block comes first, as the model tends to write; with ``auto``
  and a last user turn of tool results, a text answer instead. ``input_json_delta``
  fragments start with an empty ``partial_json`` and cut the JSON at odd places; a
  tool without parameters gets only the empty fragment (input ``{}``). Tool calls are
  never cut by ``max_tokens``;
- with ``output_config.format``: a JSON text satisfying the schema;
- with ``thinking`` on: a ``thinking`` block first (``thinking_delta`` pieces, then a
  ``signature_delta``; only the signature with ``display: "omitted"``).

Behaviour knobs are those of `bench.fakes.directives` (constructor defaults,
`configure`, or ``model@k=v`` directives), plus three vendor knobs: ``cache_read`` and
``cache_write`` (token counts reported as ``cache_read_input_tokens`` and
``cache_creation_input_tokens``) and ``stop_reason`` (forces the reported stop reason,
e.g. ``refusal`` or ``pause_turn``). Stream positions (``reset_after``,
``error_after``) count SSE events of any type: ``message_start`` is event 1, the first
``ping`` event 2. ``error_after`` sends the vendor's in-band ``event: error`` and ends
the stream without ``message_stop``; ``reset_after=0`` resets before any byte.

Pacing: ``ttft_ms`` delays the first write; with ``chunk_interval_ms``/``tokens_per_s``
each non-empty delta (one token) goes in its own write on an absolute schedule, the
events around it travelling with it. Unpaced streams are written at once.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

import orjson
import trio

from bench.fakes.anthropic_rules import VendorRefusal, check_request, error_type_for
from bench.fakes.base import (
    FAILURE_GAP_S,
    FakeUpstream,
    RecordedRequest,
    StreamOut,
    failure_positions,
    run_fake,
)
from bench.fakes.directives import Behaviour, DirectiveError, apply_knobs, split_model
from bench.fakes.server import CoarseTimer, Reply, Request
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for

__all__ = [
    "API_VERSIONS",
    "DEFAULT_KEY",
    "STOP_REASONS",
    "FakeAnthropic",
    "VendorKnobs",
    "apply_vendor_knobs",
    "run_fake_anthropic",
]

DEFAULT_KEY: Final = "sk-ant-fake-upstream"
API_VERSIONS: Final = frozenset({"2023-06-01", "2023-01-01", "2026-10-21"})
STOP_REASONS: Final = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }
)
_WORDS: Final = ("This", " is", " a", " fake", " answer", " from", " the", " fake", " Claude", ".")
_PREFACE: Final = ("I'll", " use", " the", " tools.")
_THOUGHTS: Final = ("Let me", " think", " this", " through.")
_JSON: Final = ("content-type", "application/json")
_SSE: Final = ("content-type", "text/event-stream; charset=utf-8")
_CREATED_AT: Final = "2025-01-01T00:00:00Z"
_DEFAULT_RETRY_AFTER: Final = "1"
_PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
_INJECTED: Final[Mapping[int, str]] = {
    400: "Injected failure.",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API.",
    403: "Your API key does not have permission to use the specified resource.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your per-minute rate limit.",
    500: "Internal server error",
    504: "Request timed out.",
    529: "Overloaded",
}


@dataclass(frozen=True, slots=True)
class VendorKnobs:
    """The Anthropic-only knobs: cache usage to report and a forced stop reason."""

    cache_read: int = 0
    cache_write: int = 0
    stop_reason: str | None = None


VENDOR_KNOBS: Final = frozenset(f.name for f in dataclasses.fields(VendorKnobs))


def apply_vendor_knobs(base: VendorKnobs, values: Mapping[str, object]) -> VendorKnobs:
    """Return `base` with `values` (native or directive strings) applied; check each."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "stop_reason":
            if value is not None and str(value) not in STOP_REASONS:
                known = ", ".join(sorted(STOP_REASONS))
                raise DirectiveError(f"stop_reason must be one of {known}, got {value!r}")
            changes[key] = None if value is None else str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise DirectiveError(f"{key} must be an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise DirectiveError(f"{key} must be an integer, got {value!r}") from None
        if number < 0:
            raise DirectiveError(f"{key} must be >= 0, got {number}")
        changes[key] = number
    return dataclasses.replace(base, **changes)


def _split_knobs(values: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(behaviour knobs, vendor knobs) of one set of knob values."""
    vendor = {k: v for k, v in values.items() if k in VENDOR_KNOBS}
    return {k: v for k, v in values.items() if k not in VENDOR_KNOBS}, vendor


class FakeAnthropic(FakeUpstream[RecordedRequest]):
    """The fake Anthropic upstream; `handle` is its `bench.fakes.server` handler.

    Its knobs (constructor, `configure`) are `Behaviour` and `VendorKnobs` ones."""

    default_key = DEFAULT_KEY
    default_models = ("claude-fake",)
    base_path = "/v1"
    thread_name = "fake-anthropic"
    vendor_defaults = VendorKnobs()  # replaced per instance by `configure`

    def configure(self, **knobs: object) -> None:
        """Change the default behaviour for the requests that arrive from now on."""
        behaviour, vendor = _split_knobs(knobs)
        super().configure(**behaviour)
        self.vendor_defaults = apply_vendor_knobs(self.vendor_defaults, vendor)

    def _recorded(self, request: Request, body: Any) -> RecordedRequest:
        return RecordedRequest.of(request, body)

    async def _dispatch(self, request: Request, body: Any, reply: Reply) -> None:
        serial = next(self._ids)
        request_id = f"req_{serial:016x}"
        try:
            if request.path == "/v1/messages":
                _check_method(request, "POST")
                self._check_headers(request)
                await self._messages(serial, request_id, body, request.body, reply)
            elif request.path == "/v1/models":
                _check_method(request, "GET")
                self._check_headers(request)
                await reply.send(200, [_JSON, ("request-id", request_id)], self._listing())
            else:
                raise VendorRefusal(404, "Not Found")
        except _Refusal as refusal:
            await _send_refusal(reply, request_id, refusal.refusal, refusal.headers)
        except VendorRefusal as refusal:
            await _send_refusal(reply, request_id, refusal, ())

    def _check_headers(self, request: Request) -> None:
        """``x-api-key`` (401) then ``anthropic-version`` (400), as the API wants them."""
        key = request.headers.get("x-api-key")
        if not key:
            raise VendorRefusal(401, "x-api-key header is required")
        if key != self.api_key:
            raise VendorRefusal(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            raise VendorRefusal(400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise VendorRefusal(400, f"anthropic-version: invalid version '{version}'")

    def _listing(self) -> bytes:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": _CREATED_AT}
            for m in self.models
        ]
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return orjson.dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})

    # -- messages ------------------------------------------------------------------

    async def _messages(
        self, serial: int, request_id: str, body: Any, raw: bytes, reply: Reply
    ) -> None:
        if body is None:
            raise VendorRefusal(400, "There was an error parsing the body of your request.")
        check_request(body)
        behaviour, vendor, model = self._knobs_for(body["model"])
        if behaviour.hang:
            await trio.sleep_forever()
        if self._should_fail(behaviour.fail_rate):
            raise VendorRefusal(500, "Internal server error")
        if behaviour.status is not None:
            raise _injected_refusal(behaviour, model)
        answer = _Answer.build(serial, model, body, behaviour, vendor)
        if body.get("stream") is True:
            await _stream(reply, request_id, answer.events(), behaviour, self._timer)
            return
        if behaviour.latency_ms > 0:  # a zero wait would still round up to the next ms tick
            await self._timer.sleep_until(trio.current_time() + behaviour.latency_ms / 1000.0)
        if behaviour.reset_after is not None:
            reply.abort()
        await reply.send(200, [_JSON, ("request-id", request_id)], answer.message())

    def _knobs_for(self, model: str) -> tuple[Behaviour, VendorKnobs, str]:
        """The request's behaviour and vendor knobs (defaults + directives), bare model."""
        name, raw = split_model(model)
        if not raw:
            return self.defaults, self.vendor_defaults, name
        behaviour_raw, vendor_raw = _split_knobs(raw)
        try:
            behaviour = apply_knobs(self.defaults, behaviour_raw)
            vendor = apply_vendor_knobs(self.vendor_defaults, vendor_raw)
        except DirectiveError as exc:
            raise VendorRefusal(400, f"model: bad fake directive: {exc}") from None
        return behaviour, vendor, name


class _Refusal(Exception):
    """A `VendorRefusal` with extra response headers (retry-after, allow)."""

    def __init__(self, refusal: VendorRefusal, headers: Sequence[tuple[str, str]]) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.headers = headers


async def _send_refusal(
    reply: Reply, request_id: str, refusal: VendorRefusal, headers: Sequence[tuple[str, str]]
) -> None:
    body = orjson.dumps({**refusal.body, "request_id": request_id})
    await reply.send(refusal.status, [_JSON, ("request-id", request_id), *headers], body)


def _check_method(request: Request, method: str) -> None:
    if request.method != method:
        refusal = VendorRefusal(405, f"Method Not Allowed ({request.method} {request.path})")
        raise _Refusal(refusal, [("allow", method)])


def _injected_refusal(behaviour: Behaviour, model: str) -> _Refusal:
    """The error answer of the `status` knob, in the vendor's names for that status."""
    status = behaviour.status or 500
    default = _INJECTED.get(status, f"model: {model}" if status == 404 else "Injected failure.")
    refusal = VendorRefusal(
        status,
        behaviour.error_message or default,
        behaviour.error_type or error_type_for(status),
    )
    headers: list[tuple[str, str]] = []
    retry_after = behaviour.retry_after
    if retry_after is None and status in (429, 529):
        retry_after = _DEFAULT_RETRY_AFTER
    if retry_after:  # an explicit empty value leaves the header out
        headers.append(("retry-after", retry_after))
    return _Refusal(refusal, headers)


# -- the answer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    """One content block of the answer, with the pieces its deltas carry."""

    kind: str  # "text" | "thinking" | "tool_use"
    pieces: tuple[str, ...]  # text, thinking or partial_json pieces
    signature: str = ""  # thinking only
    tool_id: str = ""  # tool_use only
    name: str = ""
    input: Any = None

    @property
    def tokens(self) -> int:
        """Output tokens the block costs: one per non-empty piece, a tool at least one."""
        count = sum(1 for piece in self.pieces if piece)
        return max(1, count) if self.kind == "tool_use" else count

    def whole(self) -> dict[str, Any]:
        """The block as it appears in a non-streamed ``message``."""
        if self.kind == "text":
            return {"type": "text", "text": "".join(self.pieces)}
        if self.kind == "thinking":
            return {
                "type": "thinking",
                "thinking": "".join(self.pieces),
                "signature": self.signature,
            }
        return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": self.input}

    def start(self) -> dict[str, Any]:
        """The ``content_block`` of its ``content_block_start`` event."""
        if self.kind == "text":
            return {"type": "text", "text": ""}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": {}}

    def deltas(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """(delta, is a token) for each ``content_block_delta`` of the block."""
        key, kind = {
            "text": ("text", "text_delta"),
            "thinking": ("thinking", "thinking_delta"),
            "tool_use": ("partial_json", "input_json_delta"),
        }[self.kind]
        for piece in self.pieces:
            yield {"type": kind, key: piece}, bool(piece)
        if self.kind == "thinking":
            yield {"type": "signature_delta", "signature": self.signature}, False


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one request is answered with, renderable as a message or as SSE events."""

    id: str
    model: str
    blocks: tuple[_Block, ...]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    vendor: VendorKnobs

    @classmethod
    def build(
        cls, serial: int, model: str, body: dict[str, Any], b: Behaviour, vendor: VendorKnobs
    ) -> _Answer:
        blocks: list[_Block] = []
        thinking = body.get("thinking") or {}
        if thinking.get("type") in ("enabled", "adaptive"):
            blocks.append(_thinking_block(omitted=thinking.get("display") == "omitted"))
        stop_sequence: str | None = None
        calls = _pick_tools(body)
        if calls:
            choice = body.get("tool_choice") or {}
            if choice.get("type", "auto") == "auto":
                blocks.append(_Block("text", _PREFACE))
            for k, (name, schema) in enumerate(calls):
                tool_id = f"toolu_{serial:012x}{k:04d}"
                blocks.append(_tool_block(tool_id, name, schema, b.chunks))
            stop_reason = "tool_use"
        else:
            pieces, stop_sequence = _text_pieces(body, b.chunks)
            stop_reason = "stop_sequence" if stop_sequence is not None else "end_turn"
            budget = body["max_tokens"] - sum(block.tokens for block in blocks)
            if len(pieces) > budget:
                pieces, stop_reason, stop_sequence = pieces[: max(0, budget)], "max_tokens", None
            if pieces:
                blocks.append(_Block("text", pieces))
        if vendor.stop_reason is not None:
            stop_reason = vendor.stop_reason
        return cls(
            f"msg_{serial:020x}",
            model,
            tuple(blocks),
            stop_reason,
            stop_sequence,
            _estimate_input_tokens(body),
            vendor,
        )

    @property
    def output_tokens(self) -> int:
        """Output tokens; never zero, as the API counts a token even for empty answers."""
        return max(1, sum(block.tokens for block in self.blocks))

    def usage(self, output_tokens: int) -> dict[str, Any]:
        """The ``usage`` object of a message (and of ``message_start``)."""
        usage: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.vendor.cache_write,
            "cache_read_input_tokens": self.vendor.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.vendor.cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        thinking = self._thinking_tokens()
        if thinking is not None:
            usage["output_tokens_details"] = {"thinking_tokens": thinking}
        return usage

    def _thinking_tokens(self) -> int | None:
        blocks = [block for block in self.blocks if block.kind == "thinking"]
        return sum(block.tokens for block in blocks) if blocks else None

    def _stop_details(self) -> dict[str, Any] | None:
        if self.stop_reason == "refusal":
            return {"type": "refusal", "category": None, "explanation": None}
        return None

    def message(self) -> bytes:
        """The non-streamed ``message`` body."""
        return orjson.dumps(
            {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [block.whole() for block in self.blocks],
                "stop_reason": self.stop_reason,
                "stop_sequence": self.stop_sequence,
                "stop_details": self._stop_details(),
                "usage": self.usage(self.output_tokens),
            }
        )

    def events(self) -> list[tuple[bytes, bool]]:
        """The stream's SSE events as (bytes, carries a token), pings included."""
        opening: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(1),
        }
        events = [(_event("message_start", {"type": "message_start", "message": opening}), False)]
        events.append((_PING, False))
        for index, block in enumerate(self.blocks):
            events += _block_events(index, block)
        tokens = [position for position, (_, token) in enumerate(events) if token]
        events.insert(tokens[len(tokens) // 2] if tokens else len(events), (_PING, False))
        events.append((_event("message_delta", self._message_delta()), False))
        events.append((_event("message_stop", {"type": "message_stop"}), False))
        return events

    def _message_delta(self) -> dict[str, Any]:
        """The ``message_delta`` payload: stop reason and cumulative usage."""
        usage: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.vendor.cache_write,
            "cache_read_input_tokens": self.vendor.cache_read,
            "output_tokens": self.output_tokens,
        }
        thinking = self._thinking_tokens()
        if thinking is not None:
            usage["output_tokens_details"] = {"thinking_tokens": thinking}
        delta: dict[str, Any] = {
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
        }
        if self.stop_reason == "refusal":
            delta["stop_details"] = self._stop_details()
        return {"type": "message_delta", "delta": delta, "usage": usage}


def _block_events(index: int, block: _Block) -> list[tuple[bytes, bool]]:
    """``content_block_start``, its deltas and ``content_block_stop`` for one block."""
    opening = {"type": "content_block_start", "index": index, "content_block": block.start()}
    events = [(_event("content_block_start", opening), False)]
    for delta, token in block.deltas():
        payload = {"type": "content_block_delta", "index": index, "delta": delta}
        events.append((_event("content_block_delta", payload), token))
    closing = {"type": "content_block_stop", "index": index}
    events.append((_event("content_block_stop", closing), False))
    return events


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _thinking_block(*, omitted: bool) -> _Block:
    text = "".join(_THOUGHTS)
    signature = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return _Block("thinking", () if omitted else _THOUGHTS, signature=signature)


def _tool_block(tool_id: str, name: str, schema: Any, chunks: int) -> _Block:
    arguments = _tool_input(name, orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    value = orjson.loads(arguments)
    pieces = ("",) if value == {} else ("", *_odd_split(arguments.decode(), chunks))
    return _Block("tool_use", pieces, tool_id=tool_id, name=name, input=value)


@functools.lru_cache(maxsize=256)
def _tool_input(name: str, schema: bytes) -> bytes:
    """A tool input (JSON) valid for the tool's schema; ``{}`` for a schema it cannot meet."""
    try:
        value = instance_for(orjson.loads(schema), seed=name)
    except SchemaInstanceError:
        value = {}
    return orjson.dumps(value if isinstance(value, dict) else {})


@functools.lru_cache(maxsize=256)
def _format_text(schema: bytes) -> str:
    """The JSON text answer for an ``output_config.format`` schema."""
    try:
        return orjson.dumps(instance_for(orjson.loads(schema), seed="output")).decode()
    except SchemaInstanceError:
        return "{}"


def _text_pieces(body: dict[str, Any], chunks: int) -> tuple[tuple[str, ...], str | None]:
    """The text answer's pieces (one token each) and the stop sequence that cut it."""
    config = body.get("output_config") or {}
    fmt = config.get("format")
    if fmt:
        text = _format_text(orjson.dumps(fmt["schema"], option=orjson.OPT_SORT_KEYS))
        return _odd_split(text, max(1, chunks)), None
    pieces = tuple(_WORDS[i % len(_WORDS)] for i in range(chunks))
    return _cut_at_stop_sequence(pieces, body.get("stop_sequences") or [])


def _cut_at_stop_sequence(
    pieces: tuple[str, ...], sequences: Sequence[str]
) -> tuple[tuple[str, ...], str | None]:
    """Cut the text before the earliest stop sequence in it (not included, like the API)."""
    text = "".join(pieces)
    found = [(text.find(s), s) for s in sequences if s in text]
    if not found:
        return pieces, None
    cut, sequence = min(found)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > cut:
            if cut > used:
                kept.append(piece[: cut - used])
            break
        kept.append(piece)
        used += len(piece)
    return tuple(kept), sequence


def _odd_split(text: str, parts: int) -> tuple[str, ...]:
    """Cut `text` into up to `parts` non-empty pieces at uneven places (mid-key, mid-word)."""
    parts = max(1, min(parts, len(text)))
    cuts = sorted(
        {
            min(len(text) - 1, max(1, len(text) * i // parts + (1 + i % 3) * (-1) ** i))
            for i in range(1, parts)
        }
    )
    bounds = [0, *cuts, len(text)]
    return tuple(text[a:b] for a, b in itertools.pairwise(bounds) if b > a) or (text,)


def _pick_tools(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """The (name, input_schema) of each tool to call, in order; empty for a text answer."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    kind = choice.get("type", "auto")
    if not tools or kind == "none":
        return []
    schemas = {tool["name"]: tool["input_schema"] for tool in tools}
    if kind == "tool":
        return [(choice["name"], schemas[choice["name"]])]
    last = body["messages"][-1]
    if kind == "auto" and _answers_tools(last):
        return []
    text = _user_text(last)
    named = [name for name in schemas if _mentions(text, name)]
    if len(named) >= 2 and not choice.get("disable_parallel_tool_use", False):
        return [(name, schemas[name]) for name in named]
    first = named[0] if named else next(iter(schemas))
    return [(first, schemas[first])]


def _answers_tools(message: dict[str, Any]) -> bool:
    content = message["content"]
    return (
        message["role"] == "user"
        and isinstance(content, list)
        and any(block.get("type") == "tool_result" for block in content)
    )


def _user_text(message: dict[str, Any]) -> str:
    if message["role"] != "user":
        return ""
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(block["text"] for block in content if block.get("type") == "text")


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])", text) is not None


def _estimate_input_tokens(body: dict[str, Any]) -> int:
    """A cheap, deterministic input token count: 4 characters per token plus framing."""
    chars = 0
    system = body.get("system")
    if isinstance(system, str):
        chars += len(system)
    elif isinstance(system, list):
        chars += sum(len(block["text"]) for block in system)
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content:
            kind = block["type"]
            if kind == "text":
                chars += len(block["text"])
            elif kind in ("image", "document"):
                chars += 1000  # a flat cost per attachment
            elif kind == "tool_use":
                chars += len(orjson.dumps(block["input"]))
            elif kind == "tool_result" and isinstance(block.get("content"), str):
                chars += len(block["content"])
    for tool in body.get("tools") or []:
        chars += len(orjson.dumps(tool))
    return 3 + 4 * len(body["messages"]) + chars // 4


async def _stream(
    reply: Reply,
    request_id: str,
    events: list[tuple[bytes, bool]],
    b: Behaviour,
    timer: CoarseTimer,
) -> None:
    """Write the events on schedule, with a reset or an in-band error where asked.

    Unpaced, everything goes in one write. Paced, each token-carrying event after the
    first waits for its slot (``ttft + k * interval``) and takes the events queued
    before it along; the events after the last token go with it. An injected failure
    comes in a write of its own, `FAILURE_GAP_S` after the events before it.
    """
    end = len(events)
    reset_at, fail_at = failure_positions(b, end)
    interval = b.chunk_interval_s
    headers = [_SSE, ("cache-control", "no-cache"), ("request-id", request_id)]
    flush = StreamOut(reply, headers).flush

    start = trio.current_time() + b.ttft_ms / 1000.0
    if b.ttft_ms > 0:  # a zero wait would still round up to the next ms tick
        await timer.sleep_until(start)
    if reset_at == 0:
        reply.abort()
    pending = b""
    slot = 0
    for position in range(end if fail_at is None else fail_at):
        data, token = events[position]
        if token and interval > 0:
            if slot > 0:
                await flush(pending)
                pending = b""
                await timer.sleep_until(start + slot * interval)
            slot += 1
        pending += data
    if fail_at is not None:
        await flush(pending)
        pending = b""
        await timer.sleep_until(trio.current_time() + FAILURE_GAP_S)
        if fail_at == reset_at:
            reply.abort()
        error = {
            "type": "error",
            "error": {
                "type": b.error_type or "overloaded_error",
                "message": b.error_message or "Overloaded",
            },
        }
        pending = _event("error", error)
    await flush(pending)
    await reply.end()


def run_fake_anthropic(**defaults: Any) -> AbstractContextManager[tuple[FakeAnthropic, str]]:
    """Run a `FakeAnthropic(**defaults)` on a free loopback port; yield it and its base URL.

    `defaults` are FakeAnthropic's keyword arguments: knobs, `api_key`, `models`...
    The base URL ends in ``/v1``; requests go to ``{base_url}/messages``.
    """
    return run_fake(FakeAnthropic, **defaults)
