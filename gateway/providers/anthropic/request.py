"""The Anthropic Messages request for an OpenAI chat-completions body.

The request is rebuilt from scratch (Anthropic rejects unknown fields); every mapping
decision, and what is dropped or refused, is listed in docs/providers.md.

Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import AnthropicOptions
from gateway.providers.anthropic.messages import MessageBuilder, has_text, invalid, is_http
from gateway.providers.base import JSON, CallContext

JSON_TOOL: Final = "json_tool_call"  # response_format emulation, object schema
JSON_VALUE_TOOL: Final = "json_tool_call_value"  # the same, schema wrapped in {"value": ...}
RESERVED_TOOLS: Final = frozenset((JSON_TOOL, JSON_VALUE_TOOL))

THINKING_BUDGETS: Final[Mapping[str, int]] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 4096,
    "high": 8192,
    "xhigh": 16384,
    "max": 32768,
}
_MIN_THINKING_BUDGET: Final = 1024

_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE: Final = re.compile(r"\+?[0-9 ().-]{7,}")
_MAX_USER_ID: Final = 256
_EMPTY_OBJECT_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}
_JSON_OBJECT_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {},
    "additionalProperties": True,
}
_JSON_TOOL_DESCRIPTION: Final = (
    "Give your final answer by calling this tool: its input is the JSON response."
)


# --------------------------------------------------------------------------- tools


@dataclass(slots=True)
class _ToolPlan:
    tools: list[JSON]
    choice: JSON | None


def _function_tool(spec: JSON, param: str, strict: bool) -> JSON:
    name = spec["name"]
    if name in RESERVED_TOOLS:
        raise invalid(
            f"The tool name '{name}' is reserved by the gateway for response_format.",
            param + ".name",
        )
    schema = spec.get("parameters")
    if schema is None:
        schema = dict(_EMPTY_OBJECT_SCHEMA)
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    elif schema["type"] != "object":
        raise invalid("A function's parameters must be a JSON Schema of type 'object'.", param)
    tool: JSON = {"name": name, "input_schema": schema}
    description = spec.get("description")
    if isinstance(description, str) and description:
        tool["description"] = description
    if strict and spec.get("strict") is True:
        tool["strict"] = True
    return tool


def _client_tools(body: JSON, native: bool) -> list[JSON]:
    """The client's function tools (or legacy functions) as Anthropic tools."""
    tools = body.get("tools")
    specs: list[tuple[JSON, str]] = []
    if tools:
        for i, tool in enumerate(tools):
            if tool["type"] != "function":
                raise invalid("Anthropic models do not support custom tools.", f"tools[{i}]")
            specs.append((tool["function"], f"tools[{i}].function"))
    else:
        specs = [(fn, f"functions[{i}]") for i, fn in enumerate(body.get("functions") or ())]
    out: list[JSON] = []
    names: set[str] = set()
    for spec, param in specs:
        tool = _function_tool(spec, param, native)
        if tool["name"] in names:
            raise invalid(f"Tool names must be unique: '{tool['name']}' repeats.", param + ".name")
        names.add(tool["name"])
        out.append(tool)
    return out


def _tool_choice(body: JSON, tools: list[JSON]) -> tuple[JSON | None, list[JSON]]:
    """The Anthropic tool_choice for the client's choice, and the tools it leaves offered."""
    choice = body.get("tool_choice")
    if choice is None and not body.get("tools"):
        choice = _legacy_choice(body.get("function_call"))
    if choice is None:
        return None, tools
    if isinstance(choice, str):
        return {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}, tools
    kind = choice["type"]
    if kind == "function":
        return {"type": "tool", "name": choice["function"]["name"]}, tools
    if kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names = {ref[ref["type"]]["name"] for ref in allowed["tools"]}
        kept = [t for t in tools if t["name"] in names]
        if not kept and allowed["mode"] == "required":
            raise invalid(
                "'required' needs at least one allowed tool among 'tools'.",
                "tool_choice.allowed_tools.tools",
            )
        return {"type": "any" if allowed["mode"] == "required" else "auto"}, kept
    raise invalid("Anthropic models do not support custom tools.", "tool_choice")


def _legacy_choice(function_call: object) -> object:
    if isinstance(function_call, str):
        return function_call
    if isinstance(function_call, dict):
        return {"type": "function", "function": {"name": function_call["name"]}}
    return None


