"""OpenAI messages -> Anthropic `system` blocks and merged turns (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import JSON, CallContext
from gateway.providers.common import sniff_media_type

_IMAGE_TYPES: Final = frozenset(("image/jpeg", "image/png", "image/gif", "image/webp"))
_MIME_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_PDF: Final = "application/pdf"
_TEXT: Final = "text/plain"
_OCTET_STREAM: Final = "application/octet-stream"
_DATA_URL: Final = re.compile(r"data:([a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+)((?:;[^;,]*)*);base64,")
_SAFE_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_UNSAFE_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def has_text(text: str) -> bool:
    """Whether a text can be a text block: Anthropic refuses empty and whitespace-only ones."""
    return bool(text) and not text.isspace()


def _text_blocks(content: object) -> list[JSON]:
    """Text blocks of a string or an array of text/refusal parts, skipping blank ones."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if has_text(content) else []
    blocks: list[JSON] = []
    if isinstance(content, list):
        for part in content:
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and has_text(text):
                blocks.append({"type": "text", "text": text})
    return blocks


def tool_id(raw: str) -> str:
    """A tool-call id Anthropic accepts: `raw` itself when safe, else a stable rewrite.

    The rewrite keeps the safe characters (for readability) and appends a hash of the
    original, so distinct ids stay distinct and the same id always maps the same way.
    """
    if _SAFE_ID.fullmatch(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return _UNSAFE_ID_CHARS.sub("_", raw)[:40] + "_" + digest


def _clean_mime(mime: str) -> str:
    mime = mime.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(mime, mime)


def _b64_decode(data: str, param: str) -> bytes:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid("The data is not valid base64.", param) from None


def _media_block(mime: str, data: str, param: str, title: object = None) -> JSON:
    """An image or document block for base64 `data` declared as `mime`.

    The bytes decide the type sent: Anthropic refuses an image whose declared type
    differs from its content, and clients often label a PNG as JPEG.
    """
    declared = _clean_mime(mime)
    raw = _b64_decode(data, param)
    if declared == _TEXT:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The text/plain file is not valid UTF-8.", param) from None
        block: JSON = {
            "type": "document",
            "source": {"type": "text", "media_type": _TEXT, "data": text},
        }
    elif declared in _IMAGE_TYPES or declared in (_PDF, _OCTET_STREAM):
        actual = sniff_media_type(raw)
        if actual not in _IMAGE_TYPES and actual != _PDF:  # HEIC, unknown: not for Anthropic
            raise invalid("The content is not a JPEG, PNG, GIF or WebP image nor a PDF.", param)
        if actual != _PDF:
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": actual, "data": data},
            }
        block = {"type": "document", "source": {"type": "base64", "media_type": _PDF, "data": data}}
    else:
        raise invalid(
            f"Anthropic models do not read '{declared}' content; send a JPEG, PNG, GIF or WebP "
            "image, a PDF or a text/plain file.",
            param,
        )
    if isinstance(title, str) and title:
        block["title"] = title
    return block


