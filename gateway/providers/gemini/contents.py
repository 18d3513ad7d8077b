"""OpenAI messages -> Gemini `contents` and `systemInstruction` (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Final

import orjson

from gateway.config import GeminiOptions
from gateway.errors import InvalidRequest
from gateway.providers.base import JSON, CallContext
from gateway.providers.common import sniff_media_type
from gateway.providers.gemini.ids import decode_call_id

_DATA_URL = re.compile(r"data:([^;,]+)((?:;[^;,]*)*?);base64,", re.IGNORECASE)
_FILES_API = re.compile(r"https://generativelanguage\.googleapis\.com/[^?#]*/files/[^/?#]+")
_HTTP = ("http://", "https://")

_AUDIO_MIME: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}
# What Gemini reads inline (its documented image, document, audio, video and text types).
_INLINE_MIME: Final = frozenset(
    (
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "application/json",
        "application/xml",
        "application/rtf",
        "application/x-javascript",
        "application/x-typescript",
        "application/x-python-code",
    )
)
_INLINE_FAMILIES: Final = frozenset(("audio", "video", "text"))
# Declared types whose bytes are checked: an image or PDF goes with the type its bytes
# show (Gemini refuses a mismatch, and clients often label a PNG as JPEG).
_SNIFFED_FAMILIES: Final = frozenset(("image",))
_SNIFFED_MIME: Final = frozenset(("application/pdf", "application/octet-stream"))
# Of those, the types with an unambiguous signature: bytes matching none are refused.
_SIGNED_MIME: Final = frozenset(
    ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")
)
_SNIFF_B64_CHARS: Final = 24  # 18 bytes: enough for every signature above
_MIME_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_EXTENSION_MIME: Final = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "html": "text/html",
    "htm": "text/html",
    "xml": "text/xml",
    "json": "application/json",
    "rtf": "text/rtf",
    "py": "text/x-python",
    "js": "text/javascript",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "aiff": "audio/aiff",
    "mp4": "video/mp4",
    "mpeg": "video/mpeg",
    "mov": "video/mov",
    "webm": "video/webm",
}


# --------------------------------------------------------------------------- request: messages


@dataclass(slots=True)
class _Call:
    """A tool call of the latest model turn, waiting for its result."""

    key: str | None  # the client's tool_call id; None for a legacy function_call
    name: str
    gemini_id: str | None
    path: str  # where the call is, for errors: messages[3].tool_calls[1]
    answered: bool = False


@dataclass(slots=True)
class _Turn:
    """One Content being built; results are kept apart to be put in call order."""

    role: str
    parts: list[JSON] = field(default_factory=list)
    results: list[tuple[int, JSON]] = field(default_factory=list)  # (call ordinal, part)

    def content(self) -> JSON:
        parts = [part for _, part in sorted(self.results, key=lambda r: r[0])] + self.parts
        if self.role == "user" and not self.results and not any("text" in p for p in parts):
            parts.append({"text": " "})  # E17: media alone is refused where a text is required
        return {"role": self.role, "parts": parts}


class History:
    """Turns OpenAI messages into Gemini `contents` and `systemInstruction` parts."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.system: list[JSON] = []
        self.turns: list[_Turn] = []
        self.calls: list[_Call] = []  # calls of the latest model turn

    def add(self, msg: JSON, i: int) -> None:
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            self.system.extend({"text": t} for t in _texts(content) if t)
        elif role == "user":
            self._append("user", _user_parts(content, f"messages[{i}].content", self.ctx))
        elif role == "assistant":
            self._assistant(msg, i)
        elif role == "tool":
            self._result(msg.get("tool_call_id"), None, content, i)
        elif role == "function":
            self._result(None, msg.get("name"), content, i)

    def finish(self) -> tuple[list[JSON], list[JSON]]:
        """The contents and system parts; refuses calls left without a result."""
        self._check_answered()
        if not self.turns:
            raise InvalidRequest(
                "Gemini needs at least one user or assistant message with content.",
                param="messages",
            )
        return [turn.content() for turn in self.turns], self.system

    def _append(self, role: str, parts: list[JSON]) -> _Turn | None:
        """Add parts to the last turn if it has this role, else open a new turn.

        Opening a model turn first checks that every call of the previous one was
        answered, then forgets those calls.
        """
        if not parts:
            return None
        last = self.turns[-1] if self.turns else None
        if last is not None and last.role == role:
            last.parts.extend(parts)
            return last
        if role == "model":
            self._check_answered()
            self.calls = []
        turn = _Turn(role, list(parts))
        self.turns.append(turn)
        return turn

    def _check_answered(self) -> None:
        for call in self.calls:
            if not call.answered:
                raise InvalidRequest(
                    f"The tool call '{call.key or call.name}' has no tool message answering it.",
                    param=call.path + (".id" if call.key is not None else ".name"),
                )

    def _assistant(self, msg: JSON, i: int) -> None:
        parts: list[JSON] = [{"text": t} for t in _texts(msg.get("content")) if t]
        new_calls: list[_Call] = []
        tool_calls = msg.get("tool_calls") or []
        for k, call in enumerate(tool_calls):
            path = f"messages[{i}].tool_calls[{k}]"
            if call.get("type") != "function":
                raise InvalidRequest(
                    "Gemini supports only function tool calls.", param=path + ".type"
                )
            fn = call["function"]
            gemini_id, signature = decode_call_id(call["id"])
            part = _function_call(fn, gemini_id, signature, path + ".function")
            parts.append(part)
            new_calls.append(_Call(call["id"], fn["name"], gemini_id, path))
        legacy = msg.get("function_call")
        if legacy is not None:
            parts.append(_function_call(legacy, None, None, f"messages[{i}].function_call"))
            new_calls.append(_Call(None, legacy["name"], None, f"messages[{i}].function_call"))
        turn = self._append("model", parts)
        if not new_calls:
            return
        if turn is self.turns[0]:
            raise InvalidRequest(
                "Gemini needs a user message before the first assistant tool call.",
                param=f"messages[{i}].tool_calls" if tool_calls else f"messages[{i}].function_call",
            )
        self.calls.extend(new_calls)  # merged assistant messages answer as one turn

    def _result(self, call_id: object, name: object, content: object, i: int) -> None:
        """A tool (call_id) or legacy function (name) result for the latest model turn."""
        ordinal, call = self._match(call_id, name)
        if call is None:
            param = f"messages[{i}].tool_call_id" if call_id is not None else f"messages[{i}].name"
            raise InvalidRequest(
                "This tool message does not answer a tool call of the preceding assistant message.",
                param=param,
            )
        if call.answered:  # only by id: a legacy result matches unanswered calls only
            raise InvalidRequest(
                f"The tool call '{call.key}' is answered twice.",
                param=f"messages[{i}].tool_call_id",
            )
        call.answered = True
        response: JSON = {"name": call.name, "response": {"output": _tool_output(content)}}
        if call.gemini_id is not None:
            response["id"] = call.gemini_id
        part = {"functionResponse": response}
        last = self.turns[-1] if self.turns else None
        if last is None or last.role != "user":
            last = _Turn("user")
            self.turns.append(last)
        last.results.append((ordinal, part))

    def _match(self, call_id: object, name: object) -> tuple[int, _Call | None]:
        """The pending call a result answers (by id; by name for legacy functions)."""
        for ordinal, call in enumerate(self.calls):
            if call_id is not None and call.key == call_id:
                return ordinal, call
        if call_id is None:
            for ordinal, call in enumerate(self.calls):
                if call.key is None and call.name == name and not call.answered:
                    return ordinal, call
        return -1, None


