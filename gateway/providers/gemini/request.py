"""The Gemini generateContent request for an OpenAI chat-completions body.

Every mapping decision, and what is dropped or refused, is listed in docs/providers.md.

Pure module: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.config import GeminiOptions
from gateway.errors import InvalidRequest
from gateway.providers.base import JSON, CallContext
from gateway.providers.gemini.contents import History
from gateway.providers.gemini.ids import SKIP_SIGNATURE
from gateway.providers.gemini.schema import clean_schema

MAX_CANDIDATES: Final = 8
_INT32_MAX: Final = 2**31 - 1
_MAX_PENALTY: Final = 1.999  # Gemini's penalties lie in [-2, 2): OpenAI's 2.0 is sent as this
_MIN_PRO_BUDGET: Final = 128  # Gemini 2.5 Pro cannot turn thinking off: its least budget
_MODEL_GENERATION = re.compile(r"gemini-(\d+)")

_THINKING_LEVELS: Final = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
    "max": "HIGH",
}
_THINKING_BUDGETS: Final = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}


# --------------------------------------------------------------------------- request: tools


def _declaration(fn: JSON, path: str) -> JSON:
    """A `functionDeclaration` from an OpenAI function definition."""
    name = fn["name"]
    if not (name[0].isalpha() or name[0] == "_"):
        raise InvalidRequest(
            "Gemini function names must start with a letter or an underscore.",
            param=path + ".name",
        )
    decl: JSON = {"name": name}
    description = fn.get("description")
    if description:
        decl["description"] = description
    params = fn.get("parameters")
    if params:
        root_type = params.get("type", "object")
        if root_type != "object":
            raise InvalidRequest(
                "Function parameters must be a JSON Schema of type 'object'.",
                param=path + ".parameters",
            )
        schema = clean_schema(params)
        decl["parametersJsonSchema"] = schema if "type" in schema else {"type": "object", **schema}
    return decl


def _declarations(body: JSON) -> list[JSON]:
    specs: list[tuple[JSON, str]] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != "function":
            raise InvalidRequest("Gemini supports only function tools.", param=f"tools[{i}].type")
        specs.append((tool["function"], f"tools[{i}].function"))
    specs.extend((fn, f"functions[{i}]") for i, fn in enumerate(body.get("functions") or ()))
    out: list[JSON] = []
    seen: set[str] = set()
    for fn, path in specs:
        if fn["name"] in seen:
            raise InvalidRequest(
                "Gemini refuses two functions with one name.", param=path + ".name"
            )
        seen.add(fn["name"])
        out.append(_declaration(fn, path))
    return out


def _tool_config(body: JSON, decls: list[JSON]) -> tuple[list[JSON], JSON | None]:
    """The declarations to send and the `functionCallingConfig`, from the tool choice."""
    choice = body.get("tool_choice")
    if choice is None:
        choice = body.get("function_call")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": choice}
    if choice is None:
        return decls, None
    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]
        return decls, {"mode": mode}
    kind = choice.get("type")
    if kind == "function":
        name = choice["function"]["name"]
        return decls, {"mode": "ANY", "allowedFunctionNames": [name]}
    if kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names = set()
        for k, ref in enumerate(allowed["tools"]):
            if ref.get("type") != "function":
                raise InvalidRequest(
                    "Gemini supports only function tools.",
                    param=f"tool_choice.allowed_tools.tools[{k}].type",
                )
            names.add(ref["function"]["name"])
        kept = [d for d in decls if d["name"] in names]
        if not kept and allowed["mode"] == "required":
            raise InvalidRequest(
                "'required' needs at least one allowed tool.",
                param="tool_choice.allowed_tools.tools",
            )
        return kept, {"mode": "ANY" if allowed["mode"] == "required" else "AUTO"}
    raise InvalidRequest("Gemini supports only function tools.", param="tool_choice.type")


# --------------------------------------------------------------------------- request: config


def _uses_thinking_levels(model: str) -> bool:
    """Gemini 3 and later take `thinkingLevel`; older models only `thinkingBudget`."""
    match = _MODEL_GENERATION.search(model)
    return match is not None and int(match.group(1)) >= 3


def _int32(value: int) -> int:
    """`value` folded into a signed 32-bit integer (identity inside that range)."""
    return (value + 2**31) % 2**32 - 2**31


def _max_output_tokens(ctx: CallContext) -> int | None:
    """The deployment's `max_output_tokens` cap, if set to a positive int32 (config checks it)."""
    cap = ctx.deployment.max_output_tokens
    if isinstance(cap, int) and not isinstance(cap, bool) and 0 < cap <= _INT32_MAX:
        return cap
    return None