def _response_tool(fmt: JSON) -> JSON:
    """The forced tool that emulates `response_format` (D4)."""
    description = _JSON_TOOL_DESCRIPTION
    schema: Any = None
    if fmt["type"] == "json_schema":
        spec = fmt["json_schema"]
        schema = spec.get("schema")
        if isinstance(spec.get("description"), str) and spec["description"]:
            description = spec["description"] + " " + description
    if schema is None:
        schema = dict(_JSON_OBJECT_SCHEMA)
        return {"name": JSON_TOOL, "description": description, "input_schema": schema}
    if schema.get("type") == "object":
        return {"name": JSON_TOOL, "description": description, "input_schema": schema}
    inner = dict(schema)
    wrapper: JSON = {"type": "object"}
    for key in ("$defs", "definitions"):  # references stay valid from the new root
        if key in inner:
            wrapper[key] = inner.pop(key)
    inner.pop("$schema", None)
    wrapper["properties"] = {"value": inner}
    wrapper["required"] = ["value"]
    return {"name": JSON_VALUE_TOOL, "description": description, "input_schema": wrapper}


def _plan_tools(
    body: JSON, builder: MessageBuilder, thinking: bool, native: bool
) -> tuple[_ToolPlan, JSON | None]:
    """Tools and tool_choice for the request, and the native output format if any."""
    tools = _client_tools(body, native)
    choice, tools = _tool_choice(body, tools)
    if not tools:
        choice = None  # Anthropic refuses a tool_choice without tools
    if not tools and builder.tool_names:
        # Anthropic refuses tool blocks in a history without tool definitions.
        tools = [
            {"name": n, "input_schema": dict(_EMPTY_OBJECT_SCHEMA)} for n in builder.tool_names
        ]
        choice = {"type": "none"}
    output_format = None
    fmt = body.get("response_format")
    if fmt is not None and fmt["type"] != "text":
        schema = fmt["json_schema"].get("schema") if fmt["type"] == "json_schema" else None
        if native and schema is not None:
            output_format = {"type": "json_schema", "schema": schema}
        else:
            choice, tools = _with_response_tool(fmt, choice, tools)
    if choice is not None and thinking and choice["type"] in ("any", "tool"):
        choice = {**choice, "type": "auto"}  # forced tool use and thinking exclude (E13)
        choice.pop("name", None)
    if body.get("parallel_tool_calls") is False and tools:
        if choice is None:
            choice = {"type": "auto"}
        if choice["type"] != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
    return _ToolPlan(tools, choice), output_format


def _json_tool_beside_stubs(body: JSON, builder: MessageBuilder, native: bool) -> bool:
    """Whether the JSON tool would be offered beside stubs of tools only the history names.

    The client declared no tools, so any tool call but the JSON answer breaks its
    contract. Only a forced JSON tool guarantees that, and thinking cannot be combined
    with a forced tool (E13): in this case thinking is left off.
    """
    if body.get("tools") or body.get("functions") or not builder.tool_names:
        return False
    fmt = body.get("response_format")
    if fmt is None or fmt["type"] == "text":
        return False
    schema = fmt["json_schema"].get("schema") if fmt["type"] == "json_schema" else None
    return not (native and schema is not None)


def _with_response_tool(
    fmt: JSON, choice: JSON | None, tools: list[JSON]
) -> tuple[JSON, list[JSON]]:
    """Add the response_format tool (D4) and the choice that makes the model use it.

    Without usable client tools the JSON tool is forced; with them (auto or
    required) the model must call some tool: a real one, or the JSON answer. A
    named choice stays as it is.
    """
    json_tool = _response_tool(fmt)
    forced = {"type": "tool", "name": json_tool["name"]}
    if choice is None:
        choice = {"type": "any"} if tools else forced
    elif choice["type"] == "auto":
        choice = {"type": "any"}
    elif choice["type"] == "none":
        choice = forced
    return choice, [*tools, json_tool]


# --------------------------------------------------------------------------- sampling


def _max_tokens(body: JSON) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            return int(value)
    return None


