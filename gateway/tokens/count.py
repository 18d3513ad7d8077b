"""Token counts before the upstream answers: exact for OpenAI models, estimated for others.

The gateway needs a request's prompt tokens before the upstream answers (TPM limits,
spend reservations), the completion tokens of a stream the upstream cut short (no
usage to settle with), and one piece per token for the mock provider to stream
(`split_tokens`: the real tokens, decoded one by one).

Text. OpenAI models are counted exactly with tiktoken's encodings, built offline from
rank files shipped with the gateway (`gateway.tokens.tables` says why and how):
o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5.x, o1/o3/o4, gpt-oss and codex models,
cl100k_base for gpt-4, gpt-4-turbo, gpt-3.5, davinci-002, babbage-002 and the
embedding models. The model is picked from the name, after dropping a provider path
(``openai/gpt-4o``), a fine-tune wrapper (``ft:gpt-4o-mini:org::id``) and case.
Other vendors' tokenizers are not public, or not shipped: their text is counted with
o200k_base and scaled by a factor per family (`Tokenizer.factor`), rounded up. Those
factors err high on purpose: the count reserves capacity before the call and
settlement corrects it to the vendor's reported usage, so overshooting a little is
cheap and undershooting lets concurrent requests past a limit.

- Claude x1.30: Anthropic's tokenizer has no public release; a published comparison
  of Claude 3.5 Sonnet with gpt-4o found 16-30% more tokens for the same input (least
  on English prose, most on code). We take the top of that range.
- Gemini and Gemma x1.10: Google documents "about 4 characters per token"; o200k_base
  counts 4.5 characters per token on the bench's English (bench/token_accuracy.py),
  so Gemini is taken as 10% above it.
- Llama x1.05: measured with Meta's Llama 3 and Llama 4 tokenizers (shipped in the
  ``llama-models`` package) on the bench's corpus: both count 0.99-1.00x o200k_base on
  English and code; on other languages Llama 3 counts 1.17x and Llama 4 0.97x.
- Every other model x1.15 (Mistral, Qwen, DeepSeek...): not measured; open tokenizers
  of the same vocabulary size behave like Llama's, so this covers the 1.17x seen on
  non-English text.

Chat structure, as OpenAI's published counting recipe (cookbook "How to count tokens
with tiktoken") describes it: 3 tokens per message, 1 more when it has a `name`, 3 to
prime the reply; the role and each text field count as text. Tool definitions are
rendered the way OpenAI feeds them to the model, as a TypeScript ``namespace
functions`` (the reverse-engineered format of the openai-chat-tokens project: a
``// description`` line, then ``type name = (_: {...}) => any;``) and counted, plus 9
tokens; minus 4 when a system message exists (the definitions join it, and that
message gains a newline); ``tool_choice`` "none" adds 1, a named function 4 plus the
name. A ``json_schema`` response format counts its compact JSON plus 12.

Media. Images cost what each vendor documents, from the image's size when the request
carries it as a data URL (PNG, JPEG, GIF and WebP headers are read, nothing decoded
beyond them); for an image by URL the size is unknown and a 1024x1024 image is
assumed (the size most clients send):

- OpenAI tiles (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3): ``detail: low`` costs the
  base; ``high`` and ``auto`` scale the image to fit 2048x2048, then its short side
  down to 768, and cost base + per-tile x 512 px tiles. Base/tile: 85/170 (gpt-4o,
  gpt-4.1, gpt-4.5), 70/140 (gpt-5.x), 75/150 (o1, o3), 2833/5667 (gpt-4o-mini),
  65/129 (computer-use). A 1024x1024 image at high detail costs 765 on gpt-4o.
- OpenAI patches (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini, codex-mini): 32 px
  patches, at most 1536 (larger images are scaled down to fit), times 1.62, 2.46 or
  1.72 by model; ``detail`` has no effect.
- Claude: width x height / 750, after scaling to at most 1568 px on the long edge
  and about 1.15 megapixels (so at most ~1530 tokens).
- Gemini: 258 tokens when both sides are at most 384 px, else 258 per 768x768 tile.

Audio input: 10 tokens per second for OpenAI (gpt-4o audio), 32 for Gemini (Google's
figure); the duration comes from the decoded size at 32 kB/s for wav (16 kHz 16-bit
mono) and 16 kB/s for mp3 (128 kbit/s). A file (PDF) costs a flat `FILE_TOKENS`: its
text and page images are extracted upstream and cannot be known before that.

Reasoning tokens are never visible in a stream, so `count_completion_text` counts only
what was streamed.

Cost (bench/token_accuracy.py): a 2 KB English prompt counts in 55 us with o200k_base
and 90 us with cl100k_base; building the encodings takes ~0.35 s and ~0.15 s once per
process (`preload` does it at startup for the configured models: ~46 MB of memory for
o200k_base and ~19 MB for cl100k_base, gateway/tokens/tables.py). Counting is linear in
the text: ~50 ms per MB of prose, up to ~250 ms per MB of a single repeated character,
so callers on an event loop should count large bodies in a worker thread (tiktoken
releases the GIL while it encodes; gateway/offload.py). The work per request is bounded
too: a request's texts are counted exactly up to `EXACT_CHARS` (1 Mi characters, 50-250
ms at worst), and every text past that counts as its UTF-8 length, an upper bound (a
token is at least one byte), ~4x the real count for English prose. So a body of more
than ~1 MB of text reserves more than it will use, never less; settlement corrects it to
the vendor's reported usage. Text longer than `_CHUNK_CHARS` is encoded in pieces cut
where tiktoken's pre-tokenizer cuts anyway (so the count is unchanged), because
tiktoken's regex engine panics (a BaseException) on a whitespace run of about a million
characters.

Pure module: no network or other I/O beyond reading the shipped rank files once; no
trio/httpx/quart imports.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
import tiktoken

from gateway.tokens.tables import ENCODING_NAMES, load_encoding

__all__ = [
    "AUDIO_TOKENS_PER_S",
    "DEFAULT_IMAGE_SIZE",
    "EXACT_CHARS",
    "FILE_TOKENS",
    "ImageRule",
    "Tokenizer",
    "count_completion_text",
    "count_prompt_tokens",
    "count_text_tokens",
    "image_size",
    "image_tokens",
    "preload",
    "split_tokens",
    "tokenizer_for",
]

# -- chat framing (OpenAI's published recipe) ---------------------------------------------
MESSAGE_TOKENS: Final = 3
NAME_TOKENS: Final = 1
REPLY_PRIMING_TOKENS: Final = 3
FUNCTION_ROLE_ADJUST: Final = -2  # a "function" role message costs 2 fewer
CALL_TOKENS: Final = 3  # per tool call (or function_call) in an assistant message
TOOLS_TOKENS: Final = 9  # the tool definitions' framing
TOOLS_WITH_SYSTEM_ADJUST: Final = -4  # the definitions join an existing system message
TOOL_CHOICE_NONE_TOKENS: Final = 1
TOOL_CHOICE_NAMED_TOKENS: Final = 4  # plus the function name
SCHEMA_TOKENS: Final = 12  # a json_schema response format's framing, plus its JSON
OTHER_TOOL_TOKENS: Final = 8  # a non-function tool: its compact JSON plus this

# -- media -------------------------------------------------------------------------------
DEFAULT_IMAGE_SIZE: Final = (1024, 1024)  # assumed when the request does not carry the image
AUDIO_TOKENS_PER_S: Final = 10  # OpenAI; Gemini's rule says 32 (see Tokenizer.audio_per_s)
_AUDIO_BYTES_PER_S: Final[Mapping[str, int]] = {"wav": 32_000, "mp3": 16_000}
FILE_TOKENS: Final = 1_000
_IMAGE_HEADER_B64: Final = 88_000  # base64 chars read at most to find an image's size

# The text of one request counted exactly, at most; past it, each further text counts
# as its UTF-8 length (`_estimate`), an upper bound.
EXACT_CHARS: Final = 1 << 20

# Longer texts are encoded in pieces (tiktoken panics on ~1M-char whitespace runs).
_CHUNK_CHARS: Final = 65_536
_CUT_SEARCH: Final = 4_096  # how far back from a chunk's end to look for a safe cut
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ImageRule:
    """How one model family bills an input image (see the module docstring)."""

    kind: Literal["tiles", "patches", "pixels", "gemini"]
    base: int = 0  # tiles: the low-detail cost and the high-detail base
    per_tile: int = 0  # tiles: per 512 px tile
    multiplier: float = 1.0  # patches: tokens per 32 px patch


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """How tokens are counted for one model: which encoding, exactly or scaled."""

    family: str  # "openai", "claude", "gemini", "llama" or "other"
    encoding: str  # the tiktoken encoding text is counted with
    exact: bool  # True: text counts equal the vendor's tokenizer
    factor: float  # text tokens = ceil(encoding tokens * factor); 1.0 when exact
    image: ImageRule
    audio_per_s: int = AUDIO_TOKENS_PER_S
    tools_overhead: int = 0  # a hidden system prompt the vendor adds when tools are given


_GPT4O_TILES: Final = ImageRule("tiles", 85, 170)
_OPENAI_IMAGES: Final[Sequence[tuple[re.Pattern[str], ImageRule]]] = tuple(
    (re.compile(pattern + r"(?![a-z0-9])"), rule)
    for pattern, rule in (
        (r"gpt-4\.1-mini|gpt-5(?:\.\d+)?-mini", ImageRule("patches", multiplier=1.62)),
        (r"gpt-4\.1-nano|gpt-5(?:\.\d+)?-nano", ImageRule("patches", multiplier=2.46)),
        (r"o4-mini|codex-mini", ImageRule("patches", multiplier=1.72)),
        (r"gpt-4o-mini", ImageRule("tiles", 2833, 5667)),
        (r"gpt-5", ImageRule("tiles", 70, 140)),
        (r"o1|o3", ImageRule("tiles", 75, 150)),
        (r"computer-use", ImageRule("tiles", 65, 129)),
    )
)
_OPENAI_ENCODINGS: Final[Sequence[tuple[re.Pattern[str], str]]] = tuple(
    (re.compile(r"(?:" + pattern + r")(?![a-z0-9])"), encoding)
    for pattern, encoding in (
        (
            r"gpt-5|gpt-4\.1|gpt-4\.5|gpt-4o|chatgpt-4o|gpt-oss|o1|o3|o4"
            r"|codex|computer-use|gpt-realtime|gpt-audio|omni-moderation",
            "o200k_base",
        ),
        (
            r"gpt-4|gpt-3\.5|gpt-35|text-embedding-ada-002|text-embedding-3"
            r"|davinci-002|babbage-002",
            "cl100k_base",
        ),
    )
)
_CLAUDE: Final = Tokenizer(
    "claude", "o200k_base", False, 1.30, ImageRule("pixels"), tools_overhead=346
)
_GEMINI: Final = Tokenizer("gemini", "o200k_base", False, 1.10, ImageRule("gemini"), 32)
_LLAMA: Final = Tokenizer("llama", "o200k_base", False, 1.05, _GPT4O_TILES)
_OTHER: Final = Tokenizer("other", "o200k_base", False, 1.15, _GPT4O_TILES)
_DEFAULT: Final = Tokenizer("openai", "o200k_base", True, 1.0, _GPT4O_TILES)


@functools.lru_cache(maxsize=1024)
def tokenizer_for(model: str | None) -> Tokenizer:
    """How to count tokens for `model` (None: o200k_base, exact, as gpt-4o)."""
    if model is None:
        return _DEFAULT
    name = _normalise(model)
    for pattern, encoding in _OPENAI_ENCODINGS:
        if pattern.match(name):
            rule = next((r for p, r in _OPENAI_IMAGES if p.match(name)), _GPT4O_TILES)
            return Tokenizer("openai", encoding, True, 1.0, rule)
    if "claude" in name:
        return _CLAUDE
    if "gemini" in name or "gemma" in name:
        return _GEMINI
    if "llama" in name:
        return _LLAMA
    return _OTHER


def _normalise(model: str) -> str:
    """The bare model name: lower case, no provider path, no fine-tune wrapper."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name.rsplit("/", 1)[-1]


