"""Pure checks of Chat Completions answers: each returns the precise `Violation`s.

- `check_error` — an error body: ``{"error": {"message", "type", "param", "code"}}``,
  all four keys, message and type strings, param and code string or null (A7);
- `check_completion` — a non-streamed answer's exact shape and types (A5): object,
  id, created, model, one choice per requested `n` with index, message (role,
  content, refusal; tool calls as `{id, type: "function", function: {name,
  arguments: string}}`), logprobs and finish_reason, and usage (`check_usage`);
- what an answer *says*, on an `Answer` assembled from either form (`answer_of` here,
  `bench.contract.sse.check_stream` for a stream): tool calls name declared tools with
  arguments valid against their parameters and obey `tool_choice` (`check_tools`);
  strict `json_schema` content validates (`check_structured`); `max_tokens` bounds
  `completion_tokens` (`check_max_tokens`); two answers agree (`compare_answers`).

Facts from OpenAI's OpenAPI document (CreateChatCompletionResponse, CompletionUsage,
Error). One rule is stricter than the schema's `required` list, as the issue asks and
as OpenAI always answers: usage is present, with both detail objects.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import jsonschema
import orjson

__all__ = [
    "FINISH_REASONS",
    "Answer",
    "Call",
    "Choice",
    "Violation",
    "answer_of",
    "check_completion",
    "check_error",
    "check_max_tokens",
    "check_structured",
    "check_tools",
    "check_usage",
    "compare_answers",
    "expected_choices",
    "is_int",
    "json_type",
]

FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
_USAGE_DETAILS = {
    "prompt_tokens_details": ("cached_tokens", "audio_tokens", "text_tokens", "image_tokens"),
    "completion_tokens_details": (
        "reasoning_tokens",
        "audio_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
        "text_tokens",
    ),
}


@dataclass(frozen=True)
class Violation:
    """One departure from the contract: `rule` (a short stable id), where, and what."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}" if self.where else self.message


