"""Token counting: shipped encodings, offline use, model families, framing, tools, media."""

from __future__ import annotations

import base64
import dataclasses
import math
import random
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.model
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tokens import tables as tokenizer_files
from gateway.tokens.count import (
    AUDIO_TOKENS_PER_S,
    DEFAULT_IMAGE_SIZE,
    FILE_TOKENS,
    ImageRule,
    _encode,
    _render_functions,
    count_completion_text,
    count_prompt_tokens,
    count_text_tokens,
    image_size,
    image_tokens,
    preload,
    split_tokens,
    tokenizer_for,
)
from gateway.tokens.tables import ENCODING_NAMES, EncodingFileError, load_encoding

REPO = Path(__file__).resolve().parents[2]
O200K = load_encoding("o200k_base")
CL100K = load_encoding("cl100k_base")


# -- the shipped encodings ------------------------------------------------------------


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_shipped_encodings_are_tiktokens_own(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's constructor for `name`, fed our ranks, builds the same encoding."""
    ours = load_encoding(name)
    ranks = ours._mergeable_ranks
    seen: list[str] = []

    def no_download(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen.append(url)
        assert expected_hash == tokenizer_files._FILES[name].sha256
        return ranks

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", no_download)
    official = openai_public.ENCODING_CONSTRUCTORS[name]()
    assert seen == [f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"]
    assert ours._pat_str == official["pat_str"]
    assert ours._special_tokens == official["special_tokens"]
    assert sorted(ranks.values()) == list(range(len(ranks)))  # every rank, once


def test_known_token_ids() -> None:
    assert O200K.encode_ordinary("Hello world") == [13225, 2375]
    assert CL100K.encode_ordinary("Hello world") == [9906, 1917]
    assert O200K.n_vocab == 200019 and CL100K.n_vocab == 100277


def test_a_corrupt_or_missing_file_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tokenizer_files._FILES["cl100k_base"]
    monkeypatch.setitem(tokenizer_files._FILES, "bad_hash", dataclasses.replace(spec, sha256="0"))
    monkeypatch.setitem(
        tokenizer_files._FILES, "no_file", dataclasses.replace(spec, file="absent.tiktoken.xz")
    )
    with pytest.raises(EncodingFileError, match="expected 0"):
        load_encoding("bad_hash")
    with pytest.raises(EncodingFileError, match="cannot read"):
        load_encoding("no_file")
    with pytest.raises(KeyError, match="p50k_base"):
        load_encoding("p50k_base")


def test_counting_works_with_the_network_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encodings are built from shipped files even when every connection fails."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    load_encoding.cache_clear()
    try:
        assert count_text_tokens("Hello world", "gpt-4o") == 2
        assert count_text_tokens("Hello world", "gpt-4") == 2
    finally:
        load_encoding.cache_clear()


def test_a_fresh_process_counts_offline(tmp_path: Path) -> None:
    """No encoding cached anywhere, sockets refused: counting still works."""
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network is unreachable (test)")

        socket.socket.connect = refuse
        socket.getaddrinfo = refuse
        from gateway.tokens.count import count_prompt_tokens, count_text_tokens
        body = {"messages": [{"role": "user", "content": "Hello world"}]}
        print(count_text_tokens("Hello world", "gpt-4o"), count_text_tokens("Hi", "gpt-4"),
              count_prompt_tokens(body, "gpt-4o-mini"))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "1", "9"]
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or cached


def test_preload_builds_every_encoding() -> None:
    preload()
    before = load_encoding.cache_info()
    for name in ENCODING_NAMES:
        load_encoding(name)
    assert load_encoding.cache_info().hits == before.hits + len(ENCODING_NAMES)


# -- which tokenizer ----------------------------------------------------------------------


def test_every_model_tiktoken_knows_maps_to_its_encoding() -> None:
    known = {
        model: encoding
        for model, encoding in tiktoken.model.MODEL_TO_ENCODING.items()
        if encoding in ("o200k_base", "cl100k_base", "o200k_harmony")
    }
    assert len(known) > 10
    for model, encoding in known.items():
        tokenizer = tokenizer_for(model)
        assert tokenizer.exact and tokenizer.family == "openai", model
        assert tokenizer.encoding == encoding.replace("o200k_harmony", "o200k_base"), model


@pytest.mark.parametrize(
    ("model", "family", "encoding"),
    [
        ("gpt-4o-2024-08-06", "openai", "o200k_base"),
        ("GPT-4o-mini", "openai", "o200k_base"),
        ("openai/gpt-4.1-nano", "openai", "o200k_base"),
        ("azure/gpt-4.5-preview", "openai", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai", "o200k_base"),
        ("gpt-5", "openai", "o200k_base"),
        ("gpt-5.2-codex", "openai", "o200k_base"),
        ("o1", "openai", "o200k_base"),
        ("o3-mini-2025-01-31", "openai", "o200k_base"),
        ("o4-mini", "openai", "o200k_base"),
        ("gpt-oss-120b", "openai", "o200k_base"),
        ("chatgpt-4o-latest", "openai", "o200k_base"),
        ("gpt-4-0613", "openai", "cl100k_base"),
        ("gpt-4-turbo", "openai", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "openai", "cl100k_base"),
        ("gpt-35-turbo", "openai", "cl100k_base"),
        ("ft:gpt-3.5-turbo:acme::x", "openai", "cl100k_base"),
        ("text-embedding-3-small", "openai", "cl100k_base"),
        ("claude-sonnet-4-5-20250929", "claude", "o200k_base"),
        ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "claude", "o200k_base"),
        ("gemini-2.5-pro", "gemini", "o200k_base"),
        ("models/gemini-1.5-flash", "gemini", "o200k_base"),
        ("google/gemma-3-27b-it", "gemini", "o200k_base"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama", "o200k_base"),
        ("mistral-large-latest", "other", "o200k_base"),
        ("gpt-4ox", "other", "o200k_base"),  # not gpt-4o, not gpt-4
        ("o10", "other", "o200k_base"),
    ],
)
def test_model_families(model: str, family: str, encoding: str) -> None:
    tokenizer = tokenizer_for(model)
    assert (tokenizer.family, tokenizer.encoding) == (family, encoding)
    assert tokenizer.exact == (family == "openai")
    assert (tokenizer.factor == 1.0) == tokenizer.exact


def test_no_model_counts_like_gpt_4o() -> None:
    assert tokenizer_for(None) == tokenizer_for("gpt-4o")
    text = "Tokens are counted before the upstream answers."
    assert count_text_tokens(text) == len(O200K.encode_ordinary(text))


# -- text ---------------------------------------------------------------------------------


@given(st.text())
def test_exact_counts_are_the_encodings_counts(text: str) -> None:
    assert count_text_tokens(text, "gpt-4o") == len(O200K.encode_ordinary(text))
    assert count_text_tokens(text, "gpt-4") == len(CL100K.encode_ordinary(text))


@pytest.mark.parametrize(("model", "factor"), [("claude-3-haiku", 1.3), ("gemini-2.0", 1.1)])
def test_other_families_scale_o200k_up(model: str, factor: float) -> None:
    text = "A documented estimate: o200k_base counts times the family's factor, rounded up."
    base = len(O200K.encode_ordinary(text))
    assert count_text_tokens(text, model) == math.ceil(base * factor) > base
    assert count_text_tokens("", model) == 0


def test_completion_text_counts_like_text() -> None:
    for model in (None, "gpt-4", "claude-opus-4"):
        assert count_completion_text("Streamed output, cut short", model) == count_text_tokens(
            "Streamed output, cut short", model
        )


SPLITS = [
    ("", []),
    ("Hello world", ["Hello", " world"]),
    ("I don't", ["I", " don't"]),
    ("12345", ["123", "45"]),
    ("a\n\nb", ["a", "\n\n", "b"]),
    ("🫠", ["", "", "🫠"]),  # three byte-level tokens; the character comes with the last
    ("a\ud800b", ["a", "\ud800", "b"]),  # a lone surrogate is kept, counted as U+FFFD
]


@pytest.mark.parametrize(("text", "pieces"), SPLITS)
def test_split_tokens_table(text: str, pieces: list[str]) -> None:
    assert split_tokens(text) == pieces
    assert count_text_tokens(text) == len(pieces)


@given(
    st.text(st.characters(exclude_categories=())),  # lone surrogates included
    st.sampled_from([None, "gpt-4", "gpt-5-mini"]),
)
def test_pieces_concatenate_back_and_count_matches(text: str, model: str | None) -> None:
    pieces = split_tokens(text, model)
    assert "".join(pieces) == text
    assert count_text_tokens(text, model) == len(pieces)


def _long_text(seed: int, length: int) -> str:
    rng = random.Random(seed)
    atoms = ["word", "Word", " ", "  ", "\n", "\n\n", "\t", "42", "1234567", ".", "!!", "'s"]
    atoms += ["你好", "é", "😀", "_", "/", " the", " The", "\r\n", "   ", "x" * 40, " !"]
    atoms += ["\u00a0", "\u3000", "\x1c", "\u01c5", "a\u0301", " 7", " \n"]
    parts: list[str] = []
    size = 0
    while size < length:
        parts.append(rng.choice(atoms))
        size += len(parts[-1])
    return "".join(parts)


@pytest.mark.parametrize("seed", range(6))
def test_long_texts_are_encoded_in_chunks_without_changing_the_ids(seed: int) -> None:
    text = _long_text(seed, 200_000)
    for encoding in (O200K, CL100K):
        assert _encode(encoding, text) == encoding.encode_ordinary(text)


def test_a_megabyte_of_spaces_does_not_crash_tiktoken() -> None:
    # tiktoken's regex engine panics (a BaseException) on this when given it whole.
    count = count_text_tokens(" " * 1_000_000)
    assert 7_000 < count < 9_000
    assert count_text_tokens("\n" * 300_000 + "end", "gpt-4") > 0


# -- chat framing -----------------------------------------------------------------------


def _user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content, **extra}]}


