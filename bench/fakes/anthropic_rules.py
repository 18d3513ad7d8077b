"""The request checks of the Anthropic Messages API, as a pure function.

`check_request(body)` raises `VendorRefusal` for what ``POST /v1/messages`` refuses,
with the API's status, error type and (where known from public reports) its message
wording: pydantic-style ``path: problem`` messages such as
``max_tokens: Field required`` or ``tools.0.custom.name: String should match pattern``.
It is as strict as the real API so that the gateway's translator is held to it; where
the real behaviour is not documented the stricter reading is taken and said so below.

What is checked (docs/wire-formats.md B1-B3, D):

- top level: only the API's fields ("Extra inputs are not permitted"); ``model`` a
  non-empty string; ``max_tokens`` an integer >= 1; ``messages`` a non-empty array;
  ``temperature`` and ``top_p`` within 0..1 and never both; ``top_k`` >= 0;
  ``stop_sequences`` strings with non-whitespace; ``metadata`` only ``user_id``;
  ``stream`` a boolean; ``service_tier``; ``system`` a string or text blocks. Null is
  refused where the API's type is not optional (all but ``cache_control``,
  ``container`` and ``inference_geo``): a translator must leave absent what it lacks.
- messages: roles ``user``/``assistant`` only (``system`` with the API's hint); content
  a string or a block list, non-empty except in a final assistant turn; block types
  and their fields per B3, with images and documents in user turns, ``tool_use`` and
  thinking blocks in assistant turns, ``tool_result`` in user turns; text blocks
  non-empty and not whitespace-only; a final assistant turn not ending in whitespace.
- images: base64 sources with an allowed media type, raw base64 (no ``data:`` prefix)
  whose bytes are an image of the declared type; or http(s) URL sources. Documents:
  base64 PDF (bytes start with ``%PDF-``), plain-text, content and URL sources.
- tool pairing: ``tool_use`` ids well-formed and unique; every ``tool_use`` answered by
  a ``tool_result`` at the start of the very next message (a user turn), all of them
  in that one message; no ``tool_result`` for an id the previous message did not use;
  no id answered twice. With thinking on, an assistant turn answered by the final tool
  results must start with a thinking block (the API's rule for the tool-use loop).
- tools: custom tools only, names ``^[a-zA-Z0-9_-]{1,128}$`` and unique,
  ``input_schema`` a valid draft 2020-12 JSON Schema with ``type: "object"``.
  ``tool_choice``: ``auto``/``any`` (with ``disable_parallel_tool_use``), ``tool``
  naming a defined tool, ``none``; not given without tools (except ``none``).
- ``thinking``: ``enabled`` with ``budget_tokens`` >= 1024 and < ``max_tokens``,
  ``adaptive``, ``disabled``; with thinking on, no forced tool use (``any``/``tool``),
  ``temperature`` only 1, ``top_p`` only 0.95..1, no ``top_k``.
- ``output_config``: ``effort`` from the API's enum and ``format`` of type
  ``json_schema`` with a valid JSON Schema.

Pure module: no I/O (jsonschema is used only to check that schemas are schemas).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = ["ERROR_TYPES", "VendorRefusal", "check_request", "error_type_for"]

# HTTP status -> Anthropic error.type (docs/wire-formats.md B6).
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_TOP_LEVEL: Final = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "service_tier",
        "cache_control",
        "container",
        "inference_geo",
    }
)
_NULLABLE_TOP_LEVEL: Final = frozenset({"cache_control", "container", "inference_geo"})
_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_EFFORTS: Final = ("low", "medium", "high", "xhigh", "max")
_ID_PATTERN: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_MIN_THINKING_BUDGET: Final = 1024
_FORCED_CHOICES: Final = frozenset({"any", "tool"})
_BLOCK_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "document": frozenset({"type", "source", "title", "context", "citations", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
_USER_BLOCKS: Final = frozenset({"text", "image", "document", "tool_result"})
_ASSISTANT_BLOCKS: Final = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_TOOL_RESULT_BLOCKS: Final = frozenset({"text", "image", "document"})
# Leading bytes of each allowed image type (WebP: "RIFF" .... "WEBP").
_IMAGE_MAGIC: Final[tuple[tuple[str, Callable[[bytes], bool]], ...]] = (
    ("image/png", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("image/jpeg", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("image/gif", lambda b: b.startswith((b"GIF87a", b"GIF89a"))),
    ("image/webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
)


class VendorRefusal(Exception):
    """An error answer in Anthropic's shape: HTTP `status` and the JSON `body`.

    `body` is ``{"type": "error", "error": {"type", "message"}, "request_id"}``; the
    server replaces the placeholder request id with the one it answers with.
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        *,
        request_id: str = "req_fake",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type or error_type_for(status)
        self.message = message
        self.body: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.error_type, "message": message},
            "request_id": request_id,
        }


