"""What a Responses API event stream must look like, checked event by event.

`check_stream` is used by the unit tests, the property tests (fuzz/) and the end to
end tests on the served gateway's bytes. It checks:

- every event against the official `openai` SDK's own types, validated strictly
  (pydantic, not the SDK's lenient construct), and the `event:` line against `type`;
- `sequence_number` 0, 1, 2... without a gap;
- the order OpenAI streams in: `response.created`, `response.in_progress`, then per
  output item `output_item.added`, its content parts (`content_part.added`, deltas,
  the part's `done` events) or its arguments or summary, `output_item.done`, items at
  output indexes 0, 1, 2...; last `response.completed` / `response.incomplete`, or
  `error` and `response.failed`;
- the deltas add up to what each `done` event and the final response say, and the
  final response's output is the items of the `output_item.done` events.

It returns the events as dicts.
"""

from __future__ import annotations

from typing import Any, get_args

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.openai.sse import SSEDecoder

# The SDK's event classes by their `type` (its union is discriminated by a marker
# pydantic does not read: validating against it would report every variant).
EVENT_TYPES: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(ResponseStreamEvent)[0])
}
RESPONSE = TypeAdapter(Response)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def decode(raw: bytes) -> list[dict[str, Any]]:
    """The events of a stream's bytes; each `event:` line must match its `type`."""
    decoder = SSEDecoder()
    events = decoder.feed(raw)
    assert not decoder.pending, "the stream ends inside an event"
    out = []
    for e in events:
        obj = orjson.loads(e.data)
        assert e.event is not None and e.event.decode() == obj["type"], (e.event, obj["type"])
        out.append(obj)
    return out


class _Item:
    def __init__(self, added: dict[str, Any]) -> None:
        self.item = added
        self.kind = added["type"]
        self.parts: dict[int, list[str]] = {}  # content index -> deltas
        self.part_open: int | None = None
        self.arguments: list[str] = []
        self.summary: list[str] = []
        self.done: dict[str, Any] | None = None


def check_stream(raw: bytes) -> list[dict[str, Any]]:
    events = decode(raw)
    assert events, "an empty stream"
    for n, event in enumerate(events):
        assert event["type"] in EVENT_TYPES, event["type"]
        EVENT_TYPES[event["type"]].model_validate(event)
        assert event["sequence_number"] == n, (n, event["type"])
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:3]
    response_id = events[0]["response"]["id"]
    assert events[0]["response"]["status"] == "in_progress"
    items: list[_Item] = []
    open_items: dict[int, _Item] = {}
    end = len(events)
    if kinds[-1] == "response.failed":
        assert kinds[-2] == "error", kinds[-3:]
        end -= 2
    else:
        assert kinds[-1] in ("response.completed", "response.incomplete"), kinds[-1]
        end -= 1
    for event in events[2:end]:
        kind = event["type"]
        assert kind not in TERMINAL and kind != "error", kind
        if kind == "response.output_item.added":
            assert event["output_index"] == len(items), "items come at 0, 1, 2..."
            item = _Item(event["item"])
            items.append(item)
            open_items[event["output_index"]] = item
            continue
        index = event["output_index"]
        assert index in open_items, f"{kind} for an item that is not open"
        item = open_items[index]
        if "item_id" in event:
            assert event["item_id"] == item.item["id"], kind
        if kind == "response.content_part.added":
            assert item.part_open is None, "a part opened while another is open"
            assert event["content_index"] == len(item.parts)
            item.part_open = event["content_index"]
            item.parts[item.part_open] = []
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            assert item.part_open is not None and event["content_index"] == item.part_open, kind
            item.parts[item.part_open].append(event["delta"])
        elif kind == "response.output_text.done":
            assert event["text"] == "".join(item.parts[event["content_index"]])
        elif kind == "response.refusal.done":
            assert event["refusal"] == "".join(item.parts[event["content_index"]])
        elif kind == "response.content_part.done":
            assert event["content_index"] == item.part_open
            item.part_open = None
        elif kind == "response.function_call_arguments.delta":
            item.arguments.append(event["delta"])
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == "".join(item.arguments)
        elif kind == "response.reasoning_summary_text.delta":
            item.summary.append(event["delta"])
        elif kind == "response.reasoning_summary_text.done":
            assert event["text"] == "".join(item.summary)
        elif kind == "response.output_item.done":
            assert item.part_open is None, "an item done with a part open"
            done = event["item"]
            assert done["id"] == item.item["id"] and done["type"] == item.kind
            if item.kind == "message":
                texts = [p.get("text", p.get("refusal")) for p in done["content"]]
                assert texts == ["".join(item.parts[i]) for i in range(len(item.parts))]
            elif item.kind == "function_call":
                assert done["arguments"] == "".join(item.arguments)
            elif item.kind == "reasoning" and item.summary:
                assert done["summary"][0]["text"] == "".join(item.summary)
            item.done = done
            del open_items[index]
    final = events[-1]["response"]
    RESPONSE.validate_python(final, strict=False)
    assert final["id"] == response_id
    if kinds[-1] != "response.failed":
        assert not open_items, "items still open at the end"
        assert final["output"] == [i.done for i in items]
        ended = "completed" if kinds[-1] == "response.completed" else "incomplete"
        assert final["status"] == ended
    else:
        assert final["status"] == "failed" and final["error"]["message"]
    return events