def preload(models: Iterable[str] | None = None) -> None:
    """Build now the encodings counting for `models` uses (None: all); one no model
    uses is built on first use, and is not held (19-46 MB) for nothing."""
    for name in ENCODING_NAMES if models is None else {tokenizer_for(m).encoding for m in models}:
        load_encoding(name)


# -- text ----------------------------------------------------------------------------------


def count_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of `text` for `model`: exact for OpenAI models, scaled o200k for others."""
    tokenizer = tokenizer_for(model)
    count = _count(load_encoding(tokenizer.encoding), text)
    return count if tokenizer.exact else math.ceil(count * tokenizer.factor)


def count_completion_text(text: str, model: str | None = None) -> int:
    """Completion tokens of streamed output `text` (when the upstream reported no usage).

    Reasoning tokens the upstream never streamed are not counted.
    """
    return count_text_tokens(text, model)


def split_tokens(text: str, model: str | None = None) -> list[str]:
    """`text` as one string per token of `model`'s encoding, concatenating back to `text`.

    A token that ends inside a multi-byte character yields "" and the character comes
    with the token that completes it, so ``len(split_tokens(t)) == count_text_tokens(t)``
    for every OpenAI model (and for the default, None). Other models are split with
    o200k_base, unscaled.
    """
    if not text:
        return []
    encoding = load_encoding(tokenizer_for(model).encoding)
    clean = _without_surrogates(text)
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(raw) for raw in encoding.decode_tokens_bytes(_encode(encoding, clean))]
    if clean is text:
        return pieces
    # Lone surrogates were replaced one for one: cut the original at the same places.
    out: list[str] = []
    at = 0
    for piece in pieces:
        out.append(text[at : at + len(piece)])
        at += len(piece)
    return out


def _estimate(text: str) -> int:
    """An upper bound of `text`'s tokens in any byte-level BPE encoding (each token is
    at least one byte): its UTF-8 length, found without encoding when it is ASCII."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _count(encoding: tiktoken.Encoding, text: str) -> int:
    return len(_encode(encoding, _without_surrogates(text))) if text else 0


