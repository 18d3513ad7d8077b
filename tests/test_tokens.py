"""Token estimates: the split rule, counting, and the prompt framing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tokens import (
    AUDIO_TOKENS_PER_S,
    FILE_TOKENS,
    IMAGE_TOKENS,
    count_prompt_tokens,
    count_text_tokens,
    split_tokens,
)

SPLITS = [
    ("", []),
    ("Hello world", ["Hello", " world"]),
    ("The lazy dog.", ["The", " lazy", " dog", "."]),
    ("I don't", ["I", " don", "'t"]),
    ("THEY'LL go", ["THEY", "'LL", " go"]),
    ("12345 and 7", ["123", "45", " and", " 7"]),
    ("internationalization", ["internatio", "nalization"]),
    ("wait!!!! ok", ["wait", "!!!", "!", " ok"]),
    ("snake_case", ["snake", "_", "case"]),
    ('{"a": 1}', ['{"', "a", '":', " 1", "}"]),
    ("a  b", ["a", " ", " b"]),
    ("a\n\nb", ["a", "\n\n", "b"]),
    ("end  ", ["end", "  "]),
    ("你好", ["你", "好"]),
    ("café au lait", ["café", " au", " lait"]),
    ("😀😀", ["😀", "😀"]),
]


@pytest.mark.parametrize(("text", "pieces"), SPLITS)
def test_split_tokens_table(text: str, pieces: list[str]) -> None:
    assert split_tokens(text) == pieces
    assert count_text_tokens(text) == len(pieces)


@given(st.text())
def test_pieces_concatenate_back_and_count_matches(text: str) -> None:
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert count_text_tokens(text) == len(pieces)


def test_english_is_about_four_characters_per_token() -> None:
    text = (
        "The gateway exists to add as little as possible between a client and a model. "
        "Parse the body once, keep it as a dictionary, and forward the bytes when the "
        "upstream speaks OpenAI and nothing needs rewriting. Every change to the hot path "
        "is measured before and after, and the numbers go in the commit message."
    )
    assert 3.5 <= len(text) / count_text_tokens(text) <= 5.5


def _user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content, **extra}]}


def _image(detail: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": "https://example.com/cat.png"}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _audio(seconds: int, fmt: str, prefix: str = "") -> dict[str, Any]:
    rate = 32_000 if fmt == "wav" else 16_000
    data = prefix + base64.b64encode(b"\0" * rate * seconds).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


# Framing: 3 per message + the role ("user": 1 token) + 3 to prime the reply = 7.
PROMPTS = [
    ("text", _user("Hello world"), 7 + 2),
    ("name", _user("Hello world", name="bob"), 7 + 2 + 1 + 1),
    ("text parts", _user([{"type": "text", "text": "Hello"}, {"type": "text", "text": " you"}]), 9),
    ("image low", _user([_image("low")]), 7 + IMAGE_TOKENS["low"]),
    ("image high", _user([_image("high")]), 7 + IMAGE_TOKENS["high"]),
    ("image default", _user([_image(None)]), 7 + IMAGE_TOKENS["auto"]),
    ("audio wav", _user([_audio(3, "wav")]), 7 + 3 * AUDIO_TOKENS_PER_S),
    ("audio mp3", _user([_audio(2, "mp3")]), 7 + 2 * AUDIO_TOKENS_PER_S),
    ("audio data URL", _user([_audio(1, "wav", "data:audio/wav;base64,")]), 17),
    ("file", _user([{"type": "file", "file": {"file_id": "file-1"}}]), 7 + FILE_TOKENS),
    ("no messages", {}, 3),
    ("junk shapes", {"messages": "nope", "tools": {"x": 1}}, 3),
]


@pytest.mark.parametrize(
    ("body", "expected"), [p[1:] for p in PROMPTS], ids=[p[0] for p in PROMPTS]
)
def test_count_prompt_tokens_table(body: dict[str, Any], expected: int) -> None:
    assert count_prompt_tokens(body) == expected


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_and_schemas_add_tokens() -> None:
    base = _user("Hello world")
    one = count_prompt_tokens({**base, "tools": [TOOL]})
    two = count_prompt_tokens({**base, "tools": [TOOL, TOOL]})
    assert count_prompt_tokens(base) < one < two
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert count_prompt_tokens({**base, "response_format": fmt}) > count_prompt_tokens(base)
    assert count_prompt_tokens({**base, "response_format": {"type": "json_object"}}) == 9


def test_assistant_tool_calls_and_tool_results_count() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    body = {"messages": [assistant, tool]}
    without_calls = {"messages": [{"role": "assistant", "content": None}, tool]}
    assert count_prompt_tokens(body) > count_prompt_tokens(without_calls)
    assert count_prompt_tokens(body) - count_prompt_tokens({"messages": [assistant]}) == (
        3 + count_text_tokens("tool") + count_text_tokens("sunny") + count_text_tokens("call_1")
    )
