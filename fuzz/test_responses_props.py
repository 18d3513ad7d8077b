"""Property tests of the Responses API's stream: event order and `sequence_number` over
any upstream stream, cut anywhere.

An answer is drawn as a run of pieces (reasoning, text, refusals, tool calls with their
arguments in fragments, calls interleaved by index) with a finish reason, usage or not,
and maybe an upstream error partway. It is rendered as an OpenAI-compatible chat stream,
cut at drawn points, and run through the OpenAI translator and `ResponsesStream` the way
the relay runs them. Whatever the answer and the cuts:

- the events validate against the official SDK's types, come in OpenAI's order and are
  numbered 0, 1, 2... (tests/responses/events.py);
- they are the same events as for the uncut stream;
- the text, refusals, reasoning and call arguments are exactly what was drawn;
- an error before any output sends nothing (the client gets an HTTP status), after
  some output it ends with `error` and `response.failed`.

The recorded streams of the three vendors (tests/fixtures/) are cut at drawn points too.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.paths import FIXTURES
from tests.responses.events import check_stream
from tests.responses.helpers import run, translator

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=6
)
_PIECES = st.lists(_TEXT, min_size=1, max_size=4)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    """Pieces in stream order: ("reasoning" | "content" | "refusal", text) or
    ("call", call index, fragment); calls are declared once (id, name) at their first."""
    pieces: list[tuple[Any, ...]] = []
    calls = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["reasoning", "content", "refusal", "call", "call"]))
        if kind == "call":
            if calls and draw(st.booleans()):
                index = draw(st.integers(0, calls - 1))  # more of an earlier call
            else:
                index, calls = calls, calls + 1
            for fragment in draw(_PIECES):
                pieces.append(("call", index, fragment))
        else:
            pieces.extend((kind, text) for text in draw(_PIECES))
    return {
        "pieces": pieces,
        "finish": draw(st.sampled_from(["stop", "tool_calls", "length", "content_filter"])),
        "usage": draw(st.booleans()),
        "fail_at": draw(st.none() | st.integers(0, len(pieces))),
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps(body) + b"\n\n"


def render(answer: dict[str, Any]) -> bytes:
    out = [_chunk({"role": "assistant", "content": ""})]
    declared: set[int] = set()
    for n, piece in enumerate(answer["pieces"]):
        if answer["fail_at"] == n:
            out.append(b'data: {"error": {"message": "the model crashed"}}\n\n')
            return b"".join(out)
        if piece[0] == "call":
            _, index, fragment = piece
            call: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
            if index not in declared:
                declared.add(index)
                call.update(id=f"call_{index}", type="function")
                call["function"]["name"] = f"tool_{index}"
            out.append(_chunk({"tool_calls": [call]}))
        else:
            out.append(
                _chunk({piece[0] + ("_content" if piece[0] == "reasoning" else ""): piece[1]})
            )
    if answer["fail_at"] == len(answer["pieces"]):
        out.append(b'data: {"error": {"message": "the model crashed"}}\n\n')
        return b"".join(out)
    out.append(_chunk({}, answer["finish"]))
    if answer["usage"]:
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        out.append(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(raw) + 1) for p in points})
    return [raw[a:b] for a, b in pairwise([0, *bounds, len(raw)])]


def _plain(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for e in events:
        if isinstance(e.get("response"), dict):
            e["response"].pop("completed_at", None)
    return events


def _expected_output(pieces: list[tuple[Any, ...]]) -> dict[str, Any]:
    texts: dict[str, list[str]] = {"reasoning": [], "content": [], "refusal": []}
    calls: dict[int, list[str]] = {}
    for piece in pieces:
        if piece[0] == "call":
            calls.setdefault(piece[1], []).append(piece[2])
        else:
            texts[piece[0]].append(piece[1])
    return {
        "reasoning": "".join(texts["reasoning"]),
        "content": "".join(texts["content"]),
        "refusal": "".join(texts["refusal"]),
        "calls": {f"call_{i}": "".join(f) for i, f in calls.items()},
    }


def _actual_output(output: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"reasoning": "", "content": "", "refusal": "", "calls": {}}
    for item in output:
        if item["type"] == "reasoning":
            found["reasoning"] += item["summary"][0]["text"]
        elif item["type"] == "message":
            for part in item["content"]:
                key = "content" if part["type"] == "output_text" else "refusal"
                found[key] += part.get("text", part.get("refusal", ""))
        else:
            found["calls"][item["call_id"]] = item["arguments"]
    return found


@SETTINGS
@given(answer=answers(), points=st.lists(st.integers(0, 10**6), max_size=20))
def test_any_answer_cut_anywhere_streams_in_order(
    answer: dict[str, Any], points: list[int]
) -> None:
    raw = render(answer)
    whole, error = run(translator(), [raw])
    again, error_again = run(translator(), cut(raw, points))
    assert (error is None) == (error_again is None)
    if not whole:
        # Failed before any output: nothing was sent, the relay answers with a status.
        assert error is not None and again == b""
        return
    events = check_stream(whole)
    assert _plain(check_stream(again)) == _plain(events)
    final = events[-1]["response"]
    if error is not None:
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        return
    assert _actual_output(final["output"]) == _expected_output(answer["pieces"])
    incomplete = answer["finish"] in ("length", "content_filter")
    assert final["status"] == ("incomplete" if incomplete else "completed")
    assert (final["usage"] is not None) == answer["usage"]


FIXTURE_STREAMS = [
    ("openai", "openai/text_with_usage.sse"),
    ("openai", "openai/parallel_tools_with_usage.sse"),
    ("anthropic", "anthropic/thinking.sse"),
    ("anthropic", "anthropic/parallel_tools.sse"),
    ("anthropic", "anthropic/error_after_200.sse"),
    ("gemini", "gemini/thinking.sse"),
    ("gemini", "gemini/parallel_tools.sse"),
    ("gemini", "gemini/error_after_200.sse"),
]


@SETTINGS
@given(stream=st.sampled_from(FIXTURE_STREAMS), points=st.lists(st.integers(0, 10**6), max_size=40))
def test_every_vendors_recorded_stream_cut_anywhere_streams_in_order(
    stream: tuple[str, str], points: list[int]
) -> None:
    vendor, name = stream
    raw = (FIXTURES / name).read_bytes()
    whole, error = run(translator(vendor), [raw])
    again, _ = run(translator(vendor), cut(raw, points))
    if whole:
        assert _plain(check_stream(again)) == _plain(check_stream(whole))
    else:
        assert error is not None and again == b""