def _without_surrogates(text: str) -> str:
    """`text` with each lone surrogate (not encodable as UTF-8) replaced by U+FFFD."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


def _encode(encoding: tiktoken.Encoding, text: str) -> list[int]:
    """Token ids of `text`; long texts in chunks cut where the pre-tokenizer cuts.

    A cut is placed before a space followed by a letter: in both encodings' split
    patterns such a space starts a pre-token (`` word``) and no pre-token runs into it
    (whitespace runs leave their last space to the word), and no pattern looks
    behind, so the ids are those of the whole text. A text with no such place within
    `_CUT_SEARCH` characters (a megabyte of spaces, say) is cut anyway: slightly off,
    but tiktoken does not panic.
    """
    if len(text) <= _CHUNK_CHARS:
        return encoding.encode_ordinary(text)
    ids: list[int] = []
    start = 0
    while len(text) - start > _CHUNK_CHARS:
        end = start + _CHUNK_CHARS
        cut = _safe_cut(text, end - _CUT_SEARCH, end)
        ids += encoding.encode_ordinary(text[start:cut])
        start = cut
    ids += encoding.encode_ordinary(text[start:])
    return ids


def _safe_cut(text: str, low: int, high: int) -> int:
    """The last safe cut strictly between `low` and `high` (see `_encode`), else `high`."""
    at = high
    while (at := text.rfind(" ", low + 1, at)) > low:
        if text[at + 1].isalpha():
            return at
    return high


# -- requests -------------------------------------------------------------------------------


def count_prompt_tokens(body: Mapping[str, Any], model: str | None = None) -> int:
    """Prompt tokens of an OpenAI chat-completions request `body` for `model`.

    Pass the upstream's model name: the body's ``model`` is the client's name for the
    deployment, often an alias, so it is not used. None counts as gpt-4o would.
    """
    tokenizer = tokenizer_for(model)
    counter = _PromptCounter(load_encoding(tokenizer.encoding), tokenizer)
    return counter.count(body)


class _PromptCounter:
    """Counts one request: text tokens (scaled for estimated models) and media tokens."""

    __slots__ = ("encoding", "exact_left", "media", "text", "tokenizer")

    def __init__(self, encoding: tiktoken.Encoding, tokenizer: Tokenizer) -> None:
        self.encoding = encoding
        self.tokenizer = tokenizer
        self.text = 0  # tokens counted with the encoding (framing included)
        self.media = 0  # tokens of images, audio and files (never scaled)
        self.exact_left = EXACT_CHARS  # characters still to be counted exactly

    def count(self, body: Mapping[str, Any]) -> int:
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        functions = _function_definitions(body)
        has_system = False
        self.text += REPLY_PRIMING_TOKENS
        for message in messages:
            if isinstance(message, Mapping):
                system = message.get("role") in ("system", "developer")
                self._message(message, pad=bool(functions) and system and not has_system)
                has_system = has_system or system
        if functions:
            self.text += TOOLS_TOKENS + self._str(_render_functions(functions))
            if has_system:
                self.text += TOOLS_WITH_SYSTEM_ADJUST
        self._other_tools(body)
        self._tool_choice(body.get("tool_choice", body.get("function_call")))
        self._response_format(body.get("response_format"))
        tokenizer = self.tokenizer
        if tokenizer.exact:
            return self.text + self.media
        tools = body.get("tools")
        has_tools = bool(functions) or (isinstance(tools, list) and bool(tools))
        overhead = tokenizer.tools_overhead if has_tools else 0
        return math.ceil(self.text * tokenizer.factor) + self.media + overhead

    def _str(self, value: Any) -> int:
        if not isinstance(value, str) or not value:
            return 0
        if len(value) > self.exact_left:
            self.exact_left = 0  # what comes after is estimated too, so the bound holds
            return _estimate(value)
        self.exact_left -= len(value)
        return _count(self.encoding, value)

    def _message(self, message: Mapping[str, Any], *, pad: bool) -> None:
        role = message.get("role")
        self.text += MESSAGE_TOKENS + self._str(role)
        if role == "function":
            self.text += FUNCTION_ROLE_ADJUST
        name = message.get("name")
        if isinstance(name, str):
            self.text += NAME_TOKENS + self._str(name)
        content = message.get("content")
        if isinstance(content, str):
            self.text += self._str(content + "\n" if pad else content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    self._part(part)
        self.text += self._str(message.get("refusal")) + self._str(message.get("tool_call_id"))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    self._call(function)
        function_call = message.get("function_call")
        if isinstance(function_call, Mapping):
            self._call(function_call)

    def _call(self, function: Mapping[str, Any]) -> None:
        self.text += CALL_TOKENS + self._str(function.get("name"))
        self.text += self._str(function.get("arguments"))

    def _part(self, part: Mapping[str, Any]) -> None:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            self.text += self._str(part.get(kind))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = image.get("detail") if isinstance(image, Mapping) else None
            size = image_size(url) if isinstance(url, str) else None
            self.media += image_tokens(
                self.tokenizer.image, size, detail if isinstance(detail, str) else "auto"
            )
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if isinstance(audio, Mapping):
                self.media += self._audio(audio.get("data"), audio.get("format"))
        elif kind == "file":
            self.media += FILE_TOKENS

    def _audio(self, data: Any, fmt: Any) -> int:
        decoded = _base64_size(data) if isinstance(data, str) else 0
        rate = _AUDIO_BYTES_PER_S.get(fmt if isinstance(fmt, str) else "", 16_000)
        return max(1, math.ceil(decoded / rate * self.tokenizer.audio_per_s))

    def _other_tools(self, body: Mapping[str, Any]) -> None:
        """Tools that are not functions (custom, built-in): their compact JSON."""
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, Mapping) and tool.get("type", "function") != "function":
                    self.text += OTHER_TOOL_TOKENS + self._str(_compact_json(tool))

    def _tool_choice(self, choice: Any) -> None:
        if choice == "none":
            self.text += TOOL_CHOICE_NONE_TOKENS
        elif isinstance(choice, Mapping):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
            if isinstance(name, str):
                self.text += TOOL_CHOICE_NAMED_TOKENS + self._str(name)

    def _response_format(self, response_format: Any) -> None:
        if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema")
            self.text += SCHEMA_TOKENS + self._str(_compact_json(schema))


def _function_definitions(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The function definitions of ``tools`` (function tools) and legacy ``functions``."""
    found: list[Mapping[str, Any]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, Mapping) and tool.get("type", "function") == "function":
                function = tool.get("function")
                if isinstance(function, Mapping):
                    found.append(function)
    functions = body.get("functions")
    if isinstance(functions, list):
        found.extend(f for f in functions if isinstance(f, Mapping))
    return found