def _texts(content: object) -> list[str]:
    """The text of a string or of text (and refusal) parts; other parts are not text."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    out = []
    for part in content:
        if part.get("type") == "text":
            out.append(part["text"])
        elif part.get("type") == "refusal":
            out.append(part["refusal"])
    return out


def _function_call(fn: JSON, gemini_id: str | None, signature: str | None, path: str) -> JSON:
    """A `functionCall` part from an OpenAI call `{name, arguments}`."""
    arguments = fn.get("arguments") or ""
    if not arguments.strip():
        args: object = {}
    else:
        try:
            args = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "The tool call arguments are not valid JSON.", param=path + ".arguments"
            ) from None
    if not isinstance(args, dict):
        raise InvalidRequest(
            "Gemini needs tool call arguments that are a JSON object.", param=path + ".arguments"
        )
    call: JSON = {"name": fn["name"], "args": args}
    if gemini_id is not None:
        call["id"] = gemini_id
    part: JSON = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _tool_output(content: object) -> object:
    """A tool result's value: JSON objects and arrays parsed, anything else as text."""
    text = "".join(_texts(content))
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, dict | list):
            return value
    return text


def _sniff_b64(data: str) -> str | None:
    """`_sniff` of the first bytes of base64 `data` (standard or url-safe alphabet)."""
    head = data[:_SNIFF_B64_CHARS].replace("-", "+").replace("_", "/")
    try:
        raw = binascii.a2b_base64(head[: len(head) - len(head) % 4])
    except (binascii.Error, ValueError):
        return None
    return sniff_media_type(raw)


