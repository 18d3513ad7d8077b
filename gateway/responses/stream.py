"""Chat completion chunks in, Responses API events out: the one translator every bridged
provider's stream goes through.

A provider's stream translator (OpenAI-compatible, Anthropic, Gemini, the mock) turns
its upstream's stream into OpenAI chat.completion.chunk events; `ResponsesStream`
wraps it and turns those chunks into the Responses API's named events, so there is one
translation to the Responses API, not one per vendor. It keeps the typed stream
contract of providers/base.py (`feed`, `close`, `error`, `finished`, `usage`,
`events` are the wrapped translator's), and adds the stream's ending:

- `response.created` and `response.in_progress` go out with the first output event,
  not before: a stream that fails before any output still gets a real HTTP status.
- `close()` finishes the open items (their `done` events) and fixes the final
  response object, so that it can be settled and stored before the last event.
- `last_event(error)`: `response.completed` (or `response.incomplete` after a finish
  reason of `length` or `content_filter`), or, for a failure, an `error` event and
  `response.failed`; each event numbered in order (`sequence_number`).

Pure module: no I/O.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamError
from gateway.providers.base import StreamTranslator
from gateway.responses.objects import (
    Events,
    ending,
    error_object,
    incomplete_reason,
    usage_from_chat,
)
from gateway.responses.output import Output

JSON = dict[str, Any]


class ResponsesStream:
    """A provider's chat-chunk translator, re-told as Responses API events."""

    __slots__ = (
        "_error",
        "_events",
        "_finish",
        "_inner",
        "_output",
        "_response",
        "_started",
        "response",
    )

    def __init__(self, inner: StreamTranslator, skeleton: JSON) -> None:
        self._inner = inner
        self._response = skeleton  # the response object so far (status in_progress)
        self._events = Events()
        self._output = Output(skeleton["id"], self._events)
        self._started = False  # response.created went out
        self._finish: object = None  # the last finish reason seen
        self._error: GatewayError | None = None
        self.response: JSON | None = None  # the final response object, once known

    # ---------------------------------------------------------------- the contract

    @property
    def usage(self) -> JSON | None:
        return self._inner.usage

    @property
    def error(self) -> GatewayError | None:
        return self._error or self._inner.error

    @property
    def finished(self) -> bool:
        return self._inner.finished

    @property
    def events(self) -> int:
        return self._inner.events  # chunks, billing's estimate of tokens streamed

    def feed(self, data: bytes) -> bytes:
        if self._error is not None:
            return b""
        return self._translate(self._inner.feed(data))

    def close(self) -> bytes:
        if self._error is not None:
            return b""
        out = [self._translate(self._inner.close())]
        if self.error is not None:
            return out[0]
        more: list[bytes] = []
        self._start(more)
        reason = incomplete_reason(self._finish)
        self._output.close("incomplete" if reason else "completed", more)
        out.extend(more)
        self.response = self.final(None)
        return b"".join(out)

    def last_event(self, error: GatewayError | None) -> bytes:
        """The stream's last event(s), after the request was settled."""
        return ending(self._events, self.final(error), error)

    def final(self, error: GatewayError | None) -> JSON:
        """The response object as the stream ended (with `error`: failed)."""
        done = self.response
        if done is not None and (error is None or done["status"] == "failed"):
            return done
        response = dict(self._response)
        if error is not None:
            response["status"] = "failed"
            response["error"] = error_object(error)
            response["output"] = self._output.snapshot()
        else:
            reason = incomplete_reason(self._finish)
            response["status"] = "incomplete" if reason else "completed"
            if reason:
                response["incomplete_details"] = {"reason": reason}
            response["output"] = [item for item in self._output.items if item is not None]
            response["completed_at"] = int(time.time())
        response["usage"] = usage_from_chat(self._inner.usage)
        self.response = response
        return response

    # ---------------------------------------------------------------- translation

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        self._events.emit(out, "response.created", {"response": self._response})
        self._events.emit(out, "response.in_progress", {"response": self._response})

    def _translate(self, chunks: bytes) -> bytes:
        """Whole `data: {chunk}` events in; their Responses events out."""
        if not chunks:
            return b""
        out: list[bytes] = []
        for event in chunks.split(b"\n\n"):
            if not event.startswith(b"data: "):
                continue
            try:
                chunk = orjson.loads(event[6:])
                choices = chunk.get("choices") or ()
                for choice in choices:
                    if choice.get("index", 0) == 0:
                        self._choice(choice, out)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                self._error = UpstreamError(
                    "The upstream sent a stream chunk of an unexpected shape."
                )
                break
        return b"".join(out)

    def _choice(self, choice: JSON, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        output = self._output
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str):
            reasoning = delta.get("reasoning")  # vLLM, OpenRouter and others
        if isinstance(reasoning, str) and reasoning:
            self._start(out)
            output.reasoning(reasoning, out)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._start(out)
            output.text(content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._start(out)
            output.refusal(refusal, out)
        calls = delta.get("tool_calls")
        if calls:
            self._start(out)
            for call in calls:
                fn = call.get("function") or {}
                arguments = fn.get("arguments")
                output.call(
                    call.get("index", 0),
                    call.get("id"),
                    fn.get("name"),
                    arguments if isinstance(arguments, str) else "",
                    out,
                )
        reason = choice.get("finish_reason")
        if reason is not None:
            self._finish = reason