def _render_functions(functions: Sequence[Mapping[str, Any]]) -> str:
    """The function definitions as OpenAI shows them to the model: a TypeScript namespace."""
    lines = ["namespace functions {", ""]
    for function in functions:
        description = function.get("description")
        if isinstance(description, str) and description:
            lines.append(f"// {description}")
        name = function.get("name")
        name = name if isinstance(name, str) else ""
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if isinstance(parameters, Mapping) and isinstance(properties, Mapping) and properties:
            lines.append(f"type {name} = (_: {{")
            lines.extend(_render_properties(parameters, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _render_properties(schema: Mapping[str, Any], indent: int) -> list[str]:
    """An object schema's properties, one ``name?: type,`` line each (comments above)."""
    properties = schema.get("properties")
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    lines: list[str] = []
    pad = " " * indent
    for name, prop in properties.items() if isinstance(properties, Mapping) else ():
        prop = prop if isinstance(prop, Mapping) else {}
        description = prop.get("description")
        if isinstance(description, str) and description:
            lines.append(f"{pad}// {description}")
        optional = "" if name in required else "?"
        lines.append(f"{pad}{name}{optional}: {_render_type(prop, indent)},")
    return lines


def _render_type(schema: Mapping[str, Any], indent: int) -> str:
    """A JSON schema as a TypeScript type (enums as unions; unknown shapes as ``any``)."""
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return " | ".join(_compact_json(v) for v in enum)
    if "const" in schema:
        return _compact_json(schema["const"])
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key)
        if isinstance(variants, list) and variants:
            return " | ".join(
                _render_type(v if isinstance(v, Mapping) else {}, indent) for v in variants
            )
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_render_type({**schema, "type": k}, indent) for k in kind)
    if kind in ("number", "integer"):
        return "number"
    if kind in ("string", "boolean", "null"):
        return str(kind)
    if kind == "array":
        items = schema.get("items")
        return (_render_type(items, indent) if isinstance(items, Mapping) else "any") + "[]"
    if kind == "object" or "properties" in schema:
        return "\n".join(["{", *_render_properties(schema, indent + 2), "}"])
    return "any"