def _tokens(text: str) -> int:
    return len(O200K.encode_ordinary(text))


# 3 to prime the reply + 3 per message + the role ("user": 1 token) = 7.
PROMPTS = [
    ("text", _user("Hello world"), 7 + 2),
    ("name", _user("Hello world", name="bob"), 7 + 2 + 1 + 1),
    ("text parts", _user([{"type": "text", "text": "Hello"}, {"type": "text", "text": " you"}]), 9),
    ("file", _user([{"type": "file", "file": {"file_id": "file-1"}}]), 7 + FILE_TOKENS),
    (
        "function role",
        {"messages": [{"role": "function", "name": "f", "content": "1"}]},
        3 + 3 + _tokens("function") - 2 + 1 + _tokens("f") + _tokens("1"),
    ),
    ("no messages", {}, 3),
    ("junk shapes", {"messages": "nope", "tools": {"x": 1}, "tool_choice": 7}, 3),
]


@pytest.mark.parametrize(
    ("body", "expected"), [p[1:] for p in PROMPTS], ids=[p[0] for p in PROMPTS]
)
def test_count_prompt_tokens_table(body: dict[str, Any], expected: int) -> None:
    assert count_prompt_tokens(body) == expected
    assert count_prompt_tokens(body, "gpt-4o") == expected


