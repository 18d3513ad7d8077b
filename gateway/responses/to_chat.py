"""A Responses API request as a chat completions request: the bridge to every provider.

Providers translate chat completions (OpenAI-compatible servers, Anthropic, Gemini, the
mock); a Responses request reaches them as the chat body this module makes, and from
there goes through the same pure translation as any chat request.

The mapping:
- `instructions` -> a first `system` message; `input` as a string -> one user message.
- message items -> messages of their role; `input_text` -> `text` parts,
  `input_image` -> `image_url` parts (detail `original` as `high`), `input_file` ->
  `file` parts (`file_url` as the part's URL, fetched when a provider needs bytes).
- an assistant's output messages and `function_call` items next to each other ->
  one assistant message (text, refusal, `tool_calls`); `function_call_output` -> a
  `tool` message. `reasoning` items are dropped: no chat upstream can take them back.
- function tools, `tool_choice`, `parallel_tool_calls`, `text.format` ->
  `response_format`, `text.verbosity`, `max_output_tokens` ->
  `max_completion_tokens`, `temperature`, `top_p`, `reasoning.effort` ->
  `reasoning_effort`, `user`, `safety_identifier`, `prompt_cache_key`,
  `service_tier`, `stream`. `metadata` and `store` stay with the gateway.

What chat completions cannot express (built-in tools such as `web_search`, their call
items, stored `prompt`s, images in a system message or in a function's output,
`top_logprobs`) is not dropped silently: it becomes `refusal`, a 400 naming the field,
raised for a deployment that does not speak the Responses API natively. Settings the
bridge does not carry (`include`, `truncation`, `max_tool_calls`) are ignored.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRequest
from gateway.responses.validate import item_type

JSON = dict[str, Any]

_COPIED = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "models",
)
_DETAIL = {"original": "high"}


@dataclass(slots=True)
class Bridge:
    """A Responses request as chat completions: the body, and what it cannot carry."""

    body: JSON
    media: dict[str, str] = field(default_factory=dict)  # URL -> the field that holds it
    refusal: InvalidRequest | None = None  # why a chat-only upstream cannot take it


class _Refused(Exception):
    def __init__(self, error: InvalidRequest) -> None:
        self.error = error


def _unsupported(path: str, what: str) -> _Refused:
    return _Refused(
        InvalidRequest(
            f"Invalid value for '{path}': {what} cannot be sent to the upstream this model "
            "routes to: only an upstream that speaks the Responses API natively takes it.",
            param=path,
        )
    )


class _Builder:
    __slots__ = ("assistant", "media", "messages", "refusal")

    def __init__(self) -> None:
        self.messages: list[JSON] = []
        self.assistant: JSON | None = None  # the assistant message items are merged into
        self.media: dict[str, str] = {}
        self.refusal: InvalidRequest | None = None

    def refuse(self, refused: _Refused) -> None:
        if self.refusal is None:
            self.refusal = refused.error

    def add(self, message: JSON) -> None:
        self.assistant = None
        self.messages.append(message)

    def assistant_message(self) -> JSON:
        if self.assistant is None:
            self.assistant = {"role": "assistant", "content": None}
            self.messages.append(self.assistant)
        return self.assistant

    # ------------------------------------------------------------------ items

    def item(self, item: JSON, path: str) -> None:
        kind = item_type(item)
        if kind == "message":
            if item.get("role") == "assistant":
                self._assistant_text(item.get("content"))
            else:
                self.add({"role": item["role"], "content": self._parts(item, path)})
        elif kind == "function_call":
            message = self.assistant_message()
            message.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
        elif kind == "function_call_output":
            self.add(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": self._output(item["output"], path + ".output"),
                }
            )
        elif kind == "reasoning":
            return  # a chat upstream cannot take reasoning back
        else:
            raise _unsupported(path + ".type", f"an item of type '{kind}'")

    def _assistant_text(self, content: object) -> None:
        message = self.assistant_message()
        texts: list[str] = []
        refusals: list[str] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "refusal":
                    refusals.append(part["refusal"])
                else:
                    texts.append(part["text"])
        if texts:
            before = message.get("content")
            message["content"] = "\n".join([before, *texts] if before else texts)
        if refusals:
            message["refusal"] = "\n".join(refusals)

    def _parts(self, item: JSON, path: str) -> str | list[JSON]:
        content = item["content"]
        if isinstance(content, str):
            return content
        text_only = item["role"] in ("system", "developer")
        parts: list[JSON] = []
        for j, part in enumerate(content):
            where = f"{path}.content[{j}]"
            kind = part["type"]
            if kind == "input_text":
                parts.append({"type": "text", "text": part["text"]})
            elif text_only:
                raise _unsupported(where, f"a '{kind}' part in a {item['role']} message")
            elif kind == "input_image":
                parts.append(self._image(part, where))
            else:
                parts.append(self._file(part, where))
        return parts

    def _image(self, part: JSON, path: str) -> JSON:
        url = part.get("image_url")
        if url is None:
            raise _unsupported(path + ".file_id", "an image given by file id")
        if url.startswith(("http://", "https://")):
            self.media.setdefault(url, path + ".image_url")
        image: JSON = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            image["detail"] = _DETAIL.get(detail, detail)
        return {"type": "image_url", "image_url": image}

    def _file(self, part: JSON, path: str) -> JSON:
        file: JSON = {}
        url = part.get("file_url")
        if part.get("file_data") is not None:
            file["file_data"] = part["file_data"]
        elif part.get("file_id") is not None:
            file["file_id"] = part["file_id"]
        elif url:
            file["file_data"] = url
            self.media.setdefault(url, path + ".file_url")
        if part.get("filename") is not None:
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}

    def _output(self, output: object, path: str) -> str | list[JSON]:
        if isinstance(output, str):
            return output
        parts: list[JSON] = []
        for j, part in enumerate(output if isinstance(output, list) else ()):
            if part.get("type") != "input_text":
                raise _unsupported(
                    f"{path}[{j}]", f"a '{part.get('type')}' part in a function's output"
                )
            parts.append({"type": "text", "text": part["text"]})
        return parts


# --------------------------------------------------------------------------- tools


def _tool(tool: JSON, path: str) -> JSON:
    if tool.get("type") != "function":
        raise _unsupported(path + ".type", f"the built-in tool '{tool.get('type')}'")
    fn: JSON = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    return {"type": "function", "function": fn}


def _tool_choice(choice: object) -> object:
    if isinstance(choice, str):
        return choice
    assert isinstance(choice, dict)
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools":
        refs = []
        for i, ref in enumerate(choice["tools"]):
            if ref.get("type") != "function":
                path = f"tool_choice.tools[{i}].type"
                raise _unsupported(path, f"the built-in tool '{ref.get('type')}'")
            refs.append({"type": "function", "function": {"name": ref["name"]}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice["mode"], "tools": refs}}
    raise _unsupported("tool_choice.type", f"the tool choice '{kind}'")


def _response_format(fmt: JSON) -> JSON | None:
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        return None
    spec: JSON = {"name": fmt["name"], "schema": fmt["schema"]}
    for key in ("description", "strict"):
        if fmt.get(key) is not None:
            spec[key] = fmt[key]
    return {"type": "json_schema", "json_schema": spec}


# --------------------------------------------------------------------------- entry


def to_chat(request: JSON, items: Sequence[tuple[JSON, str]]) -> Bridge:
    """The chat completions body for a validated Responses request whose input is
    `items` (each with the field path that names it), history first."""
    builder = _Builder()
    instructions = request.get("instructions")
    if instructions:
        builder.add({"role": "system", "content": instructions})
    for item, path in items:
        try:
            builder.item(item, path)
        except _Refused as e:
            builder.refuse(e)
    body: JSON = {"model": request["model"], "messages": builder.messages}
    if request.get("stream") is True:
        body["stream"] = True
    for key in _COPIED:
        if request.get(key) is not None:
            body[key] = request[key]
    if request.get("max_output_tokens") is not None:
        body["max_completion_tokens"] = request["max_output_tokens"]
    reasoning = request.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        body["reasoning_effort"] = reasoning["effort"]
    text = request.get("text")
    if isinstance(text, dict):
        fmt = text.get("format")
        response_format = _response_format(fmt) if isinstance(fmt, dict) else None
        if response_format is not None:
            body["response_format"] = response_format
        if text.get("verbosity") is not None:
            body["verbosity"] = text["verbosity"]
    try:
        tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(request.get("tools") or ())]
        if tools:
            body["tools"] = tools
        if request.get("tool_choice") is not None:
            body["tool_choice"] = _tool_choice(request["tool_choice"])
        if request.get("prompt") is not None:
            raise _unsupported("prompt", "a stored prompt")
        if request.get("top_logprobs"):
            raise _unsupported("top_logprobs", "log probabilities")
    except _Refused as e:
        builder.refuse(e)
        body.pop("tools", None)
        body.pop("tool_choice", None)
    if not builder.messages and builder.refusal is None:
        raise InvalidRequest(
            "Invalid value for 'input': it holds no message the model could answer.",
            param="input",
        )
    return Bridge(body, builder.media, builder.refusal)