def error_type_for(status: int) -> str:
    """Anthropic's error.type for an HTTP status: B6's table, else by class."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def _invalid(message: str) -> VendorRefusal:
    return VendorRefusal(400, message, "invalid_request_error")


def _at(path: str, problem: str) -> VendorRefusal:
    """A 400 worded like the API's validation errors: ``path: problem``."""
    return _invalid(f"{path}: {problem}" if path else problem)


# -- small type checks ------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _at(path, "Input should be a valid string")
    return value


def _require_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _at(path, "Input should be a valid dictionary")
    return value


def _require_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _at(path, "Input should be a valid list")
    return value


def _require_bool(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _at(path, "Input should be a valid boolean")


def _no_extra(obj: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Refuse the first key outside `allowed`, like the API's pydantic models."""
    known = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
    for key in obj:
        if key not in known:
            raise _at(f"{path}.{key}" if path else key, "Extra inputs are not permitted")


def _require_fields(obj: Mapping[str, Any], fields: Iterable[str], path: str) -> None:
    for name in fields:
        if name not in obj:
            raise _at(f"{path}.{name}" if path else name, "Field required")


def _tag(obj: dict[str, Any], path: str, tags: Iterable[str]) -> str:
    """The discriminator ``type`` of a tagged union member, checked against `tags`."""
    expected = tuple(tags)
    if "type" not in obj:
        raise _at(path, "Unable to extract tag using discriminator 'type'")
    tag = obj["type"]
    if not isinstance(tag, str) or tag not in expected:
        names = ", ".join(f"'{t}'" for t in expected)
        raise _at(
            path,
            f"Input tag '{tag}' found using 'type' does not match any of the expected tags: "
            f"{names}",
        )
    return tag


def _check_cache_control(value: Any, path: str) -> None:
    """``{type: "ephemeral", ttl?: "5m" | "1h"}`` or null."""
    if value is None:
        return
    obj = _require_dict(value, path)
    _no_extra(obj, ("type", "ttl"), path)
    if obj.get("type") != "ephemeral":
        raise _at(f"{path}.type", "Input should be 'ephemeral'")
    if "ttl" in obj and obj["ttl"] not in ("5m", "1h"):
        raise _at(f"{path}.ttl", "Input should be '5m' or '1h'")


@functools.lru_cache(maxsize=256)
def _schema_error(serialized: bytes) -> str | None:
    """Why a JSON Schema (as canonical JSON) is not a valid draft 2020-12 schema."""
    try:
        Draft202012Validator.check_schema(orjson.loads(serialized))
    except SchemaError as exc:
        return str(exc.message)
    return None


def _check_json_schema(schema: Any, path: str) -> None:
    serialized = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if _schema_error(serialized) is not None:
        raise _at(
            path,
            "JSON schema is invalid. It must match JSON Schema draft 2020-12 "
            "(https://json-schema.org/draft/2020-12).",
        )


# -- the request --------------------------------------------------------------------


def check_request(body: dict[str, Any]) -> None:
    """Raise `VendorRefusal` for a ``POST /v1/messages`` body the API would refuse.

    Checks fields first in the order the API reports them, then the cross-field rules.
    Headers (``x-api-key``, ``anthropic-version``) are the server's business.
    """
    if not isinstance(body, dict):
        raise _invalid("Input should be a valid dictionary")
    _no_extra(body, _TOP_LEVEL, "")
    _require_fields(body, ("model", "max_tokens", "messages"), "")
    for name, value in body.items():
        if value is None and name not in _NULLABLE_TOP_LEVEL:
            raise _at(name, "Input should not be null")
    model = _require_str(body["model"], "model")
    if not model:
        raise _at("model", "String should have at least 1 character")
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens):
        raise _at("max_tokens", "Input should be a valid integer")
    if max_tokens < 1:
        raise _at("max_tokens", "Input should be greater than or equal to 1")
    tool_names = _check_tools(body.get("tools"))
    thinking_on = _check_thinking(body.get("thinking"), max_tokens)
    _check_sampling(body, thinking_on)
    _check_simple_fields(body)
    _check_tool_choice(body.get("tool_choice"), tool_names, thinking_on)
    _check_output_config(body.get("output_config"))
    _check_system(body.get("system"))
    _check_messages(body["messages"], thinking_on)


def _check_simple_fields(body: Mapping[str, Any]) -> None:
    """``stream``, ``stop_sequences``, ``metadata``, ``service_tier`` and the rest."""
    if "stream" in body:
        _require_bool(body["stream"], "stream")
    if "stop_sequences" in body:
        for index, sequence in enumerate(_require_list(body["stop_sequences"], "stop_sequences")):
            _require_str(sequence, f"stop_sequences.{index}")
            if not sequence.strip():
                raise _at("stop_sequences", "each stop sequence must contain non-whitespace")
    if "metadata" in body:
        metadata = _require_dict(body["metadata"], "metadata")
        _no_extra(metadata, ("user_id",), "metadata")
        user_id = metadata.get("user_id")
        if user_id is not None:
            _require_str(user_id, "metadata.user_id")
    if "service_tier" in body and body["service_tier"] not in ("auto", "standard_only"):
        raise _at("service_tier", "Input should be 'auto' or 'standard_only'")
    _check_cache_control(body.get("cache_control"), "cache_control")
    for name in ("container", "inference_geo"):
        if body.get(name) is not None:
            _require_str(body[name], name)


def _check_sampling(body: Mapping[str, Any], thinking_on: bool) -> None:
    """Ranges of temperature/top_p/top_k, their exclusions, and thinking's limits."""
    for name in ("temperature", "top_p"):
        if name in body:
            value = body[name]
            if not _is_number(value):
                raise _at(name, "Input should be a valid number")
            if value < 0:
                raise _at(name, "Input should be greater than or equal to 0")
            if value > 1:
                raise _at(name, "Input should be less than or equal to 1")
    if "top_k" in body:
        if not _is_int(body["top_k"]):
            raise _at("top_k", "Input should be a valid integer")
        if body["top_k"] < 0:
            raise _at("top_k", "Input should be greater than or equal to 0")
    if "temperature" in body and "top_p" in body:
        raise _invalid(
            "`temperature` and `top_p` cannot both be specified for this model. "
            "Please use only one."
        )
    if not thinking_on:
        return
    if "temperature" in body and body["temperature"] != 1:
        raise _invalid("`temperature` may only be set to 1 when thinking is enabled.")
    if "top_p" in body and body["top_p"] < 0.95:
        raise _invalid("`top_p` must be between 0.95 and 1 when thinking is enabled.")
    if "top_k" in body:
        raise _invalid("`top_k` may not be set when thinking is enabled.")


def _check_thinking(value: Any, max_tokens: int) -> bool:
    """Check ``thinking``; return whether thinking is on (enabled or adaptive)."""
    if value is None:
        return False
    thinking = _require_dict(value, "thinking")
    kind = _tag(thinking, "thinking", ("enabled", "disabled", "adaptive"))
    path = f"thinking.{kind}"
    if kind == "disabled":
        _no_extra(thinking, ("type",), path)
        return False
    _no_extra(
        thinking,
        ("type", "budget_tokens", "display") if kind == "enabled" else ("type", "display"),
        path,
    )
    display = thinking.get("display")
    if display is not None and display not in ("summarized", "omitted"):
        raise _at(f"{path}.display", "Input should be 'summarized' or 'omitted'")
    if kind == "adaptive":
        return True
    _require_fields(thinking, ("budget_tokens",), path)
    budget = thinking["budget_tokens"]
    if not _is_int(budget):
        raise _at(f"{path}.budget_tokens", "Input should be a valid integer")
    if budget < _MIN_THINKING_BUDGET:
        raise _at(
            f"{path}.budget_tokens",
            f"Input should be greater than or equal to {_MIN_THINKING_BUDGET}",
        )
    if max_tokens <= budget:
        raise _invalid(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/"
            "extended-thinking#max-tokens-and-context-window-size"
        )
    return True


def _check_tools(value: Any) -> list[str]:
    """Check ``tools``; return the tool names in order."""
    if value is None:
        return []
    names: list[str] = []
    for index, item in enumerate(_require_list(value, "tools")):
        path = f"tools.{index}"
        tool = _require_dict(item, path)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            raise _at(
                path,
                f"Input tag '{kind}' found using 'type' does not match any of the expected "
                "tags: 'custom' (server tools are not supported by this fake)",
            )
        path = f"{path}.custom"
        _no_extra(
            tool,
            (
                "type",
                "name",
                "description",
                "input_schema",
                "cache_control",
                "strict",
                "input_examples",
            ),
            path,
        )
        _require_fields(tool, ("name", "input_schema"), path)
        name = _require_str(tool["name"], f"{path}.name")
        if not _TOOL_NAME_PATTERN.match(name):
            raise _at(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
        if "description" in tool:
            _require_str(tool["description"], f"{path}.description")
        if "strict" in tool:
            _require_bool(tool["strict"], f"{path}.strict")
        if "input_examples" in tool:
            for n, example in enumerate(
                _require_list(tool["input_examples"], f"{path}.input_examples")
            ):
                _require_dict(example, f"{path}.input_examples.{n}")
        _check_cache_control(tool.get("cache_control"), f"{path}.cache_control")
        schema = _require_dict(tool["input_schema"], f"{path}.input_schema")
        if "type" not in schema:
            raise _at(f"{path}.input_schema.type", "Field required")
        if schema["type"] != "object":
            raise _at(f"{path}.input_schema.type", "Input should be 'object'")
        _check_json_schema(schema, f"{path}.input_schema")
        names.append(name)
    if len(set(names)) != len(names):
        raise _at("tools", "Tool names must be unique.")
    return names


def _check_tool_choice(value: Any, tool_names: list[str], thinking_on: bool) -> None:
    if value is None:
        return
    choice = _require_dict(value, "tool_choice")
    kind = _tag(choice, "tool_choice", ("auto", "any", "tool", "none"))
    path = f"tool_choice.{kind}"
    if kind == "none":
        _no_extra(choice, ("type",), path)
        return
    allowed = ("type", "disable_parallel_tool_use") + (("name",) if kind == "tool" else ())
    _no_extra(choice, allowed, path)
    if "disable_parallel_tool_use" in choice:
        _require_bool(choice["disable_parallel_tool_use"], f"{path}.disable_parallel_tool_use")
    if kind == "tool":
        _require_fields(choice, ("name",), path)
        name = _require_str(choice["name"], f"{path}.name")
        if tool_names and name not in tool_names:
            raise _invalid(f"tool_choice.name: tool `{name}` is not one of the provided `tools`.")
    if not tool_names:
        raise _invalid("tool_choice may only be specified while providing tools.")
    if thinking_on and kind in _FORCED_CHOICES:
        raise _invalid("Thinking may not be enabled when tool_choice forces tool use.")


def _check_output_config(value: Any) -> None:
    if value is None:
        return
    config = _require_dict(value, "output_config")
    _no_extra(config, ("effort", "format"), "output_config")
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        names = ", ".join(f"'{e}'" for e in _EFFORTS)
        raise _at("output_config.effort", f"Input should be {names}")
    fmt = config.get("format")
    if fmt is None:
        return
    fmt = _require_dict(fmt, "output_config.format")
    _tag(fmt, "output_config.format", ("json_schema",))
    _no_extra(fmt, ("type", "schema"), "output_config.format")
    _require_fields(fmt, ("schema",), "output_config.format")
    schema = _require_dict(fmt["schema"], "output_config.format.schema")
    _check_json_schema(schema, "output_config.format.schema")


def _check_system(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    for index, item in enumerate(_require_list(value, "system")):
        path = f"system.{index}"
        block = _require_dict(item, path)
        _tag(block, path, ("text",))
        _check_text_block(block, path, where="system")


# -- messages and blocks ----------------------------------------------------------------


def _check_messages(value: Any, thinking_on: bool) -> None:
    """Per-message checks, then the tool_use/tool_result pairing across messages."""
    messages = _require_list(value, "messages")
    if not messages:
        raise _at("messages", "at least one message is required")
    last = len(messages) - 1
    normalized: list[tuple[str, list[dict[str, Any]]]] = []
    for index, item in enumerate(messages):
        role, blocks = _check_message(item, index, final=index == last)
        normalized.append((role, blocks))
    _check_tool_pairing(normalized)
    if thinking_on:
        _check_thinking_in_tool_loop(normalized)


def _check_message(item: Any, index: int, *, final: bool) -> tuple[str, list[dict[str, Any]]]:
    """Check one message; return its role and its content as a block list."""
    path = f"messages.{index}"
    message = _require_dict(item, path)
    _no_extra(message, ("role", "content"), path)
    _require_fields(message, ("role", "content"), path)
    role = message["role"]
    if role == "system":
        raise _at(
            "messages",
            'Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.',
        )
    if role not in ("user", "assistant"):
        raise _at(f"{path}.role", "Input should be 'user' or 'assistant'")
    content = message["content"]
    prefill = final and role == "assistant"
    if isinstance(content, str):  # shorthand for one text block; "" is no content at all
        blocks = [{"type": "text", "text": content}] if content else []
    else:
        blocks = _require_list(content, f"{path}.content")
    if not blocks and not prefill:
        raise _at(
            path,
            "all messages must have non-empty content except for the optional final "
            "assistant message",
        )
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    for position, raw in enumerate(blocks):
        _check_block(raw, f"{path}.content.{position}", role, allowed)
    if prefill and blocks:
        tail = blocks[-1]
        if tail.get("type") == "text" and tail["text"] != tail["text"].rstrip():
            raise _at("messages", "final assistant content cannot end with trailing whitespace")
    return role, blocks


def _check_block(raw: Any, path: str, role: str, allowed: frozenset[str]) -> None:
    block = _require_dict(raw, path)
    kind = _tag(block, path, _BLOCK_FIELDS)
    if kind not in allowed:
        raise _invalid(f"{path}: `{kind}` blocks are not allowed in `{role}` messages")
    _no_extra(block, _BLOCK_FIELDS[kind], f"{path}.{kind}")
    _check_cache_control(block.get("cache_control"), f"{path}.{kind}.cache_control")
    _BLOCK_CHECKS[kind](block, f"{path}.{kind}")


def _check_text_block(block: dict[str, Any], path: str, *, where: str = "messages") -> None:
    _require_fields(block, ("text",), path)
    text = _require_str(block["text"], f"{path}.text")
    if not text:
        raise _at(where, "text content blocks must be non-empty")
    if not text.strip():
        raise _at(where, "text content blocks must contain non-whitespace text")
    citations = block.get("citations")
    if citations is not None:
        _require_list(citations, f"{path}.citations")


def _decode_base64(data: Any, path: str) -> bytes:
    """Raw base64 bytes: a ``data:`` URL or non-base64 text is refused."""
    text = _require_str(data, f"{path}.data")
    if text.startswith("data:"):
        raise _at(
            f"{path}.data",
            "base64 data must not include a `data:` URL prefix; send the raw base64 "
            "string and the type in `media_type`",
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _at(f"{path}.data", "invalid base64 data") from None


def _check_url(source: dict[str, Any], path: str) -> None:
    _no_extra(source, ("type", "url"), path)
    _require_fields(source, ("url",), path)
    url = _require_str(source["url"], f"{path}.url")
    if not url.startswith(("https://", "http://")):
        raise _at(f"{path}.url", "URL must use the http or https scheme")


def _check_image_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("source",), path)
    source_path = f"{path}.source"
    source = _require_dict(block["source"], source_path)
    kind = _tag(source, source_path, ("base64", "url"))
    source_path = f"{source_path}.{kind}"
    if kind == "url":
        _check_url(source, source_path)
        return
    _no_extra(source, ("type", "media_type", "data"), source_path)
    _require_fields(source, ("media_type", "data"), source_path)
    media_type = source["media_type"]
    if media_type not in _IMAGE_TYPES:
        raise _at(
            f"{source_path}.media_type",
            "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
        )
    data = _decode_base64(source["data"], source_path)
    actual = next((name for name, test in _IMAGE_MAGIC if test(data)), None)
    if actual is None:
        raise _invalid(f"{path}: Could not process image")
    if actual != media_type:
        raise _invalid(
            f"{path}: The image was specified using the {media_type} media type, but the "
            f"image appears to be a {actual} image"
        )


def _check_document_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("source",), path)
    for name in ("title", "context"):
        if block.get(name) is not None:
            _require_str(block[name], f"{path}.{name}")
    source_path = f"{path}.source"
    source = _require_dict(block["source"], source_path)
    kind = _tag(source, source_path, ("base64", "text", "content", "url"))
    source_path = f"{source_path}.{kind}"
    if kind == "url":
        _check_url(source, source_path)
    elif kind == "content":
        _no_extra(source, ("type", "content"), source_path)
        _require_fields(source, ("content",), source_path)
        content = source["content"]
        if not isinstance(content, str):
            for n, item in enumerate(_require_list(content, f"{source_path}.content")):
                _check_block(
                    item, f"{source_path}.content.{n}", "user", frozenset({"text", "image"})
                )
    else:
        _no_extra(source, ("type", "media_type", "data"), source_path)
        _require_fields(source, ("media_type", "data"), source_path)
        expected = "application/pdf" if kind == "base64" else "text/plain"
        if source["media_type"] != expected:
            raise _at(f"{source_path}.media_type", f"Input should be '{expected}'")
        if kind == "text":
            _require_str(source["data"], f"{source_path}.data")
        elif not _decode_base64(source["data"], source_path).startswith(b"%PDF-"):
            raise _invalid(f"{path}: The PDF specified was not valid.")


def _check_tool_use_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("id", "name", "input"), path)
    tool_id = _require_str(block["id"], f"{path}.id")
    if not _ID_PATTERN.match(tool_id):
        raise _at(f"{path}.id", "String should match pattern '^[a-zA-Z0-9_-]+$'")
    name = _require_str(block["name"], f"{path}.name")
    if not _TOOL_NAME_PATTERN.match(name):
        raise _at(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
    _require_dict(block["input"], f"{path}.input")


def _check_tool_result_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("tool_use_id",), path)
    tool_id = _require_str(block["tool_use_id"], f"{path}.tool_use_id")
    if not _ID_PATTERN.match(tool_id):
        raise _at(f"{path}.tool_use_id", "String should match pattern '^[a-zA-Z0-9_-]+$'")
    if "is_error" in block:
        _require_bool(block["is_error"], f"{path}.is_error")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    for n, item in enumerate(_require_list(content, f"{path}.content")):
        _check_block(item, f"{path}.content.{n}", "user", _TOOL_RESULT_BLOCKS)


def _check_thinking_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("thinking", "signature"), path)
    _require_str(block["thinking"], f"{path}.thinking")
    _require_str(block["signature"], f"{path}.signature")