def test_the_body_model_is_not_used() -> None:
    """The body names the client's model (maybe an alias); the caller names the upstream's."""
    body = {"model": "claude-opus-4", **_user("Hello world")}
    assert count_prompt_tokens(body) == count_prompt_tokens(body, "gpt-4o") == 9
    assert count_prompt_tokens(body, "claude-opus-4") == math.ceil(9 * 1.3)


def test_assistant_tool_calls_and_tool_results_count() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    alone = count_prompt_tokens({"messages": [assistant]})
    assert alone == 3 + 3 + _tokens("assistant") + 3 + _tokens("f") + _tokens('{"a":1}')
    assert count_prompt_tokens({"messages": [assistant, tool]}) - alone == (
        3 + _tokens("tool") + _tokens("sunny") + _tokens("call_1")
    )


# -- tools ---------------------------------------------------------------------------------

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer"},
            "where": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "tags": {"type": "array"}},
                "required": ["lat"],
            },
            "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["city"],
    },
}
WEATHER_TS = """namespace functions {

// Weather for a city
type get_weather = (_: {
// City name
city: string,
unit?: "c" | "f",
days?: number,
where?: {
  lat: number,
  tags?: any[],
},
either?: string | null,
}) => any;

type ping = () => any;

} // namespace functions"""