def _inline(mime: str, data: str, path: str) -> JSON:
    """An `inlineData` part, refusing what Gemini cannot read (a 400 naming the part).

    Images and PDFs go with the type their bytes show, whatever they were declared as.
    """
    mime = mime.partition(";")[0].strip().lower()
    mime = _MIME_ALIASES.get(mime, mime)
    if not data:
        raise InvalidRequest("The media data is empty.", param=path)
    if mime.partition("/")[0] in _SNIFFED_FAMILIES or mime in _SNIFFED_MIME:
        actual = _sniff_b64(data)
        if actual is not None:
            mime = actual
        elif mime in _SIGNED_MIME:
            raise InvalidRequest(
                f"The data is not what its type '{mime}' says: its bytes are not a PNG, JPEG, "
                "GIF, WebP, HEIC or HEIF image nor a PDF.",
                param=path,
            )
    if mime not in _INLINE_MIME and mime.partition("/")[0] not in _INLINE_FAMILIES:
        raise InvalidRequest(f"Gemini does not accept media of type '{mime}'.", param=path)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _user_parts(content: object, path: str, ctx: CallContext) -> list[JSON]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[JSON] = []
    for j, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type")
        where = f"{path}[{j}]"
        if kind == "text":
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_url_part(part["image_url"]["url"], where + ".image_url.url", ctx))
        elif kind == "input_audio":
            audio = part["input_audio"]
            mime = _AUDIO_MIME[audio["format"]]
            parts.append(_inline(mime, audio["data"], where + ".input_audio.data"))
        elif kind == "file":
            parts.append(_file_part(part["file"], where + ".file", ctx))
    return parts


def _url_part(url: str, path: str, ctx: CallContext, mime: str | None = None) -> JSON:
    """A data, Files-API, gs:// or http(s) URL as an `inlineData` / `fileData` part."""
    match = _DATA_URL.match(url)
    if match is not None:
        return _inline(match.group(1), url[match.end() :], path)
    if url.startswith("gs://") or _FILES_API.fullmatch(url) is not None:
        file_data: JSON = {"fileUri": url}
        if mime is not None:
            file_data["mimeType"] = mime
        return {"fileData": file_data}
    if url[:8].lower().startswith(_HTTP):
        if not ctx.deployment.options_of(GeminiOptions).fetch_media:
            raise InvalidRequest(
                "Gemini needs the bytes of media given by URL, and fetching them is off "
                "for this model: send a base64 data URL instead.",
                param=path,
            )
        media = ctx.media.get(url)
        if media is None:
            raise InvalidRequest("The media at this URL could not be fetched.", param=path)
        return _inline(mime or media.mime_type, base64.b64encode(media.data).decode(), path)
    raise InvalidRequest("Expected a data URL or an http(s) URL.", param=path)


def _file_part(file: JSON, path: str, ctx: CallContext) -> JSON:
    """`file` content: file_data (data URL, URL or raw base64) or a Files-API file_id."""
    mime = _EXTENSION_MIME.get(str(file.get("filename") or "").rpartition(".")[2].lower())
    data = file.get("file_data")
    if isinstance(data, str):
        where = path + ".file_data"
        if data[:5].lower() == "data:" or data[:8].lower().startswith(_HTTP) or data[:5] == "gs://":
            return _url_part(data, where, ctx, mime)
        if mime is None:
            mime = _sniff_b64(data)
        if mime is None:
            raise InvalidRequest(
                "The file's type is unknown: send file_data as a data URL "
                "(data:<mime>;base64,...) or give a filename with an extension.",
                param=where,
            )
        return _inline(mime, data, where)
    file_id = file.get("file_id")
    if isinstance(file_id, str) and (
        file_id.startswith("gs://") or _FILES_API.fullmatch(file_id) is not None
    ):
        return _url_part(file_id, path + ".file_id", ctx, mime)
    raise InvalidRequest(
        "OpenAI file ids cannot be used with Gemini: send file_data, or a Gemini "
        "Files-API or gs:// URI as file_id.",
        param=path + ".file_id",
    )


def media_url(part: JSON) -> str | None:
    """The http(s) URL a content part needs fetched, if any (Files-API URIs excepted)."""
    kind = part.get("type")
    if kind == "image_url":
        url = part["image_url"]["url"]
    elif kind == "file":
        url = part["file"].get("file_data")
    else:
        return None
    if (
        isinstance(url, str)
        and url[:8].lower().startswith(_HTTP)
        and _FILES_API.fullmatch(url) is None
    ):
        return url
    return None