def is_int(value: Any) -> TypeGuard[int]:
    """A JSON integer (never a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    """The JSON type name of `value`, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_int(value):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Checker:
    """Collects violations of one rule family while walking a document."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.found: list[Violation] = []

    def fail(self, where: str, message: str, rule: str | None = None) -> None:
        self.found.append(Violation(rule or self.rule, where, message))

    def want(self, obj: Mapping[str, Any], key: str, where: str, *types: str) -> Any:
        """`obj[key]`, failing when it is absent or of none of the JSON `types`."""
        path = f"{where}.{key}" if where else key
        if key not in obj:
            self.fail(path, "missing")
            return None
        value = obj[key]
        if json_type(value) not in types and not ("number" in types and is_int(value)):
            self.fail(path, f"expected {' or '.join(types)}, got {json_type(value)}")
        return value


# --------------------------------------------------------------------------- errors


def check_error(body: Any, where: str = "") -> list[Violation]:
    """An OpenAI error body (A7): `{"error": {message, type, param, code}}`."""
    c = _Checker("error.shape")
    if not isinstance(body, dict):
        c.fail(where or "body", f"expected an object with 'error', got {json_type(body)}")
        return c.found
    error = c.want(body, "error", where, "object")
    if isinstance(error, dict):
        at = f"{where}.error" if where else "error"
        c.want(error, "message", at, "string")
        c.want(error, "type", at, "string")
        c.want(error, "param", at, "string", "null")
        c.want(error, "code", at, "string", "null")
    return c.found


# --------------------------------------------------------------------------- completions


def expected_choices(request: Mapping[str, Any]) -> int:
    """How many choices the request asks for (`n`, default 1)."""
    n = request.get("n")
    return n if is_int(n) and n > 0 else 1


def check_usage(usage: Any, where: str = "usage") -> list[Violation]:
    """CompletionUsage: three non-negative integers, total = prompt + completion, and
    both detail objects with integer fields."""
    c = _Checker("usage")
    if not isinstance(usage, dict):
        c.fail(where, f"expected an object, got {json_type(usage)}")
        return c.found
    counts = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = c.want(usage, key, where, "integer")
        if is_int(value):
            counts[key] = value
            if value < 0:
                c.fail(f"{where}.{key}", f"negative: {value}")
    if len(counts) == 3 and counts["total_tokens"] != (
        counts["prompt_tokens"] + counts["completion_tokens"]
    ):
        c.fail(
            f"{where}.total_tokens",
            f"{counts['total_tokens']} != prompt_tokens + completion_tokens "
            f"({counts['prompt_tokens']} + {counts['completion_tokens']})",
        )
    for key, fields in _USAGE_DETAILS.items():
        details = c.want(usage, key, where, "object")
        if isinstance(details, dict):
            for name in fields:
                if name in details and not is_int(details[name]):
                    c.fail(f"{where}.{key}.{name}", f"expected integer, got {details[name]!r}")
    return c.found


def _check_tool_call(c: _Checker, call: Any, where: str) -> None:
    if not isinstance(call, dict):
        c.fail(where, f"expected an object, got {json_type(call)}")
        return
    call_id = c.want(call, "id", where, "string")
    if call_id == "":
        c.fail(f"{where}.id", "empty")
    kind = c.want(call, "type", where, "string")
    if isinstance(kind, str) and kind != "function":
        c.fail(f"{where}.type", f"expected 'function', got {kind!r}")
    function = c.want(call, "function", where, "object")
    if isinstance(function, dict):
        name = c.want(function, "name", f"{where}.function", "string")
        if name == "":
            c.fail(f"{where}.function.name", "empty")
        c.want(function, "arguments", f"{where}.function", "string")


def _check_message(c: _Checker, message: Any, where: str) -> None:
    if not isinstance(message, dict):
        c.fail(where, f"expected an object, got {json_type(message)}")
        return
    role = c.want(message, "role", where, "string")
    if isinstance(role, str) and role != "assistant":
        c.fail(f"{where}.role", f"expected 'assistant', got {role!r}")
    c.want(message, "content", where, "string", "null")
    c.want(message, "refusal", where, "string", "null")
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            c.fail(f"{where}.tool_calls", f"expected array, got {json_type(calls)}")
        else:
            for k, call in enumerate(calls):
                _check_tool_call(c, call, f"{where}.tool_calls[{k}]")


def check_completion(body: Any, request: Mapping[str, Any]) -> list[Violation]:
    """The exact shape and types of a non-streamed answer to `request` (A5)."""
    c = _Checker("completion.shape")
    if not isinstance(body, dict):
        c.fail("body", f"expected an object, got {json_type(body)}")
        return c.found
    obj = c.want(body, "object", "", "string")
    if isinstance(obj, str) and obj != "chat.completion":
        c.fail("object", f"expected 'chat.completion', got {obj!r}")
    if c.want(body, "id", "", "string") == "":
        c.fail("id", "empty")
    created = c.want(body, "created", "", "integer")
    if is_int(created) and created <= 0:
        c.fail("created", f"not a Unix time: {created}")
    if c.want(body, "model", "", "string") == "":
        c.fail("model", "empty")
    for key in ("system_fingerprint",):
        if key in body and not isinstance(body[key], str | None):
            c.fail(key, f"expected string or null, got {json_type(body[key])}")
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        c.fail("service_tier", f"not one of {', '.join(SERVICE_TIERS)}: {tier!r}")
    choices = c.want(body, "choices", "", "array")
    if isinstance(choices, list):
        want = expected_choices(request)
        if len(choices) != want:
            c.fail("choices", f"{len(choices)} choices for n={want}", "completion.choices")
        seen: set[int] = set()
        for i, choice in enumerate(choices):
            where = f"choices[{i}]"
            if not isinstance(choice, dict):
                c.fail(where, f"expected an object, got {json_type(choice)}")
                continue
            index = c.want(choice, "index", where, "integer")
            if is_int(index):
                if index in seen or not 0 <= index < want:
                    c.fail(f"{where}.index", f"{index} repeated or outside 0..{want - 1}")
                seen.add(index)
            _check_message(c, c.want(choice, "message", where, "object"), f"{where}.message")
            if "logprobs" not in choice:
                c.fail(f"{where}.logprobs", "missing (null when not asked)")
            elif not isinstance(choice["logprobs"], dict | None):
                c.fail(f"{where}.logprobs", f"expected object or null, got {choice['logprobs']!r}")
            reason = c.want(choice, "finish_reason", where, "string")
            if isinstance(reason, str) and reason not in FINISH_REASONS:
                c.fail(f"{where}.finish_reason", f"not one of {', '.join(FINISH_REASONS)}")
            message = choice.get("message")
            if (
                reason == "tool_calls"
                and isinstance(message, dict)
                and not message.get("tool_calls")
            ):
                c.fail(f"{where}.finish_reason", "'tool_calls' but the message has no tool calls")
    if "usage" not in body:
        c.fail("usage", "missing", "usage")
    else:
        c.found += check_usage(body["usage"])
    return c.found


# --------------------------------------------------------------------------- answers


@dataclass
class Call:
    """One tool call as a client assembles it."""

    id: str | None
    name: str | None
    arguments: str


@dataclass
class Choice:
    """One choice as a client assembles it, from a completion or a stream."""

    index: int
    content: str | None = None
    refusal: str | None = None
    calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Answer:
    """What an answer says: its choices by index, and its usage if it had one."""

    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None


def answer_of(body: Any) -> Answer:
    """The `Answer` of a completion body (whatever of it is well-formed)."""
    answer = Answer()
    if not isinstance(body, dict):
        return answer
    if isinstance(body.get("usage"), dict):
        answer.usage = body["usage"]
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict) or not is_int(choice.get("index")):
            continue
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        assert isinstance(message, dict)
        got = Choice(choice["index"], finish_reason=choice.get("finish_reason"))
        got.content = message.get("content") if isinstance(message.get("content"), str) else None
        got.refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                got.calls.append(
                    Call(
                        call.get("id"),
                        function.get("name"),
                        arguments
                        if isinstance(arguments, str)
                        else orjson.dumps(arguments).decode(),
                    )
                )
        answer.choices[got.index] = got
    return answer


def _declared_tools(request: Mapping[str, Any]) -> dict[str, Any]:
    """Function name -> its parameters schema (None without one)."""
    tools: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters")
    return tools


def _forced(request: Mapping[str, Any]) -> tuple[str, set[str]]:
    """The tool choice as (mode, the names it allows): mode "none", "auto", "required"."""
    tools = set(_declared_tools(request))
    choice = request.get("tool_choice", "auto" if tools else "none")
    if isinstance(choice, str):
        return choice, tools
    if isinstance(choice, dict) and choice.get("type") == "function":
        return "required", {choice["function"]["name"]}
    allowed = choice.get("allowed_tools", {}) if isinstance(choice, dict) else {}
    names = {ref["function"]["name"] for ref in allowed.get("tools", ())}
    return str(allowed.get("mode", "auto")), names


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, None


def _schema_errors(instance: Any, schema: Any) -> list[str]:
    try:
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(instance)]  # fmt: skip
    except jsonschema.SchemaError:
        return []


def check_tools(answer: Answer, request: Mapping[str, Any]) -> list[Violation]:
    """Tool calls name declared tools, with arguments that are a JSON object valid against
    the tool's parameters; `tool_choice` none, required and a named function are obeyed.
    A choice cut by `length` may hold truncated arguments: only its names are checked."""
    found: list[Violation] = []
    tools = _declared_tools(request)
    mode, allowed = _forced(request)
    for index, choice in sorted(answer.choices.items()):
        where = f"choices[{index}]"
        if mode == "none" and choice.calls:
            found.append(Violation("tools.choice", where, "tool_choice 'none' but tools called"))
        if mode == "required" and not choice.calls and choice.finish_reason != "length":
            wanted = " or ".join(sorted(allowed)) or "a tool"
            found.append(
                Violation(
                    "tools.choice", where, f"tool_choice requires a call of {wanted}, got none"
                )
            )
        for k, call in enumerate(choice.calls):
            at = f"{where}.tool_calls[{k}]"
            if call.name not in tools:
                found.append(
                    Violation("tools.name", at, f"calls {call.name!r}, not a declared tool")
                )
                continue
            if mode == "required" and call.name not in allowed:
                found.append(
                    Violation(
                        "tools.choice",
                        at,
                        f"calls {call.name!r}; tool_choice allows {sorted(allowed)}",
                    )
                )
            if choice.finish_reason == "length":
                continue
            ok, arguments = _parse_json(call.arguments)
            if not ok or not isinstance(arguments, dict):
                found.append(
                    Violation(
                        "tools.arguments",
                        at,
                        f"arguments are not a JSON object: {call.arguments!r}",
                    )
                )
                continue
            schema = tools[call.name]
            if isinstance(schema, dict):
                for error in _schema_errors(arguments, schema):
                    found.append(
                        Violation("tools.arguments", at, f"against its parameters: {error}")
                    )
    return found


def check_structured(answer: Answer, request: Mapping[str, Any]) -> list[Violation]:
    """With `json_schema` and `strict: true`, each choice's content parses as JSON and
    validates against the schema (unless the model refused or was cut by `length`)."""
    fmt = request.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    if not isinstance(spec, dict) or spec.get("strict") is not True:
        return []
    found: list[Violation] = []
    for index, choice in sorted(answer.choices.items()):
        where = f"choices[{index}].content"
        if choice.finish_reason in ("length", "content_filter") or choice.refusal:
            continue
        if choice.content is None:
            found.append(
                Violation("structured.content", where, "no content for a json_schema answer")
            )
            continue
        ok, document = _parse_json(choice.content)
        if not ok:
            found.append(Violation("structured.json", where, f"not JSON: {choice.content[:200]!r}"))
            continue
        schema = spec.get("schema")
        for error in _schema_errors(document, schema if isinstance(schema, dict) else {}):
            found.append(Violation("structured.schema", where, error))
    return found


def check_max_tokens(answer: Answer, request: Mapping[str, Any]) -> list[Violation]:
    """`max_completion_tokens` (else `max_tokens`) bounds each choice, so n times it
    bounds usage.completion_tokens (the sum over the choices)."""
    limit = request.get("max_completion_tokens")
    if not is_int(limit):
        limit = request.get("max_tokens")
    if not is_int(limit):
        return []
    usage = answer.usage
    if usage is None:
        return [Violation("max_tokens.usage", "usage", "no usage to check the bound against")]
    used = usage.get("completion_tokens")
    n = expected_choices(request)
    if is_int(used) and used > limit * n:
        per = f" x n={n}" if n > 1 else ""
        return [
            Violation(
                "max_tokens.bound", "usage.completion_tokens", f"{used} > the limit of {limit}{per}"
            )
        ]
    return []


def _said(choice: Choice) -> tuple[Any, ...]:
    calls = []
    for call in choice.calls:
        ok, arguments = _parse_json(call.arguments)
        calls.append((call.name, arguments if ok else call.arguments))
    return (choice.content or "", choice.refusal, tuple(calls), choice.finish_reason)


def compare_answers(streamed: Answer, whole: Answer) -> list[Violation]:
    """A stream and a completion of one deterministic request say the same: content,
    refusal, tool calls (names and parsed arguments) and finish reason per choice."""
    found: list[Violation] = []
    if sorted(streamed.choices) != sorted(whole.choices):
        found.append(
            Violation(
                "agree.choices",
                "choices",
                f"stream has choices {sorted(streamed.choices)}, "
                f"the completion {sorted(whole.choices)}",
            )
        )
    for index in sorted(set(streamed.choices) & set(whole.choices)):
        a, b = _said(streamed.choices[index]), _said(whole.choices[index])
        for name, x, y in zip(
            ("content", "refusal", "tool_calls", "finish_reason"), a, b, strict=True
        ):
            if x != y:
                found.append(
                    Violation(
                        "agree.content",
                        f"choices[{index}].{name}",
                        f"stream {x!r} != completion {y!r}",
                    )
                )
    return found