def test_functions_render_as_openai_shows_them() -> None:
    assert _render_functions([WEATHER, {"name": "ping"}]) == WEATHER_TS


def test_tool_definitions_count_their_rendering() -> None:
    base = _user("Hello world")
    tools = [
        {"type": "function", "function": WEATHER},
        {"type": "function", "function": {"name": "ping"}},
    ]
    rendered = _tokens(WEATHER_TS)
    assert count_prompt_tokens({**base, "tools": tools}) == 9 + 9 + rendered
    # Legacy `functions` count the same.
    assert count_prompt_tokens({**base, "functions": [WEATHER, {"name": "ping"}]}) == 18 + rendered
    # With a system message the definitions join it: -4, and it gains a newline.
    system = {"role": "system", "content": "Be brief."}
    with_system = {"messages": [system, *base["messages"]], "tools": tools}
    system_alone = 3 + _tokens("system") + _tokens("Be brief.\n")
    assert count_prompt_tokens(with_system) == 9 + system_alone + 9 + rendered - 4


def test_tool_choice_and_other_tools() -> None:
    tools = [{"type": "function", "function": {"name": "ping"}}]
    base = {**_user("Hi"), "tools": tools}
    auto = count_prompt_tokens(base)
    assert count_prompt_tokens({**base, "tool_choice": "auto"}) == auto
    assert count_prompt_tokens({**base, "tool_choice": "none"}) == auto + 1
    named = {"type": "function", "function": {"name": "ping"}}
    assert count_prompt_tokens({**base, "tool_choice": named}) == auto + 4 + _tokens("ping")
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    with_custom = count_prompt_tokens({**base, "tools": [*tools, custom]})
    assert with_custom == auto + 8 + _tokens('{"type":"custom","custom":{"name":"grammar"}}')


def test_json_schema_response_format() -> None:
    base = _user("Hello world")
    spec = {"name": "x", "schema": {"type": "object"}}
    fmt = {"type": "json_schema", "json_schema": spec}
    expected = 9 + 12 + _tokens('{"name":"x","schema":{"type":"object"}}')
    assert count_prompt_tokens({**base, "response_format": fmt}) == expected
    assert count_prompt_tokens({**base, "response_format": {"type": "json_object"}}) == 9


def test_claude_adds_its_tool_system_prompt() -> None:
    body = {**_user("Hello world"), "tools": [{"type": "function", "function": {"name": "ping"}}]}
    text = count_prompt_tokens(body, "gpt-4o")
    assert count_prompt_tokens(body, "claude-sonnet-4") == math.ceil(text * 1.3) + 346


# -- media ------------------------------------------------------------------------------

GPT4O = ImageRule("tiles", 85, 170)