def _generation_config(body: JSON, ctx: CallContext) -> JSON:
    config: JSON = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(src) is not None:
            config[dst] = body[src]
    top_k = body.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 0 < top_k <= _INT32_MAX:
            raise InvalidRequest("top_k must be a positive integer.", param="top_k")
        config["topK"] = top_k
    field = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    max_tokens = body.get(field)
    cap = _max_output_tokens(ctx)
    if cap is not None:
        max_tokens = cap if max_tokens is None else min(max_tokens, cap)
    if max_tokens is not None:
        if max_tokens > _INT32_MAX:
            raise InvalidRequest(f"{field} must be at most {_INT32_MAX} for Gemini.", param=field)
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    stops = [s for s in stops if s]
    if stops:
        config["stopSequences"] = stops
    n = body.get("n")
    if n is not None and n > 1:
        if n > MAX_CANDIDATES:
            raise InvalidRequest(
                f"Gemini returns at most {MAX_CANDIDATES} choices per request.", param="n"
            )
        config["candidateCount"] = n
    if body.get("seed") is not None:
        config["seed"] = _int32(body["seed"])
    for src, dst in (
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(src):
            config[dst] = min(body[src], _MAX_PENALTY)
    if body.get("logprobs"):
        config["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            config["logprobs"] = body["top_logprobs"]
    _response_format(body.get("response_format"), config)
    thinking = _thinking_config(body, ctx)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _response_format(fmt: JSON | None, config: JSON) -> None:
    if fmt is None or fmt.get("type") == "text":
        return
    config["responseMimeType"] = "application/json"
    if fmt.get("type") == "json_schema":
        schema = fmt["json_schema"].get("schema")
        if schema is not None:
            config["responseJsonSchema"] = clean_schema(schema)


def _thinking_config(body: JSON, ctx: CallContext) -> JSON:
    config: JSON = {}
    effort = body.get("reasoning_effort")
    if effort is not None:
        if _uses_thinking_levels(ctx.deployment.upstream_model):
            config["thinkingLevel"] = _THINKING_LEVELS[effort]
        else:
            budget = _THINKING_BUDGETS[effort]
            if budget == 0 and "2.5-pro" in ctx.deployment.upstream_model:
                budget = _MIN_PRO_BUDGET
            config["thinkingBudget"] = budget
    if ctx.deployment.options_of(GeminiOptions).reasoning_output:
        config["includeThoughts"] = True
    return config


def _refuse_unsupported(body: JSON) -> None:
    """Fields Gemini cannot honour: a 400 naming the field.

    Audio output needs `audio` (the validator requires it with modality "audio").
    """
    if body.get("audio") is not None:
        raise InvalidRequest("Audio output is not supported for Gemini models.", param="audio")


def _add_signature_sentinels(contents: list[JSON]) -> None:
    """Give the first call of each model Content the bypass sentinel if it has no signature.

    Gemini 3 checks the first functionCall part of every step (parallel calls carry a
    signature on the first only); later calls are left as they are.
    """
    for content in contents:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and "thoughtSignature" not in first:
            first["thoughtSignature"] = SKIP_SIGNATURE


def build_payload(body: JSON, ctx: CallContext) -> JSON:
    """The generateContent request body for a validated OpenAI request body."""
    _refuse_unsupported(body)
    history = History(ctx)
    for i, msg in enumerate(body["messages"]):
        history.add(msg, i)
    contents, system = history.finish()
    _add_signature_sentinels(contents)
    payload: JSON = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": system}
    decls, calling = _tool_config(body, _declarations(body))
    if decls:
        payload["tools"] = [{"functionDeclarations": decls}]
        if calling is not None:
            payload["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body, ctx)
    if config:
        payload["generationConfig"] = config
    return payload
