"""Gemini SSE -> OpenAI `chat.completion.chunk` events (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.errors import GatewayError, UpstreamError
from gateway.openai.sse import DONE, SSEDecoder, SSEProtocolError
from gateway.providers.base import JSON, CallContext
from gateway.providers.common import SHAPE_ERRORS
from gateway.providers.gemini.errors import gemini_error
from gateway.providers.gemini.response import (
    FAILED,
    Builder,
    blocked,
    candidate_parts,
    choice_index,
    failed_finish,
    finish_reason,
    openai_logprobs,
    openai_usage,
)

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
        self._builder = Builder(ctx)
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
            self._usage = openai_usage(self._meta)
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
            except SHAPE_ERRORS:
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
            self._fail(gemini_error(obj, None, None), out)
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
        elif blocked(obj) and not self._choices:
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
        index = choice_index(candidate, position)
        state = self._state(index, out)
        if state.finished:
            return
        logprobs = openai_logprobs(candidate.get("logprobsResult"))
        kind = ""  # "content" or "reasoning_content" while text is being gathered
        pieces: list[str] = []
        for part in candidate_parts(candidate):
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
        if reason in FAILED:
            self._fail(failed_finish(reason, candidate), out)
            return
        state.finished = True
        out.append(self._chunk(index, {}, finish_reason(reason, state.calls > 0)))