@pytest.mark.parametrize(
    ("rule", "size", "detail", "expected"),
    [
        (GPT4O, (1024, 1024), "high", 765),  # OpenAI's examples
        (GPT4O, (2048, 4096), "high", 1105),
        (GPT4O, (4096, 8192), "auto", 1105),
        (GPT4O, (1024, 1024), "low", 85),
        (GPT4O, (512, 512), "high", 255),  # small images are not scaled up
        (GPT4O, None, "auto", 765),  # unknown size: DEFAULT_IMAGE_SIZE
        (ImageRule("tiles", 2833, 5667), (1024, 1024), "high", 2833 + 4 * 5667),
        (ImageRule("patches", multiplier=1.62), (1024, 1024), "high", math.ceil(1024 * 1.62)),
        (ImageRule("patches", multiplier=1.0), (1800, 2400), "low", 1452),  # OpenAI's example
        (ImageRule("patches", multiplier=1.0), (20_000, 100), "auto", 400 * 2),  # 12800x64
        (ImageRule("pixels"), (1000, 1000), "auto", 1334),  # Anthropic: w*h/750
        (ImageRule("pixels"), (4000, 3000), "auto", 1532),  # ~1.15 MP: 1238x928
        (ImageRule("pixels"), (8000, 200), "auto", 82),  # long edge 1568 px: 1568x39
        (ImageRule("gemini"), (300, 200), "auto", 258),
        (ImageRule("gemini"), (1024, 1024), "auto", 4 * 258),
    ],
)
def test_image_tokens(
    rule: ImageRule, size: tuple[int, int] | None, detail: str, expected: int
) -> None:
    assert image_tokens(rule, size, detail) == expected


def _data_url(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 640, 480) + b"\x08\x02\0\0\0"
GIF = b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 8
JPEG = (
    b"\xff\xd8"
    + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"  # APP0
    + b"\xff\xe1\x00\x06Exif"  # APP1, skipped by its length
    + b"\xff\xc2\x00\x11\x08"  # SOF2 (progressive), 8 bits
    + struct.pack(">HH", 1080, 1920)  # height, width
    + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
)


def _jpeg_with_metadata(size: int) -> bytes:
    """A JPEG whose start-of-frame comes after about `size` bytes of APP1 segments."""
    segments = b""
    while size > 0:
        part = min(size, 60_000)
        segments += b"\xff\xe1" + (part + 2).to_bytes(2, "big") + b"\0" * part
        size -= part
    return JPEG[:2] + segments + JPEG[2:]


WEBP_X = (
    b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + (799).to_bytes(3, "little") + (599).to_bytes(3, "little")
)
WEBP_L = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f" + (99 | (49 << 14)).to_bytes(4, "little")
WEBP_LOSSY = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0" + b"\0" * 6 + struct.pack("<HH", 256, 128)


@pytest.mark.parametrize(
    ("url", "size"),
    [
        (_data_url("image/png", PNG), (640, 480)),
        (_data_url("image/gif", GIF), (320, 200)),
        (_data_url("image/jpeg", JPEG), (1920, 1080)),
        (_data_url("image/jpeg", _jpeg_with_metadata(30_000)), (1920, 1080)),
        (_data_url("image/jpeg", _jpeg_with_metadata(70_000)), None),  # past the header window
        (_data_url("image/webp", WEBP_X), (800, 600)),
        (_data_url("image/webp", WEBP_L), (100, 50)),
        (_data_url("image/webp", WEBP_LOSSY), (256, 128)),
        ("https://example.com/cat.png", None),
        ("data:image/png,rawtext", None),  # not base64
        ("data:image/png;base64,!!!!", None),
        (_data_url("image/bmp", b"BM" + b"\0" * 40), None),
        (_data_url("image/jpeg", b"\xff\xd8\x00\x00garbage"), None),
    ],
)
def test_image_size_from_data_urls(url: str, size: tuple[int, int] | None) -> None:
    assert image_size(url) == size