def _compact_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # not JSON-serialisable (a huge int): the validator refuses those
        return ""


# -- images ---------------------------------------------------------------------------------


def image_tokens(rule: ImageRule, size: tuple[int, int] | None, detail: str = "auto") -> int:
    """Tokens of one input image of `size` (width, height; None: `DEFAULT_IMAGE_SIZE`)."""
    width, height = size or DEFAULT_IMAGE_SIZE
    width, height = max(1, width), max(1, height)
    if rule.kind == "tiles":
        if detail == "low":
            return rule.base
        return rule.base + rule.per_tile * _openai_tiles(width, height)
    if rule.kind == "patches":
        return math.ceil(_openai_patches(width, height) * rule.multiplier)
    if rule.kind == "pixels":
        return _claude_image_tokens(width, height)
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def _openai_tiles(width: int, height: int) -> int:
    """512 px tiles after fitting 2048x2048, then scaling the short side down to 768."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return math.ceil(int(w) / 512) * math.ceil(int(h) / 512)


def _openai_patches(width: int, height: int, cap: int = 1536) -> int:
    """32 px patches, the image scaled down (keeping its aspect) to fit `cap` of them."""
    if math.ceil(width / 32) * math.ceil(height / 32) <= cap:
        return math.ceil(width / 32) * math.ceil(height / 32)
    shrink = math.sqrt(cap * 32 * 32 / (width * height))
    w, h = width * shrink / 32, height * shrink / 32
    shrink *= min(math.floor(w) / w, math.floor(h) / h)
    return min(cap, math.ceil(int(width * shrink) / 32) * math.ceil(int(height * shrink) / 32))


def _claude_image_tokens(width: int, height: int) -> int:
    """Anthropic: pixels / 750, after fitting 1568 px and ~1.15 megapixels."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    return max(1, math.ceil(int(width * scale) * int(height * scale) / 750))


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 data-URL image (PNG, JPEG, GIF, WebP), else None.

    Only the header is decoded: 256 base64 characters, or for a JPEG (whose size comes
    after its metadata segments) up to `_IMAGE_HEADER_B64`.
    """
    if not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0 or not url[:comma].endswith(";base64"):
        return None
    raw = _decode_prefix(url, comma + 1, 256)
    size = _header_size(raw)
    if size is None and raw.startswith(b"\xff\xd8"):
        size = _header_size(_decode_prefix(url, comma + 1, _IMAGE_HEADER_B64))
    return size


def _decode_prefix(text: str, start: int, chars: int) -> bytes:
    """The bytes of up to `chars` base64 characters of `text` from `start` (b"" if invalid)."""
    head = text[start : start + chars]
    try:
        return base64.b64decode(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return b""


def _header_size(raw: bytes) -> tuple[int, int] | None:
    """An image's size from the start of its file, when the format is one we know."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
        return width, height
    if raw[:6] in (b"GIF87a", b"GIF89a") and len(raw) >= 10:
        width, height = struct.unpack("<HH", raw[6:10])
        return width, height
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_size(raw)
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return _webp_size(raw)
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame marker."""
    at = 2
    while at + 9 <= len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = int.from_bytes(raw[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", raw[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    chunk = raw[12:16]
    if chunk == b"VP8X" and len(raw) >= 30:
        width = int.from_bytes(raw[24:27], "little") + 1
        height = int.from_bytes(raw[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(raw) >= 30:
        width, height = struct.unpack("<HH", raw[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(raw) >= 25:
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _base64_size(data: str) -> int:
    """Decoded size of base64 `data` (a data URL's payload too), without decoding it."""
    if data.startswith("data:"):
        data = data[data.find(",") + 1 :]
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
