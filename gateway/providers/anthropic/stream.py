"""Anthropic SSE -> OpenAI `chat.completion.chunk` events (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from gateway.config import AnthropicOptions
from gateway.openai.sse import SSEEvent
from gateway.providers.anthropic.errors import stream_error
from gateway.providers.anthropic.request import JSON_VALUE_TOOL, RESERVED_TOOLS
from gateway.providers.anthropic.response import finish_reason, openai_usage
from gateway.providers.base import JSON, CallContext
from gateway.providers.sse_translator import SSETranslator

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


class AnthropicStreamTranslator(SSETranslator):
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
      the usage chunk (`choices: []`, only when the client asked, E11), and
      `finished`.
    - an `error` event fails the stream (E9); so does an end before `message_stop`.
    - `ping`, `signature_delta`, `citations_delta`, `content_block_stop` of text,
      server-tool blocks and unknown events produce nothing.
    """

    __slots__ = (
        "_base",
        "_blocks",
        "_counts",
        "_created",
        "_finish_sent",
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
        "usage",
    )

    def __init__(self, ctx: CallContext) -> None:
        super().__init__()
        self._include_usage = ctx.include_usage
        self._reasoning = ctx.deployment.options_of(AnthropicOptions).reasoning_output
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
        self._finish_sent = False  # the finish chunk was sent
        # Text held back while the JSON tool may still come (None: text streams as is).
        self._held: list[str] | None = [] if _emulates_json(ctx) else None
        self._counts: dict[str, Any] = {}
        self.usage: JSON | None = None

    # ---------------------------------------------------------------- events

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        obj = self._object(event.data)
        if obj is None:
            return
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._delta(obj, out)
        elif kind == "content_block_start":
            self._block_start(obj, out)
        elif kind == "content_block_stop":
            self._block_stop(obj, out)
        elif kind == "message_start":
            self._message_start(obj, out)
        elif kind == "message_delta":
            self._message_delta(obj, out)
        elif kind == "message_stop":
            self._message_stop(out)
        elif kind == "error":
            self.fail(stream_error(obj))
        # ping and event types added later produce nothing

    def _message_start(self, obj: JSON, out: list[bytes]) -> None:
        message = obj.get("message")
        if isinstance(message, dict):
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._record_usage(usage)
        out.append(self._chunk(b'{"role":"assistant","content":""}'))

    def _block_start(self, obj: JSON, out: list[bytes]) -> None:
        index = obj.get("index")
        block = obj.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = _Block(_TEXT_BLOCK)
            text = block.get("text")
            if isinstance(text, str) and text:
                self._text(text, out)
            return
        if kind == "thinking":
            self._blocks[index] = _Block(_THINKING_BLOCK)
            return
        if kind != "tool_use":
            self._blocks[index] = _Block(_OTHER_BLOCK)
            return
        name = str(block.get("name") or "")
        if name in RESERVED_TOOLS:
            self._json_seen = True
            self._blocks[index] = _Block(_JSON_BLOCK, wrapped=name == JSON_VALUE_TOOL)
            return
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
        out.append(self._chunk(b'{"tool_calls":[' + orjson.dumps(call) + b"]}"))

    def _delta(self, obj: JSON, out: list[bytes]) -> None:
        index = obj.get("index")
        delta = obj.get("delta")
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                self._text(text, out)
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:  # E8: empty fragments carry nothing
                self._arguments(block, fragment, out)
        elif kind == "thinking_delta" and self._reasoning:
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                out.append(self._chunk(b'{"reasoning_content":' + orjson.dumps(text) + b"}"))

    def _arguments(self, block: _Block, fragment: str, out: list[bytes]) -> None:
        if block.kind == _TOOL_BLOCK:
            block.sent = True
            out.append(
                self._chunk(
                    b'{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}'
                    % (block.ordinal, orjson.dumps(fragment))
                )
            )
        elif block.kind == _JSON_BLOCK:
            block.sent = True
            if block.wrapped:
                block.buffer.append(fragment)
            else:
                out.append(self._content(fragment))

    def _block_stop(self, obj: JSON, out: list[bytes]) -> None:
        index = obj.get("index")
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is None:
            return
        if block.kind == _TOOL_BLOCK and not block.sent:
            self._arguments(block, "{}", out)  # a call without arguments (E8)
        elif block.kind == _JSON_BLOCK:
            if block.wrapped:
                answer = _unwrap("".join(block.buffer))
                if answer:
                    out.append(self._content(answer))
            elif not block.sent:
                out.append(self._content("{}"))

    def _message_delta(self, obj: JSON, out: list[bytes]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._record_usage(usage)
        delta = obj.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if self._finish_sent or reason is None:
            return
        self._settle(out)
        json_only = self._json_seen and not self._tools_seen
        out.append(self._finish(finish_reason(reason, json_only)))

    def _message_stop(self, out: list[bytes]) -> None:
        self.finished = True
        if not self._finish_sent:  # no message_delta gave a stop reason
            self._settle(out)
            out.append(self._finish("stop"))
        if self._include_usage and self.usage is not None:
            out.append(self._header() + b'[],"usage":' + orjson.dumps(self.usage) + b"}\n\n")

    def _settle(self, out: list[bytes]) -> None:
        """Content owed before the finish chunk: wrapped JSON still open, held-back text."""
        for index, block in list(self._blocks.items()):
            if block.kind == _JSON_BLOCK and block.wrapped:
                self._block_stop({"index": index}, out)  # no content_block_stop came
        if self._held:
            if not self._json_seen:
                out.append(self._content("".join(self._held)))
            self._held.clear()

    def _finish(self, reason: str) -> bytes:
        """The chunk carrying `finish_reason`; sent once per stream."""
        self._finish_sent = True
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
        self.usage = openai_usage(self._counts)

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

    def _text(self, text: str, out: list[bytes]) -> None:
        """A text block's delta: content now, or held back while JSON mode decides."""
        if self._held is not None:
            self._held.append(text)
        else:
            out.append(self._content(text))


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
    native = ctx.deployment.options_of(AnthropicOptions).structured_output == "native"
    return not (native and ctx.response_format == "json_schema")
