"""An upstream that speaks the Responses API itself (OpenAI: `responses_api = true`):
the request sent as a Responses request, the answer normalised to the gateway's own.

The request: the client's body with the upstream's model name, the conversation in
`input` (the gateway keeps state: `previous_response_id` and item references are
resolved here, so the upstream stores nothing: `store: false`), and the output cap
billing reserved. History items go in the form a stateless upstream accepts: an
assistant message as its text, function calls and outputs without item ids, and no
reasoning items unless they carry their encrypted content.

The answer is relayed with the same normalisation as a bridged one: the response's
id, `model`, `created_at` and echoed settings are the gateway's; every output item
gets an id of this response (so references to it resolve here), every event is
renumbered; `response.created`/`in_progress` wait for the first output event and the
terminal event is the gateway's, written after settlement (stream.py explains why);
the usage reaches billing in chat completions' shape. Events the gateway does not
model (a built-in tool's progress) pass through, renumbered.

Pure module: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamError
from gateway.openai.sse import SSEEvent
from gateway.providers.base import Completion
from gateway.providers.common import load_json_object
from gateway.providers.sse_translator import SSETranslator
from gateway.responses.objects import (
    ITEM_PREFIXES,
    Events,
    ending,
    error_object,
    full_usage,
    item_id_with_prefix,
    usage_to_chat,
)
from gateway.responses.validate import item_type

JSON = dict[str, Any]

MAX_EVENT_BYTES = 16 * 1024 * 1024  # a final response event holds the whole output
_DROPPED = ("previous_response_id", "models", "store", "stream", "stream_options")
_TERMINAL = ("response.completed", "response.incomplete")


def stateless_items(items: Iterable[JSON]) -> list[JSON]:
    """Input items in the form an upstream that stores nothing accepts."""
    out: list[JSON] = []
    for item in items:
        kind = item_type(item)
        if kind == "reasoning":
            if item.get("encrypted_content"):
                out.append(item)
            continue
        if kind == "message" and item.get("role") == "assistant":
            content = item["content"]
            if not isinstance(content, str):
                content = "".join(p.get("text") or p.get("refusal") or "" for p in content)
            out.append({"role": "assistant", "content": content})
        elif kind in ("message", "function_call", "function_call_output"):
            out.append({k: v for k, v in item.items() if k not in ("id", "status")})
        else:
            out.append(item)
    return out


def native_payload(
    request: JSON, items: Iterable[JSON], upstream_model: str, stream: bool, cap: int | None
) -> JSON:
    """The Responses body for the upstream (`cap`: the output tokens billing reserved)."""
    payload = {k: v for k, v in request.items() if k not in _DROPPED}
    payload["model"] = upstream_model
    payload["input"] = stateless_items(items)
    payload["store"] = False
    if stream:
        payload["stream"] = True
        if request.get("stream_options") is not None:
            payload["stream_options"] = request["stream_options"]
    if payload.get("max_output_tokens") is None and cap is not None:
        payload["max_output_tokens"] = cap
    return payload


class _Ids:
    """Upstream item ids -> the gateway's, by output index."""

    __slots__ = ("ids", "response_id")

    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self.ids: dict[str, str] = {}

    def of(self, item: JSON, index: int) -> JSON:
        """`item` with its id replaced by the gateway's."""
        theirs = item.get("id")
        ours = self.ids.get(theirs) if isinstance(theirs, str) else None
        if ours is None:
            prefix = ITEM_PREFIXES.get(str(item.get("type")))
            if prefix is None and isinstance(theirs, str) and "_" in theirs:
                head = theirs.split("_", 1)[0]
                prefix = head if head.isalpha() and head.islower() else None
            ours = item_id_with_prefix(self.response_id, prefix or "item", index)
            if isinstance(theirs, str):
                self.ids[theirs] = ours
        return {**item, "id": ours}

    def output(self, items: object) -> list[JSON]:
        if not isinstance(items, list):
            return []
        return [self.of(item, i) for i, item in enumerate(items) if isinstance(item, dict)]


