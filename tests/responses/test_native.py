"""An upstream that speaks the Responses API itself: relayed with the same normalisation."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import orjson
import pytest

from gateway.errors import UpstreamError
from gateway.responses.native import NativeStream, native_payload, parse_native, stateless_items
from tests.paths import FIXTURES
from tests.responses.events import check_stream
from tests.responses.helpers import RESPONSE_ID, new_skeleton

RAW = (FIXTURES / "openai" / "responses_text_tool.sse").read_bytes()
BODY = (FIXTURES / "openai" / "responses_text_tool.json").read_bytes()


def run(pieces: list[bytes]) -> tuple[bytes, NativeStream]:
    t = NativeStream(new_skeleton())
    out = [t.feed(p) for p in pieces]
    if t.error is None:
        out.append(t.close())
    t.final(t.error)
    return b"".join(out) + t.last_event(t.error), t


def pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, len(RAW)), 25))
    return [RAW[a:b] for a, b in pairwise([0, *points, len(RAW)])]


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_the_stream_is_the_gateways_own_however_it_is_cut(seed: int | None) -> None:
    out, t = run([RAW] if seed is None else pieces(seed))
    events = check_stream(out)
    assert b"resp_upstream0001" not in out and b"msg_up1" not in out and b"fc_up2" not in out
    final = events[-1]["response"]
    assert final["id"] == RESPONSE_ID and final["model"] == "gpt"  # the client's model id
    message, call = final["output"]
    assert message["id"].startswith("msg_" + RESPONSE_ID[5:])
    assert call["id"].startswith("fc_" + RESPONSE_ID[5:]) and call["call_id"] == "call_up2"
    assert final["usage"]["total_tokens"] == 57
    # Billing reads chat's shape.
    assert t.usage == {
        "prompt_tokens": 36,
        "completion_tokens": 21,
        "total_tokens": 57,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_a_failure_before_any_output_is_an_error_not_an_event() -> None:
    failed = {
        "type": "response.failed",
        "sequence_number": 2,
        "response": {"error": {"code": "server_error", "message": "boom"}},
    }
    raw = (
        RAW.split(b"event: response.output_item.added")[0]
        + b"data: "
        + orjson.dumps(failed)
        + b"\n\n"
    )
    t = NativeStream(new_skeleton())
    assert t.feed(raw) == b""
    assert isinstance(t.error, UpstreamError) and "boom" in t.error.message


def test_an_error_event_after_output_ends_with_response_failed() -> None:
    head = RAW.split(b"event: response.output_item.added")
    raw = b"event: response.output_item.added".join(head[:2])
    error = {"type": "error", "sequence_number": 9, "code": "server_error", "message": "lost"}
    out, _ = run([raw + b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"])
    events = check_stream(out)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]


def test_a_stream_without_its_final_event_is_truncated() -> None:
    out, t = run([RAW.split(b"event: response.completed")[0]])
    assert t.error is not None and t.error.code == "upstream_stream_truncated"
    assert check_stream(out)[-1]["type"] == "response.failed"


def test_a_non_streamed_response_is_normalised_too() -> None:
    response, completion = parse_native(BODY, new_skeleton())
    assert response["id"] == RESPONSE_ID and response["status"] == "completed"
    assert orjson.loads(completion.body) == response
    assert completion.usage is not None and completion.usage["prompt_tokens"] == 36
    assert [i["id"][:3] for i in response["output"]] == ["msg", "fc_"]


def test_history_goes_upstream_in_a_form_a_stateless_upstream_accepts() -> None:
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": "hi", "id": "msg_x", "status": "completed"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Hel", "annotations": []},
                {"type": "output_text", "text": "lo"},
            ],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "c",
            "name": "f",
            "arguments": "{}",
        },
        {"type": "function_call_output", "call_id": "c", "output": "1"},
    ]
    assert stateless_items(items) == [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
        {"role": "assistant", "content": "Hello"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "1"},
    ]


def test_the_upstream_stores_nothing_and_gets_the_reserved_cap() -> None:
    request = {
        "model": "gpt",
        "input": "ignored: the items are given",
        "previous_response_id": "resp_1",
        "store": True,
        "stream": True,
        "tools": [{"type": "web_search"}],
    }
    payload = native_payload(request, [{"role": "user", "content": "hi"}], "gpt-4.1", True, 500)
    assert payload == {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search"}],
        "store": False,
        "stream": True,
        "max_output_tokens": 500,
    }