def _image(url: str, detail: str | None = None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def test_images_in_requests_use_the_models_rule_and_the_size_when_known() -> None:
    png = _data_url("image/png", PNG)  # 640x480: 2 tiles
    url = "https://example.com/cat.png"  # unknown: 1024x1024
    assert count_prompt_tokens(_user([_image(png, "high")]), "gpt-4o") == 7 + 85 + 2 * 170
    assert count_prompt_tokens(_user([_image(png, "low")]), "gpt-4o") == 7 + 85
    assert count_prompt_tokens(_user([_image(url)]), "gpt-4o") == 7 + 765
    assert count_prompt_tokens(_user([_image(url)]), "gpt-5") == 7 + 70 + 4 * 140
    assert count_prompt_tokens(_user([_image(url)]), "gpt-4.1-mini") == 7 + math.ceil(1024 * 1.62)
    assert count_prompt_tokens(_user([_image(png)]), "claude-3-opus") == math.ceil(7 * 1.3) + 410
    assert DEFAULT_IMAGE_SIZE == (1024, 1024)


def _audio(seconds: int, fmt: str, prefix: str = "") -> dict[str, Any]:
    rate = 32_000 if fmt == "wav" else 16_000
    data = prefix + base64.b64encode(b"\0" * rate * seconds).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def test_audio_by_duration() -> None:
    assert count_prompt_tokens(_user([_audio(3, "wav")])) == 7 + 3 * AUDIO_TOKENS_PER_S
    assert count_prompt_tokens(_user([_audio(2, "mp3")])) == 7 + 2 * AUDIO_TOKENS_PER_S
    assert count_prompt_tokens(_user([_audio(1, "wav", "data:audio/wav;base64,")])) == 17
    assert count_prompt_tokens(_user([_audio(2, "wav")]), "gemini-2.5-flash") == 8 + 64
    assert count_prompt_tokens(_user([{"type": "input_audio", "input_audio": "x"}])) == 7


@settings(max_examples=50)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_body_counts_without_error(value: Any) -> None:
    body = {"messages": [{"role": "user", "content": value}], "tools": value, "tool_choice": value}
    assert count_prompt_tokens(body) >= 3
    assert count_prompt_tokens({"messages": [value], "response_format": value}) >= 3


# -- the work per request is bounded -------------------------------------------------------


def test_text_past_the_exact_budget_is_estimated_from_above() -> None:
    """A request's texts are counted exactly up to EXACT_CHARS; past that each text
    counts as its UTF-8 length, which no byte-level BPE count exceeds."""
    from gateway.tokens.count import EXACT_CHARS, count_prompt_tokens, count_text_tokens

    small = "word " * 1000
    body = {"messages": [{"role": "user", "content": small}]}
    assert count_prompt_tokens(body, "gpt-4o") == 3 + 3 + 1 + count_text_tokens(small, "gpt-4o")
    for big in ("a" * (EXACT_CHARS + 1), "héllo wörld " * (EXACT_CHARS // 10)):
        body = {"messages": [{"role": "user", "content": big}]}
        estimate = count_prompt_tokens(body, "gpt-4o")
        assert estimate == 3 + 3 + 1 + len(big.encode())
        assert estimate >= 3 + 3 + 1 + count_text_tokens(big, "gpt-4o")
    # Once the budget is used, every later text is estimated too (the bound holds).
    first = {"role": "user", "content": "a" * EXACT_CHARS}
    body = {"messages": [first, {"role": "user", "content": "hi there"}]}
    exact = 3 + 2 * (3 + 1) + count_text_tokens(first["content"]) + count_text_tokens("hi there")
    assert count_prompt_tokens(body, "gpt-4o") >= exact


def test_preload_builds_only_what_the_models_use() -> None:
    """A worker whose models all count with o200k_base never builds cl100k_base (its
    memory, ~19 MB, is not held for nothing); a later use builds it and counts right.
    The Python rank dicts are emptied once built: the Rust core has its own copy."""
    script = textwrap.dedent(
        """
        from gateway.tokens.count import count_text_tokens, preload
        from gateway.tokens.tables import load_encoding
        preload(["gpt-4o-mini", "fake-model", "claude-sonnet-4"])
        built = load_encoding.cache_info().currsize
        print(built, len(load_encoding("o200k_base")._mergeable_ranks))
        print(count_text_tokens("Hello world", "gpt-4"), load_encoding.cache_info().currsize)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "2", "2"]