def _thinking_plan(
    body: JSON, client_max: int | None, default: int, cap: int | None, allowed: bool
) -> tuple[JSON | None, int]:
    """The thinking block (or None) and the max_tokens that goes with it.

    `cap` (the model's output limit) bounds max_tokens, budget included: the budget
    shrinks to fit (leaving `default` tokens for the answer when the client set no
    maximum), and thinking is left off when less than the 1024 minimum remains.
    """
    max_tokens = client_max if client_max is not None else default
    if cap is not None:
        max_tokens = min(max_tokens, cap)
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None or not allowed:
        return None, max_tokens
    if client_max is None:
        with_budget = budget + default if cap is None else min(budget + default, cap)
        budget = min(budget, with_budget - default)
    else:
        with_budget = max_tokens
        budget = min(budget, with_budget - 1)
    if budget < _MIN_THINKING_BUDGET:
        return None, max_tokens
    return {"type": "enabled", "budget_tokens": budget}, with_budget


def _sampling(body: JSON, out: JSON, thinking: bool) -> None:
    """temperature, top_p, top_k and stop_sequences into `out`."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise invalid("Expected 'top_k' to be a positive integer.", "top_k")
    if thinking:
        temperature = top_k = None
        if top_p is not None and not 0.95 <= top_p <= 1:
            top_p = None
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)
        top_p = None  # E12: newer models refuse both
    if top_p is not None:
        out["top_p"] = top_p
    if top_k is not None:
        out["top_k"] = top_k
    stop = body.get("stop")
    if stop is not None:
        sequences = [s for s in ([stop] if isinstance(stop, str) else stop) if has_text(s)]
        if sequences:
            out["stop_sequences"] = sequences


def _refuse_unsupported(body: JSON) -> None:
    n = body.get("n")
    if n is not None and n > 1:
        raise invalid("Anthropic models return one choice: 'n' must be 1.", "n")
    if body.get("logprobs") is True:
        raise invalid("Anthropic models do not return log probabilities.", "logprobs")
    if "audio" in (body.get("modalities") or ()):
        raise invalid("Anthropic models do not produce audio.", "modalities")


def _looks_like_phone(value: str) -> bool:
    """A phone number as people write it: 7+ digits with a leading + or separators.

    A bare run of digits is kept: it is far more often a database id.
    """
    if _PHONE.fullmatch(value) is None or sum(c.isdigit() for c in value) < 7:
        return False
    return value.startswith("+") or any(c in " ().-" for c in value)


def _user_id(body: JSON) -> str | None:
    """An opaque end-user id for `metadata.user_id`; never an email address or phone number."""
    for key in ("safety_identifier", "user"):
        value = body.get(key)
        if (
            isinstance(value, str)
            and value.strip()
            and len(value) <= _MAX_USER_ID
            and _EMAIL.search(value) is None
            and not _looks_like_phone(value)
        ):
            return value
    return None


# --------------------------------------------------------------------------- request


def translate_request(body: JSON, ctx: CallContext) -> JSON:
    """The Anthropic Messages body for a validated OpenAI chat-completions body.

    Raises InvalidRequest (with `param`) for what Anthropic cannot express.
    """
    _refuse_unsupported(body)
    options = ctx.deployment.options_of(AnthropicOptions)
    native = options.structured_output == "native"
    default = options.default_max_tokens

    builder = MessageBuilder(ctx)
    builder.build(body["messages"])
    thinking, max_tokens = _thinking_plan(
        body,
        _max_tokens(body),
        default,
        ctx.deployment.max_output_tokens,
        not builder.excludes_thinking() and not _json_tool_beside_stubs(body, builder, native),
    )
    tools, output_format = _plan_tools(body, builder, thinking is not None, native)

    out: JSON = {
        "model": ctx.deployment.upstream_model,
        "max_tokens": max_tokens,
        "messages": builder.messages(),
    }
    if builder.system:
        out["system"] = builder.system
    if tools.tools:
        out["tools"] = tools.tools
    if tools.choice is not None:
        out["tool_choice"] = tools.choice
    if thinking is not None:
        out["thinking"] = thinking
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    _sampling(body, out, thinking is not None)
    user_id = _user_id(body)
    if user_id is not None:
        out["metadata"] = {"user_id": user_id}
    if body.get("service_tier") == "auto":
        out["service_tier"] = "auto"
    if ctx.stream:
        out["stream"] = True
    return out


def image_urls(body: JSON) -> Iterator[str]:
    for msg in body["messages"]:
        content = msg.get("content")
        if msg["role"] == "user" and isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if is_http(url):
                        yield url
