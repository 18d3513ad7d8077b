"""A response's output items as the model produces them, and the events that tell it.

`Output` is fed the pieces of an answer in the order they come (reasoning, text, a
refusal, tool-call fragments) and keeps the output items OpenAI's Responses API
defines: `reasoning` (its text as one summary part), `message` (`output_text` and
`refusal` content parts) and `function_call`. Each change is also told as the stream
event OpenAI sends for it, in OpenAI's order: an item is `added`, its content part is
`added`, deltas follow, then the part's and the item's `done` events. One item of
reasoning or message is open at a time (a new one finishes it); function calls stay
open until the answer ends, so that a fragment of any call, however the upstream
interleaves them, lands in its own call (never in a new one, never lost).

The streamed and the non-streamed answers both build their output here, so the two
agree item for item (the non-streamed one passes `out=None` and keeps no events).

Pure module: no I/O.
"""

from __future__ import annotations

from typing import Any

from gateway.responses.objects import Events, item_id

JSON = dict[str, Any]
Out = list[bytes] | None


class _Call:
    __slots__ = ("arguments", "call_id", "index", "item_id", "name")

    def __init__(self, index: int, item: str, call_id: str, name: str) -> None:
        self.index = index  # output index
        self.item_id = item
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []

    def item(self, status: str) -> JSON:
        return {
            "id": self.item_id,
            "type": "function_call",
            "status": status,
            "arguments": "".join(self.arguments),
            "call_id": self.call_id,
            "name": self.name,
        }