def _check_redacted_thinking_block(block: dict[str, Any], path: str) -> None:
    _require_fields(block, ("data",), path)
    _require_str(block["data"], f"{path}.data")


_BLOCK_CHECKS: Final[Mapping[str, Callable[[dict[str, Any], str], None]]] = {
    "text": _check_text_block,
    "image": _check_image_block,
    "document": _check_document_block,
    "tool_use": _check_tool_use_block,
    "tool_result": _check_tool_result_block,
    "thinking": _check_thinking_block,
    "redacted_thinking": _check_redacted_thinking_block,
}


def _check_tool_pairing(messages: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Every tool_use answered at the start of the very next message, once; no strays."""
    seen_ids: set[str] = set()
    pending: list[str] = []  # tool_use ids of the previous message
    for index, (role, blocks) in enumerate(messages):
        results = _leading_results(blocks)
        missing = [tool_id for tool_id in pending if tool_id not in results]
        if missing:
            raise _invalid(
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` "
                f"blocks immediately after: {', '.join(missing)}. Each `tool_use` block must "
                "have a corresponding `tool_result` block in the next message."
            )
        answered: set[str] = set()
        for position, block in enumerate(blocks):
            if block.get("type") != "tool_result":
                continue
            tool_id = block["tool_use_id"]
            if tool_id not in pending:
                raise _invalid(
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {tool_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if tool_id in answered:
                raise _invalid(
                    f"messages.{index}.content.{position}: each tool_use must have a single "
                    f"result. Found multiple `tool_result` blocks with id: {tool_id}"
                )
            answered.add(tool_id)
        pending = []
        if role != "assistant":
            continue
        for position, block in enumerate(blocks):
            if block.get("type") != "tool_use":
                continue
            if block["id"] in seen_ids:
                raise _invalid(
                    f"messages.{index}.content.{position}: `tool_use` ids must be unique"
                )
            seen_ids.add(block["id"])
            pending.append(block["id"])
    if pending:
        raise _invalid(
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(pending)}. Each `tool_use` block must have "
            "a corresponding `tool_result` block in the next message."
        )


def _leading_results(blocks: list[dict[str, Any]]) -> set[str]:
    """The ids of the tool_result blocks that open a message (before any other block)."""
    ids: set[str] = set()
    for block in blocks:
        if block.get("type") != "tool_result":
            break
        ids.add(block["tool_use_id"])
    return ids


def _check_thinking_in_tool_loop(messages: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """With thinking on, the assistant turn the final tool results answer opens with thinking.

    The API needs the model's earlier thinking to continue a tool-use loop; a client that
    cannot replay it must turn thinking off for that request.
    """
    if len(messages) < 2:
        return
    (role, blocks), (last_role, last_blocks) = messages[-2], messages[-1]
    if role != "assistant" or last_role != "user" or not _leading_results(last_blocks):
        return
    first = blocks[0].get("type") if blocks else None
    if first in ("thinking", "redacted_thinking"):
        return
    raise _invalid(
        f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
        f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
        "`assistant` message must start with a thinking block (preceding the lastmost set of "
        "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
        "previous turns. To avoid this requirement, disable `thinking`."
    )
