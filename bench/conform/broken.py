"""A chat-completions endpoint that can be broken on purpose, one switch per defect.

With no defect switched on it is a correct server, written from the contract
(docs/wire-formats.md A5-A7): a bearer key (401 in the error shape without it),
requests checked by the gateway's validator (400 naming the field), answers from the
built-in mock model (deterministic; tools, tool_choice, json_schema, n and max tokens
honoured), streams of `chat.completion.chunk` events ending in ``[DONE]``, usage only
when asked, and for the model `FAIL_MODEL` a stream that fails after two chunks with a
final error event. Each defect in `DEFECTS` breaks one sentence of that contract, as a
real server might; tests/bench/test_conform.py proves that ``python -m bench conform``
reports each one with the right property, and nothing when none is on.

The defects change what the server does (its answer, its status, its stream), never
what the checks look at: they are behaviours, named after the sentence they break.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from functools import partial
from itertools import count
from typing import Any

import orjson
import trio

from bench.fakes.server import Reply, Request, serve_http
from gateway.config import MockOptions
from gateway.errors import InvalidRequest
from gateway.openai.validate import validate_chat_request
from gateway.providers.mock.reply import respond

__all__ = ["DEFECTS", "FAIL_MODEL", "KEY", "BrokenEndpoint"]

KEY = "sk-broken-endpoint-key"
FAIL_MODEL = "fail-mid-stream"

DEFECTS: dict[str, str] = {
    # streams
    "chunk_ids": "every chunk of a stream has an id of its own (must be the same)",
    "created_changes": "a stream's created time moves from chunk to chunk (must be the same)",
    "no_role": "the first delta of a choice has no role",
    "tool_index": "tool-call deltas carry no index",
    "name_late": "a tool call's name comes in its second fragment, not its first",
    "arguments_cut": "a streamed tool call loses its last arguments fragment",
    "finish_twice": "the finish chunk is sent twice",
    "content_after_finish": "the last content piece comes after the finish reason",
    "usage_in_finish": "the usage rides on the finish chunk, which has choices",
    "usage_unasked": "a stream carries usage although include_usage was not asked",
    "no_done": "a stream ends without data: [DONE]",
    "one_newline": "events are separated by one newline instead of a blank line",
    "stream_differs": "a stream drops the answer's last content piece",
    # completions
    "no_usage_details": "usage lacks prompt_tokens_details and completion_tokens_details",
    "n_ignored": "n > 1 is answered with one choice",
    "arguments_object": "tool-call arguments are a JSON object, not a string",
    # what the answer says
    "undeclared_tool": "tool calls name a tool the request did not declare",
    "tool_choice_ignored": "tool_choice is ignored (the model picks as under auto)",
    "max_tokens_ignored": "max_tokens and max_completion_tokens are ignored",
    "schema_ignored": "json_schema is answered like json_object (the schema is ignored)",
    # errors
    "error_without_type": "error bodies have no type",
    "500_for_bad_field": "an invalid field is answered 500",
    "wrong_param": "a validation error's param names the enclosing object",
    "bad_key_403": "a wrong key is answered 403",
    "no_auth": "any key, or none, is accepted",
    "silent_cut": "a failure mid-stream closes the stream without an error event",
    "done_after_error": "a failure mid-stream sends [DONE] after its error event",
}

_JSON = ("content-type", "application/json")
_SSE = ("content-type", "text/event-stream")


class BrokenEndpoint:
    """The server; `defects` are names from `DEFECTS`."""

    def __init__(self, defects: Iterable[str] = (), key: str = KEY) -> None:
        self.defects = frozenset(defects)
        unknown = self.defects - DEFECTS.keys()
        if unknown:
            raise ValueError(f"unknown defects: {', '.join(sorted(unknown))}")
        self.key = key
        self._ids = count(1)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int]) -> None:
        """Serve on `host`:`port` (0: a free one) until cancelled; started with the port."""
        await serve_http(self.handle, host, port, task_status=task_status)

    def on(self, defect: str) -> bool:
        return defect in self.defects

    # -- errors ------------------------------------------------------------------

    def _error(self, message: str, kind: str, param: str | None, code: str | None) -> bytes:
        error: dict[str, Any] = {"message": message, "type": kind, "param": param, "code": code}
        if self.on("error_without_type"):
            del error["type"]
        return orjson.dumps({"error": error})

    async def _fail(
        self,
        reply: Reply,
        status: int,
        message: str,
        kind: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        await reply.send(status, [_JSON], self._error(message, kind, param, code))

    # -- the request -------------------------------------------------------------

    async def handle(self, request: Request, reply: Reply) -> None:
        """The `bench.fakes.server` handler."""
        if request.path != "/v1/chat/completions" or request.method != "POST":
            await self._fail(reply, 404, f"Unknown URL {request.path}", "invalid_request_error")
            return
        header = request.headers.get("authorization", "")
        if header != f"Bearer {self.key}" and not self.on("no_auth"):
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and given.strip() and self.on("bad_key_403"):
                await self._fail(reply, 403, "This key may not do that.", "permission_error")
                return
            await self._fail(
                reply, 401, "Invalid or missing API key.", "authentication_error", None,
                "invalid_api_key",
            )  # fmt: skip
            return
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            await self._fail(reply, 400, "The body is not valid JSON.", "invalid_request_error")
            return
        try:
            validate_chat_request(body)
        except InvalidRequest as error:
            param = error.param
            if self.on("wrong_param") and param is not None:
                param = param.rpartition(".")[0] or param.rpartition("[")[0] or None
            if self.on("500_for_bad_field"):
                await self._fail(reply, 500, "Internal error.", "server_error")
                return
            await self._fail(reply, 400, error.message, "invalid_request_error", param)
            return
        if body["model"] == FAIL_MODEL:
            await self._failing(reply, body)
            return
        await self._answer(reply, body)

    # -- answers -----------------------------------------------------------------

    def _payload(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the model is asked, after the defects that change the model's behaviour."""
        payload = copy.deepcopy(body)
        if self.on("tool_choice_ignored"):
            payload.pop("tool_choice", None)
        if self.on("max_tokens_ignored"):
            payload.pop("max_tokens", None)
            payload.pop("max_completion_tokens", None)
        fmt = payload.get("response_format")
        if self.on("schema_ignored") and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            payload["response_format"] = {"type": "json_object"}
        if self.on("n_ignored"):
            payload.pop("n", None)
        if self.on("usage_unasked") and payload.get("stream") is True:
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def _answer(self, reply: Reply, body: dict[str, Any]) -> None:
        request_id = f"chatcmpl-broken{next(self._ids):012x}"
        mock = respond(
            self._payload(body), MockOptions(ttft_ms=0, tokens_per_s=0),
            created=int(time.time()), request_id=request_id,
        )  # fmt: skip
        data = b"".join(part for _, part in mock.parts)
        if body.get("stream") is not True:
            completion = orjson.loads(data)
            self._break_completion(completion, body)
            await reply.send(200, [_JSON], orjson.dumps(completion))
            return
        chunks = [orjson.loads(e[6:]) for e in data.split(b"\n\n") if e and e != b"data: [DONE]"]
        events = [orjson.dumps(chunk) for chunk in self._break_stream(chunks, body)]
        if not self.on("no_done"):
            events.append(b"[DONE]")
        gap = b"\n" if self.on("one_newline") else b"\n\n"
        await reply.start(200, [_SSE])
        await reply.end(b"".join(b"data: " + event + gap for event in events))

    def _break_completion(self, completion: dict[str, Any], body: dict[str, Any]) -> None:
        if self.on("no_usage_details"):
            completion["usage"].pop("prompt_tokens_details", None)
            completion["usage"].pop("completion_tokens_details", None)
        for choice in completion["choices"]:
            for call in choice["message"].get("tool_calls") or ():
                if self.on("undeclared_tool"):
                    call["function"]["name"] += "_v2"
                if self.on("arguments_object"):
                    call["function"]["arguments"] = orjson.loads(call["function"]["arguments"])

    def _break_stream(
        self, chunks: list[dict[str, Any]], body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        held: dict[tuple[int, int], str] = {}  # (choice, call) -> the name held back
        opened: set[tuple[int, int]] = set()
        for number, chunk in enumerate(chunks):
            if self.on("chunk_ids"):
                chunk["id"] = f"{chunk['id']}-{number}"
            if self.on("created_changes"):
                chunk["created"] += number
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if self.on("no_role"):
                    delta.pop("role", None)
                for fragment in delta.get("tool_calls") or ():
                    where = (choice["index"], fragment["index"])
                    function = fragment.setdefault("function", {})
                    if self.on("undeclared_tool") and "name" in function:
                        function["name"] += "_v2"
                    if self.on("name_late"):
                        if where not in opened:
                            opened.add(where)
                            held[where] = function.pop("name", "")
                        elif where in held:
                            function["name"] = held.pop(where)
                    if self.on("tool_index"):
                        del fragment["index"]
            out.append(chunk)
        if self.on("arguments_cut"):
            out = _drop_last_arguments(out)
        if self.on("stream_differs"):
            out = _drop_last_content(out)
        if self.on("content_after_finish"):
            out = _finish_early(out)
        if self.on("finish_twice"):
            finishes = [c for c in out if c["choices"] and c["choices"][0]["finish_reason"]]
            if finishes:
                out.insert(out.index(finishes[-1]) + 1, copy.deepcopy(finishes[-1]))
        if self.on("usage_in_finish") and out and out[-1]["choices"] == [] and len(out) > 1:
            usage = out.pop()["usage"]
            out[-1]["usage"] = usage
        return out

    async def _failing(self, reply: Reply, body: dict[str, Any]) -> None:
        """`FAIL_MODEL`: two chunks, then the failure (A6: an error event, no [DONE])."""
        if body.get("stream") is not True:
            await self._fail(reply, 502, "The model failed.", "upstream_error")
            return
        head = {"id": "chatcmpl-failing", "object": "chat.completion.chunk", "created": 1,
                "model": FAIL_MODEL}  # fmt: skip
        first = {
            **head,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
        second = {**head, "choices": [
            {"index": 0, "delta": {"content": "Partial"}, "finish_reason": None}]}  # fmt: skip
        events = [orjson.dumps(first), orjson.dumps(second)]
        if not self.on("silent_cut"):
            events.append(self._error("The model failed mid-stream.", "upstream_error", None, None))
            if self.on("done_after_error"):
                events.append(b"[DONE]")
        await reply.start(200, [_SSE])
        await reply.end(b"".join(b"data: " + event + b"\n\n" for event in events))


def _choice_events(out: list[dict[str, Any]], key: str) -> list[int]:
    return [k for k, c in enumerate(out) if c["choices"] and key in c["choices"][0]["delta"]]


def _drop_last_arguments(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without the last chunk carrying an arguments piece (of any call)."""
    pieces = [
        k
        for k, c in enumerate(out)
        if c["choices"]
        and any(
            f.get("function", {}).get("arguments")
            for f in c["choices"][0]["delta"].get("tool_calls") or ()
        )
    ]
    return [c for k, c in enumerate(out) if not pieces or k != pieces[-1]]


def _drop_last_content(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pieces = [k for k in _choice_events(out, "content") if out[k]["choices"][0]["delta"]["content"]]
    return [c for k, c in enumerate(out) if not pieces or k != pieces[-1]]


def _finish_early(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finish chunk of choice 0 moved before its last content piece."""
    pieces = [k for k in _choice_events(out, "content") if out[k]["choices"][0]["delta"]["content"]]
    finishes = [k for k, c in enumerate(out) if c["choices"] and c["choices"][0]["finish_reason"]]
    if not pieces or not finishes or finishes[0] < pieces[-1]:
        return out
    moved = out.pop(finishes[0])
    out.insert(pieces[-1], moved)
    return out


def serve(defects: Iterable[str] = (), host: str = "127.0.0.1") -> partial[Any]:
    """A serve function for `BackgroundTrio`: the endpoint with `defects` on a free port."""
    return partial(BrokenEndpoint(defects).serve, host, 0)
