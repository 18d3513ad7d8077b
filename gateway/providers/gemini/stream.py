"""Gemini SSE -> OpenAI `chat.completion.chunk` events (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.openai.sse import SSEEvent
from gateway.providers.base import JSON, CallContext
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
from gateway.providers.sse_translator import SSETranslator


@dataclass(slots=True)
class _ChoiceState:
    calls: int = 0  # tool calls emitted so far: the next call's index
    finished: bool = False


class GeminiStreamTranslator(SSETranslator):
    """Gemini SSE (CRLF framed, no [DONE]) in, OpenAI chat.completion.chunk events out.

    Gemini has no end marker: the stream ends at EOF (usage may still follow a
    finishReason), and it is whole when every choice that appeared has finished.
    """

    __slots__ = ("_builder", "_choices", "_head", "_include_usage", "_meta", "_tail", "_usage")

    UPSTREAM = "Gemini"

    def __init__(self, ctx: CallContext) -> None:
        super().__init__()
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

    @property
    def usage(self) -> JSON | None:
        """The last usage Gemini reported, in OpenAI's shape (mapped on first read)."""
        if self._usage is None and self._meta is not None:
            self._usage = openai_usage(self._meta)
        return self._usage

    def _complete(self) -> bool:
        states = self._choices.values()
        return bool(states) and all(s.finished for s in states)

    def _end(self, out: list[bytes]) -> None:
        if self._include_usage and self.usage is not None:
            out.append(self._head + b'],"usage":' + orjson.dumps(self.usage) + b"}\n\n")

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

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        obj = self._object(event.data)
        if obj is None:
            return
        if "error" in obj:
            self.fail(gemini_error(obj, None, None))
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
            self.fail(failed_finish(reason, candidate))
            return
        state.finished = True
        out.append(self._chunk(index, {}, finish_reason(reason, state.calls > 0)))
