"""The fake OpenAI upstream's ``POST /v1/responses``: OpenAI's Responses API wire format.

It answers the way the fake's chat completions do (the same `_Answer`: the same tool
picks, JSON for ``text.format``, the same directives in the model name), in the
Responses API's shapes: a ``response`` object with ``output`` items and usage, or
the named SSE events (``response.created`` ... ``response.completed``), each with its
``sequence_number``, item ids of its own (``msg_``, ``fc_``, ``resp_`` + hex).

It checks a request as OpenAI does what the gateway must get right: ``model``, an
``input`` (a string or an array of items), function tools in the Responses form
(``name`` at the top, not under ``function``), ``previous_response_id`` and
input items with an ``id`` only for ids it made (the fake stores nothing: a gateway
that keeps the state itself must never send ids of its own or ``item_reference``s),
``stream_options`` only with ``stream``.

Independent of the gateway's code on purpose: tests hold the gateway against it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import trio

from bench.fakes.base import StreamOut, failure_positions, write_paced
from bench.fakes.directives import Behaviour
from bench.fakes.server import CoarseTimer, Reply

JSON = dict[str, Any]
_SSE = ("content-type", "text/event-stream; charset=utf-8")


class ResponsesRefusal(Exception):
    """A 400 the fake answers with: (message, param)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def chat_view(body: Any) -> JSON:
    """The chat-shaped view of a Responses request that the fake's answer reads
    (messages for the tool picks, tools, tool_choice, response_format, the cap)."""
    if not isinstance(body, dict):
        raise ResponsesRefusal("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ResponsesRefusal("You must provide a model parameter.", "model")
    for key in ("previous_response_id", "conversation"):
        if body.get(key) is not None:
            raise ResponsesRefusal(f"Previous response with id '{body[key]}' not found.", key)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise ResponsesRefusal("stream_options is only allowed with stream.", "stream_options")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items: list[Any] = [{"role": "user", "content": raw_input}]
    elif isinstance(raw_input, list) and raw_input:
        items = raw_input
    else:
        raise ResponsesRefusal("Missing required parameter: 'input'.", "input")
    messages: list[JSON] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ResponsesRefusal("Invalid input item.", f"input[{i}]")
        kind = item.get("type", "message" if "role" in item else None)
        item_id = item.get("id")
        if kind == "item_reference" or (
            item_id is not None and not str(item_id).startswith(("msg_fake", "fc_fake"))
        ):
            # Nothing is stored here: only ids this fake made could be known.
            raise ResponsesRefusal(f"Item with id '{item_id}' not found.", f"input[{i}]")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": _text(item.get("output"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None})
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or "function" in tool:
            raise ResponsesRefusal("Function tools take 'name' at the top level.", f"tools[{i}]")
        if tool.get("type") == "function":
            fn = {"name": tool.get("name"), "parameters": tool.get("parameters")}
            tools.append({"type": "function", "function": fn})
    view: JSON = {"model": model, "messages": messages, "tools": tools}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        view["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None:
        view["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        view["response_format"] = {"type": "json_schema", "json_schema": fmt}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        view["response_format"] = {"type": "json_object"}
    if isinstance(body.get("max_output_tokens"), int):
        view["max_completion_tokens"] = body["max_output_tokens"]
    return view


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


class ResponsesAnswer:
    """A chat `_Answer` of the fake, told in the Responses API's shapes."""

    def __init__(self, answer: Any, body: JSON, number: int) -> None:
        self.answer = answer
        self.body = body
        self.id = f"resp_fake{number:040x}"
        self.created = int(time.time())
        self.seq = 0

    def _usage(self) -> JSON:
        u = self.answer.usage
        return {
            "input_tokens": u["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": u["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u["total_tokens"],
        }

    def _items(self) -> list[JSON]:
        a = self.answer
        if a.calls:
            return [
                {
                    "id": f"fc_fake{k:04x}",
                    "type": "function_call",
                    "status": "completed",
                    "arguments": "".join(call.pieces),
                    "call_id": call.id,
                    "name": call.name,
                }
                for k, call in enumerate(a.calls)
            ]
        part = {"type": "output_text", "annotations": [], "text": "".join(a.pieces)}
        status = "incomplete" if a.finish_reason == "length" else "completed"
        item = {"id": "msg_fake0", "type": "message", "status": status, "role": "assistant"}
        return [{**item, "content": [part]}]

    def response(self, status: str, output: list[JSON], usage: JSON | None) -> JSON:
        out: JSON = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self.answer.model,
            "output": output,
            "parallel_tool_calls": True,
            "store": self.body.get("store", True),
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": self.body.get("tools") or [],
            "top_p": 1.0,
            "usage": usage,
            "metadata": {},
        }
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        return out

    def whole(self) -> bytes:
        status = "incomplete" if self.answer.finish_reason == "length" else "completed"
        return orjson.dumps(self.response(status, self._items(), self._usage()))

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"

    def events(self) -> tuple[list[bytes], int, int]:
        """The stream's events, and the range of the paced ones: the deltas after the
        first (the first goes out at once with the events before it)."""
        ev = self._event
        out = [ev("response.created", response=self.response("in_progress", [], None))]
        out.append(ev("response.in_progress", response=self.response("in_progress", [], None)))
        first = 0  # the first delta goes with everything before it, as a chat stream's does
        items = self._items()
        for index, item in enumerate(items):
            if item["type"] == "function_call":
                out.append(
                    ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"},
                    )
                )
                for piece in self.answer.calls[index].pieces:
                    first = first or len(out) + 1
                    out.append(
                        ev(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=index,
                            delta=piece,
                        )
                    )
                out.append(
                    ev(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            else:
                out.append(
                    ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "content": [], "status": "in_progress"},
                    )
                )
                empty = {"type": "output_text", "annotations": [], "text": ""}
                out.append(
                    ev(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=empty,
                    )
                )
                for piece in self.answer.pieces:
                    first = first or len(out) + 1
                    out.append(
                        ev(
                            "response.output_text.delta",
                            item_id=item["id"],
                            output_index=index,
                            content_index=0,
                            delta=piece,
                            logprobs=[],
                        )
                    )
                text = item["content"][0]["text"]
                out.append(
                    ev(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
                out.append(
                    ev(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=item["content"][0],
                    )
                )
            out.append(ev("response.output_item.done", output_index=index, item=item))
        last = len(out)
        first = first or last
        status = "incomplete" if self.answer.finish_reason == "length" else "completed"
        final = self.response(status, items, self._usage())
        out.append(ev(f"response.{status}", response=final))
        return out, first, last


async def stream_responses(
    reply: Reply, request_id: str, answer: ResponsesAnswer, b: Behaviour, timer: CoarseTimer
) -> None:
    """Write the events on schedule, with a reset or an error event where asked (as the
    chat stream does: `write_paced`)."""
    events, first, last = answer.events()
    reset_at, fail_at = failure_positions(b, len(events))
    out = StreamOut(reply, [_SSE, ("cache-control", "no-cache"), ("x-request-id", request_id)])
    start = trio.current_time() + b.ttft_ms / 1000.0
    await timer.sleep_until(start)
    pending = await write_paced(
        out,
        timer,
        events,
        start=start,
        interval=b.chunk_interval_s,
        paced=range(first, last),
        reset_at=reset_at,
        fail_at=fail_at,
    )
    if fail_at is not None:
        message = b.error_message or "The model produced an error while generating."
        pending += answer._event("error", code="server_error", message=message, param=None)
    await out.flush(pending)
    await reply.end()
