"""Provider streams in, Responses API events out: one translator for every vendor.

Recorded upstream streams (tests/fixtures/) go through each vendor's own stream
translator and then `ResponsesStream`; the output is checked event by event against
the official SDK's types and OpenAI's order (tests/responses/events.py).
"""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import orjson
import pytest

from gateway.errors import UpstreamError
from gateway.responses.stream import ResponsesStream
from tests.paths import FIXTURES
from tests.responses.events import check_stream
from tests.responses.helpers import new_skeleton, run, translator


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
DONE = b"data: [DONE]\n\n"


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = events[-1]["response"]
    return response


def cut(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 30))))
    return [raw[a:b] for a, b in pairwise([0, *points, len(raw)])]


@pytest.mark.parametrize(
    ("vendor", "fixture"),
    [
        ("openai", "openai/text_with_usage.sse"),
        ("openai", "openai/parallel_tools_with_usage.sse"),
        ("anthropic", "anthropic/text.sse"),
        ("anthropic", "anthropic/thinking.sse"),
        ("anthropic", "anthropic/parallel_tools.sse"),
        ("gemini", "gemini/text.sse"),
        ("gemini", "gemini/thinking.sse"),
        ("gemini", "gemini/parallel_tools.sse"),
    ],
)
def test_recorded_streams_become_the_same_events_however_they_are_cut(
    vendor: str, fixture: str
) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    whole, error = run(translator(vendor), [raw])
    assert error is None
    events = check_stream(whole)
    assert final(events)["usage"]["total_tokens"] > 0
    for seed in range(5):
        again, _ = run(translator(vendor), cut(raw, seed))
        assert _without_times(check_stream(again)) == _without_times(events)


def _without_times(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for e in events:
        if "response" in e:
            e["response"].pop("completed_at", None)
    return events


def test_thinking_becomes_a_reasoning_item_with_its_summary() -> None:
    raw = (FIXTURES / "anthropic" / "thinking.sse").read_bytes()
    events = check_stream(run(translator("anthropic"), [raw])[0])
    kinds = [e["type"] for e in events]
    assert "response.reasoning_summary_text.delta" in kinds
    reasoning, message = final(events)["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"]
    assert message["type"] == "message" and message["content"][0]["text"]


def test_text_then_tool_calls_are_a_message_then_function_calls() -> None:
    raw = b"".join(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Let me check."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city"'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Oslo"}'}}]}),
            chunk({}, "tool_calls"),
            chunk({}, None, usage=USAGE, choices=[]),
            DONE,
        ]
    )
    events = check_stream(run(translator(), [raw])[0])
    message, call = final(events)["output"]
    assert message["content"][0]["text"] == "Let me check."
    assert call["call_id"] == "call_1" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "Oslo"}
    assert call["id"].startswith("fc_") and message["id"].startswith("msg_")


def test_a_refusal_is_a_refusal_part() -> None:
    raw = chunk({"refusal": "I can't help with that."}, "stop") + DONE
    events = check_stream(run(translator(), [raw])[0])
    (message,) = final(events)["output"]
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


@pytest.mark.parametrize(
    ("reason", "detail"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete(reason: str, detail: str) -> None:
    raw = chunk({"content": "Once upon"}) + chunk({}, reason) + DONE
    events = check_stream(run(translator(), [raw])[0])
    assert events[-1]["type"] == "response.incomplete"
    response = final(events)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": detail}
    assert response["output"][0]["status"] == "incomplete"


def test_an_empty_answer_still_has_its_lifecycle() -> None:
    raw = chunk({"role": "assistant", "content": ""}) + chunk({}, "stop") + DONE
    events = check_stream(run(translator(), [raw])[0])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert final(events)["output"] == []


def test_an_error_before_any_output_sends_nothing() -> None:
    """Nothing went out: the relay answers with a real HTTP status instead."""
    raw = chunk({"role": "assistant", "content": ""}) + b'data: {"error": {"message": "boom"}}\n\n'
    out, error = run(translator(), [raw])
    assert out == b"" and error is not None


def test_an_error_after_output_is_an_error_event_then_response_failed() -> None:
    raw = chunk({"content": "Hello"}) + b'data: {"error": {"message": "overloaded"}}\n\n'
    out, _ = run(translator(), [raw])
    events = check_stream(out)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "overloaded" in events[-2]["message"]
    failed = final(events)
    assert failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"  # what came before the failure


def test_a_stream_cut_short_fails_instead_of_ending_quietly() -> None:
    raw = chunk({"content": "Hello"})  # no finish, no [DONE]
    out, error = run(translator(), [raw])
    assert error is not None and error.code == "upstream_stream_truncated"
    assert [e["type"] for e in check_stream(out)[-2:]] == ["error", "response.failed"]


class _Garbled:
    """A provider translator that returns a chunk that is not JSON (a bug somewhere)."""

    usage = None
    error = None
    finished = False
    events = 1

    def feed(self, data: bytes) -> bytes:
        return b"data: {not json\n\n"

    def close(self) -> bytes:
        return b""


def test_a_chunk_that_is_not_json_fails_the_stream() -> None:
    t = ResponsesStream(_Garbled(), new_skeleton())
    assert t.feed(b"x") == b""
    assert isinstance(t.error, UpstreamError)
    assert t.feed(b"more") == b"" and t.close() == b""
