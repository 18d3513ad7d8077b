"""Pure checks of a streamed Chat Completions answer, from its bytes (A6).

`check_stream(raw, request)` decodes the event stream (WHATWG rules, with the SSE
decoder the load generator uses) and checks, in the order a client meets them:

- framing: every event's data is JSON or ``[DONE]``; no bytes of an unfinished event
  at the end; nothing after ``[DONE]``;
- each chunk: ``object: "chat.completion.chunk"``, a non-empty string `id`, integer
  `created`, string `model`, `choices` an array; the same id, created and model on
  every chunk;
- each choice: an integer index in 0..n-1, a `delta` object, `finish_reason` null or
  one of the five reasons; the first delta of each choice carries ``role:
  "assistant"``; exactly one finish reason per choice, on its last chunk;
- tool-call deltas: each fragment has an integer `index`; the first fragment of a call
  has its `id`, ``type: "function"`` and `function.name`; later ones do not change
  them; `arguments` pieces are strings and, assembled, a JSON value (unless the
  choice ended by `length`);
- usage: with ``stream_options.include_usage`` exactly one chunk carries a usage
  object, the last one, with ``choices: []`` (earlier chunks: null or absent); without
  it, no chunk carries one;
- the end: ``data: [DONE]``; or, after a failure, a final ``data: {"error": ...}``
  event in the error shape with nothing after it. A stream that ends with neither is a
  silent cut.

It returns the violations and the `Answer` a client would assemble, so that the
semantic checks of `bench.contract.checks` apply to streams as to completions.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.contract.checks import (
    FINISH_REASONS,
    Answer,
    Call,
    Choice,
    Violation,
    check_error,
    check_usage,
    expected_choices,
    is_int,
    json_type,
)
from gateway.openai.sse import SSEDecoder, SSEProtocolError

__all__ = ["StreamResult", "check_stream", "decode_events"]

_MAX_EVENT_BYTES = 4 * 1024 * 1024


@dataclass
class StreamResult:
    """What `check_stream` found: the violations, the assembled answer, how it ended."""

    violations: list[Violation] = field(default_factory=list)
    answer: Answer = field(default_factory=Answer)
    done: bool = False  # ended with [DONE]
    error: Any = None  # the final error event's body, if it ended with one
    events: int = 0


def decode_events(raw: bytes) -> tuple[list[bytes], list[Violation]]:
    """The data of each event in `raw`, and framing violations."""
    decoder = SSEDecoder(max_event_bytes=_MAX_EVENT_BYTES)
    found: list[Violation] = []
    try:
        datas = [event.data for event in decoder.feed(raw)]
    except SSEProtocolError as exc:
        return [], [Violation("sse.framing", "stream", f"not an event stream: {exc}")]
    if decoder.pending:
        found.append(
            Violation("sse.framing", "end", "the stream ends inside an event (no blank line)")
        )
    return datas, found


@dataclass
class _ChoiceState:
    seen: bool = False
    finished_at: int | None = None  # event number of the finish reason
    calls: dict[int, Call] = field(default_factory=dict)
    choice: Choice = field(default_factory=lambda: Choice(0))


class _Stream:
    """The running checks of one stream."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.n = expected_choices(request)
        options = request.get("stream_options")
        self.want_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.result = StreamResult()
        self.header: tuple[Any, Any, Any] | None = None
        self.states: dict[int, _ChoiceState] = {}
        self.usage_at: list[int] = []
        self.last_chunk = -1

    def fail(self, rule: str, where: str, message: str) -> None:
        self.result.violations.append(Violation(rule, where, message))

    def chunk(self, number: int, chunk: Any) -> None:
        where = f"event {number}"
        if not isinstance(chunk, dict):
            self.fail("chunk.shape", where, f"expected a JSON object, got {json_type(chunk)}")
            return
        self.last_chunk = number
        if chunk.get("object") != "chat.completion.chunk":
            self.fail("chunk.shape", f"{where}.object", f"{chunk.get('object')!r}")
        chunk_id, created, model = chunk.get("id"), chunk.get("created"), chunk.get("model")
        if not isinstance(chunk_id, str) or not chunk_id:
            self.fail("chunk.shape", f"{where}.id", f"expected a non-empty string: {chunk_id!r}")
        if not is_int(created):
            self.fail("chunk.shape", f"{where}.created", f"expected an integer: {created!r}")
        if not isinstance(model, str):
            self.fail("chunk.shape", f"{where}.model", f"expected a string: {model!r}")
        if self.header is None:
            self.header = (chunk_id, created, model)
        else:
            for key, first, now in zip(
                ("id", "created", "model"), self.header, (chunk_id, created, model), strict=True
            ):
                if now != first:
                    self.fail("chunk.same", f"{where}.{key}", f"{now!r}, first chunk {first!r}")
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if usage is not None:
            self.usage_at.append(number)
            self.result.answer.usage = usage if isinstance(usage, dict) else None
            if not self.want_usage:
                self.fail("usage.unasked", f"{where}.usage", "usage without include_usage")
            elif choices != []:
                self.fail(
                    "usage.chunk", f"{where}.choices", "the usage chunk must have choices: []"
                )
            self.result.violations += check_usage(usage, f"{where}.usage")
        if not isinstance(choices, list):
            self.fail("chunk.shape", f"{where}.choices", f"expected an array: {choices!r}")
            return
        for k, choice in enumerate(choices):
            self.choice(number, f"{where}.choices[{k}]", choice)

    def choice(self, number: int, where: str, choice: Any) -> None:
        if not isinstance(choice, dict):
            self.fail("chunk.shape", where, f"expected an object, got {json_type(choice)}")
            return
        index = choice.get("index")
        if not is_int(index) or not 0 <= index < self.n:
            self.fail("choice.index", f"{where}.index", f"{index!r} for n={self.n}")
            return
        state = self.states.setdefault(index, _ChoiceState(choice=Choice(index)))
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            self.fail("chunk.shape", f"{where}.delta", f"expected an object: {delta!r}")
            delta = {}
        if state.finished_at is not None:
            self.fail("finish.last", where, f"after choice {index}'s finish reason")
        if not state.seen:
            state.seen = True
            if delta.get("role") != "assistant":
                self.fail(
                    "delta.role",
                    f"{where}.delta",
                    f"first delta without role 'assistant': {delta!r}",
                )
        elif "role" in delta and delta["role"] not in (None, "assistant"):
            self.fail("delta.role", f"{where}.delta.role", f"{delta['role']!r}")
        self.delta(where, delta, state)
        reason = choice.get("finish_reason")
        if reason is not None:
            if reason not in FINISH_REASONS:
                self.fail("finish.reason", f"{where}.finish_reason", f"{reason!r}")
            if state.finished_at is not None:
                self.fail(
                    "finish.once", f"{where}.finish_reason", f"a second finish reason {reason!r}"
                )
            state.finished_at = number
            state.choice.finish_reason = reason

    def delta(self, where: str, delta: dict[str, Any], state: _ChoiceState) -> None:
        for key in ("content", "refusal"):
            piece = delta.get(key)
            if piece is None:
                continue
            if not isinstance(piece, str):
                self.fail("delta.shape", f"{where}.delta.{key}", f"expected a string: {piece!r}")
            else:
                setattr(state.choice, key, (getattr(state.choice, key) or "") + piece)
        fragments = delta.get("tool_calls")
        if fragments is None:
            return
        if not isinstance(fragments, list):
            self.fail(
                "tool_delta.shape", f"{where}.delta.tool_calls", f"expected an array: {fragments!r}"
            )
            return
        for k, fragment in enumerate(fragments):
            self.fragment(f"{where}.delta.tool_calls[{k}]", fragment, state)

    def fragment(self, where: str, fragment: Any, state: _ChoiceState) -> None:
        if not isinstance(fragment, dict):
            self.fail("tool_delta.shape", where, f"expected an object: {fragment!r}")
            return
        index = fragment.get("index")
        if not is_int(index):
            self.fail("tool_delta.index", f"{where}.index", f"expected an integer index: {index!r}")
            return
        function = fragment.get("function")
        if function is not None and not isinstance(function, dict):
            self.fail("tool_delta.shape", f"{where}.function", f"expected an object: {function!r}")
            function = None
        function = function or {}
        name, call_id = function.get("name"), fragment.get("id")
        call = state.calls.get(index)
        if call is None:
            if not isinstance(call_id, str) or not call_id:
                self.fail(
                    "tool_delta.first", f"{where}.id", f"the first fragment has no id: {fragment!r}"
                )
            if fragment.get("type") != "function":
                self.fail("tool_delta.first", f"{where}.type", f"expected 'function': {fragment!r}")
            if not isinstance(name, str) or not name:
                self.fail(
                    "tool_delta.first",
                    f"{where}.function.name",
                    f"the first fragment has no name: {fragment!r}",
                )
            call = Call(
                call_id if isinstance(call_id, str) else None,
                name if isinstance(name, str) else None,
                "",
            )
            state.calls[index] = call
            state.choice.calls.append(call)
        else:
            if call_id is not None and call_id != call.id:
                self.fail(
                    "tool_delta.same",
                    f"{where}.id",
                    f"{call_id!r} changes the call's id {call.id!r}",
                )
            if name is not None and name != call.name:
                self.fail(
                    "tool_delta.same",
                    f"{where}.function.name",
                    f"{name!r} changes the call's name {call.name!r}",
                )
        arguments = function.get("arguments")
        if arguments is not None:
            if isinstance(arguments, str):
                call.arguments += arguments
            else:
                self.fail(
                    "tool_delta.shape",
                    f"{where}.function.arguments",
                    f"expected a string: {arguments!r}",
                )

    def end(self, done: bool, error: Any) -> None:
        result = self.result
        if not done and error is None:
            result.violations.append(
                Violation("stream.end", "end", "the stream ends without [DONE] or an error event")
            )
        if error is not None:
            return  # a failed stream may stop anywhere: only its error event is judged
        for index in range(self.n):
            state = self.states.get(index)
            if state is None or not state.seen:
                self.fail(
                    "choice.missing", f"choice {index}", f"no chunk for choice {index} (n={self.n})"
                )
            elif state.finished_at is None:
                self.fail("finish.once", f"choice {index}", "no finish reason")
            result.answer.choices[index] = state.choice if state else Choice(index)
        for index, state in sorted(self.states.items()):
            if state.choice.finish_reason == "length":
                continue
            for k, call in enumerate(state.choice.calls):
                try:
                    orjson.loads(call.arguments)
                except orjson.JSONDecodeError:
                    self.fail(
                        "tool_delta.arguments",
                        f"choice {index} tool call {k}",
                        f"assembled arguments are not JSON: {call.arguments!r}",
                    )
        if self.want_usage:
            if not self.usage_at:
                self.fail("usage.chunk", "end", "include_usage was asked: no usage chunk")
            elif len(self.usage_at) > 1:
                self.fail("usage.chunk", "end", f"usage in {len(self.usage_at)} chunks")
            elif self.usage_at[0] != self.last_chunk:
                self.fail(
                    "usage.chunk", f"event {self.usage_at[0]}", "the usage chunk is not the last"
                )


def check_stream(raw: bytes, request: Mapping[str, Any]) -> StreamResult:
    """Check the body of a 200 streamed answer to `request` (see the module doc)."""
    stream = _Stream(request)
    result = stream.result
    datas, framing = decode_events(raw)
    result.violations += framing
    result.events = len(datas)
    done = False
    error: Any = None
    for number, data in enumerate(datas, start=1):
        if done or error is not None:
            what = "[DONE]" if done else "the error event"
            stream.fail("stream.end", f"event {number}", f"after {what}: {data[:120]!r}")
            break
        if data == b"[DONE]":
            done = True
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            stream.fail("sse.json", f"event {number}", f"data is not JSON: {data[:120]!r}")
            continue
        if isinstance(chunk, dict) and "error" in chunk:
            error = chunk
            result.violations += check_error(chunk, f"event {number}")
            continue
        stream.chunk(number, chunk)
    result.done, result.error = done, error
    stream.end(done, error)
    return result