class Output:
    """The output items of one response, with their stream events."""

    __slots__ = (
        "_calls",
        "_delta_head",
        "_events",
        "_item",
        "_kind",
        "_part",
        "_parts",
        "_text",
        "items",
        "response_id",
    )

    def __init__(self, response_id: str, events: Events) -> None:
        self.response_id = response_id
        self._events = events
        self.items: list[JSON | None] = []  # finished items; None holds an open one's place
        self._kind: str | None = None  # "message" or "reasoning": the open item
        self._item = ""  # its id
        self._parts: list[JSON] = []  # the open message's finished content parts
        self._part: str | None = None  # "output_text" or "refusal": its open part
        self._text: list[str] = []  # the open part's (or reasoning's) text so far
        self._calls: dict[int, _Call] = {}  # open function calls by the model's call index
        self._delta_head = b""  # the open text part's delta event up to its delta

    # ------------------------------------------------------------------ what comes in

    def reasoning(self, delta: str, out: Out) -> None:
        if self._kind != "reasoning":
            self._close_open("completed", out)
            self._open("reasoning", {"summary": []}, out)
            self._emit(
                out,
                "response.reasoning_summary_part.added",
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        self._text.append(delta)
        self._emit(out, "response.reasoning_summary_text.delta", summary_index=0, delta=delta)

    def text(self, delta: str, out: Out) -> None:
        if self._part == "output_text" and self._kind == "message":
            self._text.append(delta)  # the common case: more of the open text
        else:
            self._part_delta("output_text", delta, out)
            self._delta_head = (
                b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                b'"item_id":"%b","output_index":%d,"content_index":%d,"logprobs":[],"delta":'
                % (self._item.encode(), len(self.items) - 1, len(self._parts))
            )
        # The event most of a stream is made of, from bytes made once per part.
        self._events.emit_delta(out, self._delta_head, delta)

    def refusal(self, delta: str, out: Out) -> None:
        self._part_delta("refusal", delta, out)
        self._emit(out, "response.refusal.delta", content_index=len(self._parts), delta=delta)

    def call(self, index: int, call_id: str | None, name: str | None, delta: str, out: Out) -> None:
        """A fragment of the model's call number `index` (chat's tool-call index)."""
        call = self._calls.get(index)
        if call is None:
            self._close_open("completed", out)
            position = len(self.items)
            call = _Call(
                position,
                item_id(self.response_id, "function_call", position),
                call_id or f"call_{self.response_id[5:29]}{position:04x}",
                name or "",
            )
            self._calls[index] = call
            self.items.append(None)
            self._events.emit(
                out,
                "response.output_item.added",
                {"output_index": position, "item": call.item("in_progress")},
            )
        if delta:
            call.arguments.append(delta)
            self._events.emit(
                out,
                "response.function_call_arguments.delta",
                {"item_id": call.item_id, "output_index": call.index, "delta": delta},
            )

    def close(self, status: str, out: Out) -> None:
        """The answer ended: finish every open item with `status`."""
        self._close_open(status, out)
        self._close_calls(status, out)

    def snapshot(self) -> list[JSON]:
        """The output as it stands, open items as `incomplete` (for a failed response)."""
        done = [item for item in self.items if item is not None]
        if self._kind is not None:
            done.append(self._open_item("incomplete"))
        done.extend(call.item("incomplete") for call in self._calls.values())
        return done

    # ------------------------------------------------------------------ the items

    def _emit(self, out: Out, kind: str, **fields: Any) -> None:
        fields["item_id"] = self._item
        fields["output_index"] = len(self.items) - 1
        self._events.emit(out, kind, fields)

    def _open(self, kind: str, fields: JSON, out: Out) -> None:
        self._kind = kind
        position = len(self.items)
        self._item = item_id(self.response_id, kind, position)
        self.items.append(None)
        self._events.emit(
            out,
            "response.output_item.added",
            {"output_index": position, "item": {"id": self._item, "type": kind, **fields}},
        )

    def _part_delta(self, part: str, delta: str, out: Out) -> None:
        """Make `part` the open content part of an open message."""
        if self._kind != "message":
            self._close_open("completed", out)
            fields = {"status": "in_progress", "content": [], "role": "assistant"}
            self._open("message", fields, out)
        elif self._part == part:
            self._text.append(delta)
            return
        else:
            self._close_part(out)
        self._part = part
        self._text = [delta]
        self._emit(
            out, "response.content_part.added", content_index=len(self._parts), part=_part(part, "")
        )

    def _close_part(self, out: Out) -> None:
        if self._part is None:
            return
        text = "".join(self._text)
        index = len(self._parts)
        if self._part == "output_text":
            self._emit(
                out, "response.output_text.done", content_index=index, text=text, logprobs=[]
            )
        else:
            self._emit(out, "response.refusal.done", content_index=index, refusal=text)
        part = _part(self._part, text)
        self._emit(out, "response.content_part.done", content_index=index, part=part)
        self._parts.append(part)
        self._part = None
        self._text = []

    def _open_item(self, status: str) -> JSON:
        """The open message or reasoning item as it stands."""
        if self._kind == "reasoning":
            return {
                "id": self._item,
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "".join(self._text)}],
            }
        parts = list(self._parts)
        if self._part is not None:
            parts.append(_part(self._part, "".join(self._text)))
        return {
            "id": self._item,
            "type": "message",
            "status": status,
            "content": parts,
            "role": "assistant",
        }

    def _close_open(self, status: str, out: Out) -> None:
        """Finish the open message or reasoning item."""
        if self._kind is None:
            return
        if self._kind == "reasoning":
            text = "".join(self._text)
            self._emit(out, "response.reasoning_summary_text.done", summary_index=0, text=text)
            part = {"type": "summary_text", "text": text}
            self._emit(out, "response.reasoning_summary_part.done", summary_index=0, part=part)
        else:
            self._close_part(out)
        item = self._open_item(status)
        position = len(self.items) - 1
        self._events.emit(
            out, "response.output_item.done", {"output_index": position, "item": item}
        )
        self.items[position] = item
        self._kind = None
        self._parts = []
        self._text = []

    def _close_calls(self, status: str, out: Out) -> None:
        for call in self._calls.values():
            item = call.item(status)
            self._events.emit(
                out,
                "response.function_call_arguments.done",
                {
                    "item_id": call.item_id,
                    "output_index": call.index,
                    "name": call.name,
                    "arguments": item["arguments"],
                },
            )
            self._events.emit(
                out, "response.output_item.done", {"output_index": call.index, "item": item}
            )
            self.items[call.index] = item
        self._calls.clear()


def _part(kind: str, text: str) -> JSON:
    if kind == "output_text":
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {"type": "refusal", "refusal": text}