def final_response(skeleton: JSON, upstream: JSON, ids: _Ids) -> JSON:
    """The gateway's response object from the upstream's final one."""
    response = dict(skeleton)
    status = upstream.get("status")
    response["status"] = status if status in ("completed", "incomplete", "failed") else "completed"
    for key in ("incomplete_details", "error"):
        if upstream.get(key) is not None:
            response[key] = upstream[key]
    response["output"] = ids.output(upstream.get("output"))
    response["usage"] = full_usage(upstream.get("usage"))
    response["completed_at"] = int(time.time())
    return response


def _upstream_failure(response: object) -> UpstreamError:
    error = response.get("error") if isinstance(response, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return UpstreamError(
        f"The upstream's response failed: {message or 'no reason given'}",
        code=code if isinstance(code, str) else None,
    )


def parse_native(body: bytes, skeleton: JSON) -> tuple[JSON, Completion]:
    """A non-streamed upstream response: the gateway's response object, and the
    completion (its bytes, and its usage in chat's shape for billing)."""
    upstream = load_json_object(body)
    if upstream.get("status") == "failed":
        raise _upstream_failure(upstream)
    if not isinstance(upstream.get("output"), list):
        raise UpstreamError("The upstream response has no output.")
    response = final_response(skeleton, upstream, _Ids(skeleton["id"]))
    return response, Completion(orjson.dumps(response), usage_to_chat(upstream.get("usage")))


class NativeStream(SSETranslator):
    """A Responses API stream from the upstream, as the gateway's own."""

    __slots__ = ("_emitter", "_ids", "_skeleton", "_started", "_upstream", "response", "usage")

    UPSTREAM = "The upstream"

    def __init__(self, skeleton: JSON) -> None:
        super().__init__(MAX_EVENT_BYTES)
        self._skeleton = skeleton
        self._emitter = Events()
        self._ids = _Ids(skeleton["id"])
        self._started = False
        self._upstream: JSON | None = None  # the upstream's final response object
        self.response: JSON | None = None
        self.usage: JSON | None = None

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            self._emitter.emit(out, "response.created", {"response": self._skeleton})
            self._emitter.emit(out, "response.in_progress", {"response": self._skeleton})

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        if event.data == b"[DONE]":
            return
        obj = self._object(event.data)
        if obj is None:
            return
        kind = obj.get("type")
        if not isinstance(kind, str):
            raise TypeError("a stream event without a type")
        if kind in _TERMINAL:
            upstream = obj.get("response")
            if not isinstance(upstream, dict):
                raise TypeError("a final event without its response")
            self._upstream = upstream
            self.usage = usage_to_chat(upstream.get("usage"))
            self.finished = True
            return
        if kind == "response.failed":
            self.fail(_upstream_failure(obj.get("response")))
            return
        if kind == "error":
            message = obj.get("message")
            code = obj.get("code")
            self.fail(
                UpstreamError(
                    f"The upstream reported an error mid-stream: {message or 'no reason given'}",
                    code=code if isinstance(code, str) else None,
                )
            )
            return
        if kind in ("response.created", "response.in_progress", "response.queued"):
            return  # ours go out with the first output event
        fields = {k: v for k, v in obj.items() if k not in ("type", "sequence_number")}
        item = fields.get("item")
        if isinstance(item, dict):
            fields["item"] = self._ids.of(item, _index(fields))
        theirs = fields.get("item_id")
        if isinstance(theirs, str) and theirs in self._ids.ids:
            fields["item_id"] = self._ids.ids[theirs]
        self._start(out)
        self._emitter.emit(out, kind, fields)

    def _end(self, out: list[bytes]) -> None:
        self._start(out)
        assert self._upstream is not None  # finished
        self.response = final_response(self._skeleton, self._upstream, self._ids)

    def final(self, error: GatewayError | None) -> JSON:
        done = self.response
        if done is not None and (error is None or done["status"] == "failed"):
            return done
        response = dict(self._skeleton)
        response["status"] = "failed"
        response["error"] = error_object(error) if error is not None else None
        self.response = response
        return response

    def last_event(self, error: GatewayError | None) -> bytes:
        return ending(self._emitter, self.final(error), error)


def _index(fields: JSON) -> int:
    index = fields.get("output_index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0
