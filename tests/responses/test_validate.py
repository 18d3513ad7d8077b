"""The Responses request schema: every violation is a 400 naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.responses.validate import validate_responses_request

FN = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


GOOD = [
    body(),
    body(input=[{"role": "user", "content": "hi"}]),
    body(
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,AA=="},
                    {"type": "input_file", "file_url": "https://x/y.pdf"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "item_reference", "id": "msg_1"},
            {"id": "msg_2"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ]
    ),
    body(
        tools=[FN, {"type": "web_search"}], tool_choice={"type": "function", "name": "get_weather"}
    ),
    body(
        tools=[FN],
        tool_choice={
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    ),
    body(text={"format": {"type": "json_schema", "name": "x", "schema": {}, "strict": True}}),
    body(text={"format": {"type": "json_object"}, "verbosity": "low"}),
    body(reasoning={"effort": "high", "summary": "auto"}, max_output_tokens=16),
    body(metadata={"a": "b"}, store=False, stream=True, stream_options={}),
    body(input=None, previous_response_id="resp_1"),
    body(models=["a", "b"], unknown_vendor_field={"x": 1}),
]


@pytest.mark.parametrize("good", GOOD)
def test_what_openai_accepts_is_accepted(good: dict[str, Any]) -> None:
    assert validate_responses_request(good) is good


BAD: list[tuple[Any, str | None]] = [
    ([], None),
    ({"input": "hi"}, "model"),
    ({"model": "m"}, "input"),
    (body(model=""), "model"),
    (body(input=[]), "input"),
    (body(input=5), "input"),
    (body(input=[{"content": "x"}]), "input[0].type"),
    (body(input=[{"role": "bot", "content": "x"}]), "input[0].role"),
    (body(input=[{"role": "user", "content": []}]), "input[0].content"),
    (
        body(input=[{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]),
        "input[0].content[0].type",
    ),
    (body(input=[{"role": "user", "content": [{"type": "input_image"}]}]), "input[0].content[0]"),
    (
        body(
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]
        ),
        "input[0].content[0].image_url",
    ),
    (
        body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]}]),
        "input[0].content[0].image_url",
    ),
    (
        body(input=[{"role": "user", "content": [{"type": "input_text"}]}]),
        "input[0].content[0].text",
    ),
    (body(input=[{"type": "function_call", "name": "f", "arguments": "{}"}]), "input[0].call_id"),
    (
        body(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]),
        "input[0].arguments",
    ),
    (body(input=[{"type": "function_call_output", "call_id": "c"}]), "input[0].output"),
    (body(input=[{"type": "item_reference", "id": ""}]), "input[0].id"),
    (body(tools=[{"type": "function", "name": "bad name"}]), "tools[0].name"),
    (body(tools=[{"name": "f"}]), "tools[0].type"),
    (body(tools=[FN], tool_choice={"type": "function", "name": "other"}), "tool_choice.name"),
    (body(tool_choice="required"), "tool_choice"),
    (body(tool_choice="sometimes"), "tool_choice"),
    (body(text={"format": {"type": "json_schema", "name": "x"}}), "text.format.schema"),
    (body(text={"format": {"type": "xml"}}), "text.format.type"),
    (body(max_output_tokens=15), "max_output_tokens"),
    (body(max_output_tokens=2**40), "max_output_tokens"),
    (body(temperature=3), "temperature"),
    (body(top_p=-1), "top_p"),
    (body(reasoning={"effort": "extreme"}), "reasoning.effort"),
    (body(metadata={"k": 1}), "metadata.k"),
    (body(metadata={str(i): "v" for i in range(17)}), "metadata"),
    (body(store="yes"), "store"),
    (body(stream_options={"include_obfuscation": True}), "stream_options"),
    (body(background=True), "background"),
    (body(conversation="conv_1"), "conversation"),
    (body(models=[]), "models"),
    (body(safety_identifier="x" * 65), "safety_identifier"),
]


@pytest.mark.parametrize(("bad", "param"), BAD)
def test_a_violation_is_a_400_naming_the_field(bad: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_responses_request(bad)
    assert info.value.http_status == 400
    assert info.value.param == param
    if param is not None:
        assert f"'{param}'" in info.value.message


def test_a_body_nested_too_deep_is_refused() -> None:
    deep: Any = "x"
    for _ in range(80):
        deep = [deep]
    with pytest.raises(InvalidRequest) as info:
        validate_responses_request(body(input=[{"role": "user", "content": "x", "extra": deep}]))
    assert info.value.param == "input[0]"