def _split_data_url(url: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a base64 data URL, or None."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group(1), url[match.end() :]


def is_http(url: object) -> bool:
    return isinstance(url, str) and url[:8].lower().startswith(("http://", "https://"))


# --------------------------------------------------------------------------- messages


@dataclass(slots=True)
class _Turn:
    """One Anthropic message being built; `paths` names each block's source field."""

    role: str
    blocks: list[JSON] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def add(self, block: JSON, path: str) -> None:
        self.blocks.append(block)
        self.paths.append(path)

    def merge(self, other: _Turn) -> None:
        """Append `other`'s blocks; in a user turn tool results stay in front."""
        if self.role == "user" and any(b["type"] == "tool_result" for b in other.blocks):
            pairs = list(zip(self.blocks, self.paths, strict=True)) + list(
                zip(other.blocks, other.paths, strict=True)
            )
            pairs.sort(key=lambda p: p[0]["type"] != "tool_result")  # stable
            self.blocks = [b for b, _ in pairs]
            self.paths = [p for _, p in pairs]
        else:
            self.blocks.extend(other.blocks)
            self.paths.extend(other.paths)


class MessageBuilder:
    """Turns OpenAI messages into Anthropic `system` blocks and merged turns."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.system: list[JSON] = []
        self.turns: list[_Turn] = []
        self.tool_names: dict[str, None] = {}  # names called in the history, in order
        self._function_call_id: str | None = None  # legacy function_call awaiting its result

    def build(self, messages: list[JSON]) -> None:
        for i, msg in enumerate(messages):
            role = msg["role"]
            if role in ("system", "developer"):
                self.system.extend(_text_blocks(msg["content"]))
                continue
            if role == "assistant":
                turn = self._assistant(msg, i)
            elif role == "tool":
                turn = self._tool_result(msg["tool_call_id"], msg.get("content"), i)
            elif role == "function":
                turn = self._function_result(msg, i)
            else:
                turn = self._user(msg["content"], i)
            if not turn.blocks:
                continue
            if self.turns and self.turns[-1].role == turn.role:
                self.turns[-1].merge(turn)
            else:
                self.turns.append(turn)
        self._trim_prefill()
        self._renumber_reused_ids()
        self._check_tool_pairs()
        if not self.turns:
            raise invalid(
                "Anthropic models need at least one user or assistant message with content.",
                "messages",
            )

    # ---------------------------------------------------------------- per role

    def _user(self, content: object, i: int) -> _Turn:
        turn = _Turn("user")
        if isinstance(content, str):
            if has_text(content):
                turn.add({"type": "text", "text": content}, f"messages[{i}].content")
            return turn
        assert isinstance(content, list)
        for j, part in enumerate(content):
            path = f"messages[{i}].content[{j}]"
            kind = part.get("type")
            if kind == "text":
                if has_text(part["text"]):
                    turn.add({"type": "text", "text": part["text"]}, path)
            elif kind == "image_url":
                turn.add(self._image(part["image_url"]["url"], path + ".image_url.url"), path)
            elif kind == "file":
                turn.add(self._file(part["file"], path + ".file"), path)
            elif kind == "input_audio":
                raise invalid("Anthropic models do not accept audio input.", path + ".input_audio")
            else:
                raise invalid(f"Unsupported content part type '{kind}'.", path + ".type")
        return turn

    def _image(self, url: str, param: str) -> JSON:
        data_url = _split_data_url(url)
        if data_url is not None:
            return _media_block(data_url[0], data_url[1], param)
        media = self.ctx.media.get(url)
        if media is not None:
            encoded = base64.b64encode(media.data).decode("ascii")
            return _media_block(media.mime_type, encoded, param)
        if is_http(url):
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise invalid("Expected an http(s) URL or a base64 data URL.", param)

    def _file(self, file: JSON, param: str) -> JSON:
        if file.get("file_id") is not None:
            raise invalid(
                "File ids refer to OpenAI's Files API and cannot be sent to Anthropic models; "
                "send the file's content in 'file_data'.",
                param + ".file_id",
            )
        data = file.get("file_data")
        path = param + ".file_data"
        if not isinstance(data, str):
            raise invalid("Expected the file's content in 'file_data'.", path)
        title = file.get("filename")
        data_url = _split_data_url(data)
        if data_url is not None:
            return _media_block(data_url[0], data_url[1], path, title)
        return _media_block(_OCTET_STREAM, data, path, title)  # bare base64: sniffed

    def _assistant(self, msg: JSON, i: int) -> _Turn:
        turn = _Turn("assistant")
        content = msg.get("content")
        for block in _text_blocks(content):
            turn.add(block, f"messages[{i}].content")
        refusal = msg.get("refusal")
        if not turn.blocks and isinstance(refusal, str) and has_text(refusal):
            turn.add({"type": "text", "text": refusal}, f"messages[{i}].refusal")
        for j, call in enumerate(msg.get("tool_calls") or ()):
            path = f"messages[{i}].tool_calls[{j}]"
            if call.get("type") != "function":
                raise invalid("Anthropic models do not support custom tool calls.", path)
            fn = call["function"]
            block = self._tool_use(call["id"], fn["name"], fn["arguments"], path)
            turn.add(block, path + ".id")
        function_call = msg.get("function_call")
        if function_call is not None:
            path = f"messages[{i}].function_call"
            self._function_call_id = f"call_function_{i}"
            block = self._tool_use(
                self._function_call_id,
                function_call["name"],
                function_call["arguments"],
                path,
            )
            turn.add(block, path)
        return turn

    def _tool_use(self, call_id: str, name: str, arguments: str, path: str) -> JSON:
        args: object = {}
        if arguments.strip():
            try:
                args = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                raise invalid(
                    "The tool call's arguments are not valid JSON.", path + ".function.arguments"
                ) from None
            if not isinstance(args, dict):
                raise invalid(
                    "The tool call's arguments must be a JSON object.",
                    path + ".function.arguments",
                )
        self.tool_names[name] = None
        return {"type": "tool_use", "id": tool_id(call_id), "name": name, "input": args}

    def _tool_result(self, call_id: str, content: object, i: int) -> _Turn:
        block: JSON = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
        if isinstance(content, str):
            if has_text(content):
                block["content"] = content
        else:
            texts = _text_blocks(content)
            if texts:
                block["content"] = texts
        turn = _Turn("user")
        turn.add(block, f"messages[{i}].tool_call_id")
        return turn

    def _function_result(self, msg: JSON, i: int) -> _Turn:
        call_id = self._function_call_id
        if call_id is None:
            raise invalid(
                "A 'function' message must answer an assistant message's 'function_call'.",
                f"messages[{i}]",
            )
        self._function_call_id = None
        return self._tool_result(call_id, msg.get("content"), i)

    # ---------------------------------------------------------------- checks

    def _trim_prefill(self) -> None:
        """Cut trailing whitespace from a final assistant turn: Anthropic refuses it.

        The text stays non-empty, as blank text blocks are never added.
        """
        if self.turns and self.turns[-1].role == "assistant":
            last = self.turns[-1]
            block = last.blocks[-1]
            if block["type"] == "text":
                last.blocks[-1] = {"type": "text", "text": block["text"].rstrip()}

    def _renumber_reused_ids(self) -> None:
        """Give a tool-call id that an earlier assistant turn used a new, stable id.

        Clients that number calls per turn (call_0, call_1, ...) repeat ids across turns;
        Anthropic needs every tool_use id to be unique. The repeat in turn `k` becomes
        `tool_id(f"{id}#{k}")`, on the tool_use and on the results in the next turn, so
        the same history always gives the same ids. A repeat within one turn is left for
        `_check_tool_pairs` to refuse.
        """
        used: set[str] = set()
        for k, turn in enumerate(self.turns):
            if turn.role != "assistant":
                continue
            renamed: dict[str, str] = {}
            for block, _ in _blocks_of(turn, "tool_use"):
                old = block["id"]
                if old in used:
                    block["id"] = renamed.setdefault(old, tool_id(f"{old}#{k}"))
            used.update(b["id"] for b, _ in _blocks_of(turn, "tool_use"))
            after = self.turns[k + 1] if k + 1 < len(self.turns) else None
            if renamed and after is not None and after.role == "user":
                for block, _ in _blocks_of(after, "tool_result"):
                    block["tool_use_id"] = renamed.get(block["tool_use_id"], block["tool_use_id"])

    def _check_tool_pairs(self) -> None:
        """Every tool_use is answered in the next turn, every tool_result answers one."""
        seen: set[str] = set()
        for k, turn in enumerate(self.turns):
            if turn.role == "assistant":
                calls = list(_blocks_of(turn, "tool_use"))
                for block, path in calls:
                    if block["id"] in seen:
                        raise invalid(f"Duplicate tool call id '{block['id']}'.", path)
                    seen.add(block["id"])
                after = self.turns[k + 1] if k + 1 < len(self.turns) else None
                answered = {b["tool_use_id"] for b, _ in _blocks_of(after, "tool_result")}
                for block, path in calls:
                    if block["id"] not in answered:
                        raise invalid(
                            "An assistant message with 'tool_calls' must be followed by tool "
                            f"messages responding to each call; '{block['id']}' has none.",
                            path,
                        )
            else:
                before = self.turns[k - 1] if k > 0 else None
                called = {b["id"] for b, _ in _blocks_of(before, "tool_use")}
                answered_here: set[str] = set()
                for block, path in _blocks_of(turn, "tool_result"):
                    use_id = block["tool_use_id"]
                    if use_id not in called:
                        raise invalid(
                            "Messages with role 'tool' must answer a tool call of the "
                            "assistant message right before them.",
                            path,
                        )
                    if use_id in answered_here:
                        raise invalid(f"Duplicate result for tool call '{use_id}'.", path)
                    answered_here.add(use_id)

    def excludes_thinking(self) -> bool:
        """Whether the conversation cannot be sent with thinking on.

        True when it ends with an assistant turn (a prefill, which extended thinking does
        not allow) or when the last assistant turn called tools (Anthropic then wants
        that turn's signed thinking blocks, which OpenAI's format cannot carry).
        """
        for turn in reversed(self.turns):
            if turn.role == "assistant":
                return turn is self.turns[-1] or any(b["type"] == "tool_use" for b in turn.blocks)
        return False

    def messages(self) -> list[JSON]:
        return [{"role": t.role, "content": t.blocks} for t in self.turns]


def _blocks_of(turn: _Turn | None, kind: str) -> Iterator[tuple[JSON, str]]:
    if turn is not None:
        for block, path in zip(turn.blocks, turn.paths, strict=True):
            if block["type"] == kind:
                yield block, path
