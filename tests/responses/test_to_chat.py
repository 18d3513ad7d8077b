"""The bridge: a Responses request as the chat completions request every provider takes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.openai.validate import validate_chat_request
from gateway.responses.history import request_items
from gateway.responses.to_chat import Bridge, to_chat
from gateway.responses.validate import validate_responses_request

FN = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def bridge(**fields: Any) -> Bridge:
    request = validate_responses_request({"model": "m", **fields})
    out = to_chat(request, request_items(request))
    if out.refusal is None:
        validate_chat_request(out.body)  # what the providers are given is a valid chat body
    return out


def test_a_string_input_with_instructions_is_a_system_and_a_user_message() -> None:
    out = bridge(input="Hi", instructions="Be brief.", stream=True, max_output_tokens=100)
    assert out.body == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
        "max_completion_tokens": 100,
    }


def test_settings_map_to_their_chat_names_and_state_stays_behind() -> None:
    out = bridge(
        input="Hi",
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        user="u1",
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {}, "strict": True}},
        metadata={"k": "v"},
        store=True,
        previous_response_id=None,
        include=["reasoning.encrypted_content"],
        truncation="auto",
    )
    body = out.body
    assert body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {}, "strict": True},
    }
    assert (body["temperature"], body["top_p"], body["parallel_tool_calls"]) == (0.5, 0.9, False)
    assert body["user"] == "u1"
    for key in ("metadata", "store", "include", "truncation", "reasoning", "text"):
        assert key not in body


def test_content_parts_become_chat_parts() -> None:
    out = bridge(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x/cat.png", "detail": "original"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,AA==",
                    },
                    {"type": "input_file", "file_url": "https://x/b.pdf"},
                ],
            }
        ]
    )
    (message,) = out.body["messages"]
    assert message["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "high"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"},
        },
        {"type": "file", "file": {"file_data": "https://x/b.pdf"}},
    ]
    assert out.media == {
        "https://x/cat.png": "input[0].content[1].image_url",
        "https://x/b.pdf": "input[0].content[3].file_url",
    }


def test_a_tool_round_trip_is_one_assistant_turn_then_tool_messages() -> None:
    out = bridge(
        input=[
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
            },
            {
                "type": "function_call",
                "call_id": "c2",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "3C"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "25C"}],
            },
        ],
        tools=[FN],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    messages = out.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1]["content"] == "Checking."
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[3]["content"] == [{"type": "text", "text": "25C"}]
    assert out.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": FN["parameters"],
                "strict": True,
            },
        }
    ]
    assert out.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_allowed_tools_map_to_chat_allowed_tools() -> None:
    out = bridge(
        input="x",
        tools=[FN],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    )
    assert out.body["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        },
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [FN, {"type": "web_search"}]}, "tools[1].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type"),
        ({"tools": [FN], "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
        (
            {"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
            "input[0].type",
        ),
        (
            {
                "input": [
                    {
                        "role": "system",
                        "content": [{"type": "input_image", "image_url": "https://x"}],
                    }
                ]
            },
            "input[0].content[0]",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0].file_id",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "https://x"}],
                    }
                ]
            },
            "input[0].output[0]",
        ),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_what_chat_cannot_carry_is_a_refusal_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    out = bridge(**{"input": "hi", **fields})
    assert isinstance(out.refusal, InvalidRequest)
    assert out.refusal.param == param and f"'{param}'" in out.refusal.message
    assert "natively" in out.refusal.message


def test_input_with_nothing_to_answer_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        bridge(input=[{"type": "reasoning", "id": "rs_1", "summary": []}])
    assert info.value.param == "input"
