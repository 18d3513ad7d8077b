"""What the built-in offline model answers (the same payload always gives the same answer).

- text: a short reply quoting the last user message, worded by `seed` and choice
  index; after tool results, a reply that reports what the tools returned;
- tool calls, honouring `tool_choice` (see `tools.tools_to_call`), with arguments
  generated to satisfy each tool's `parameters` schema; function tools only. Under
  "auto" it calls the tools the last user message is about: those it names, or whose
  name words (``get_weather`` -> "weather"; generic verbs such as get, list, search
  aside) or distinctive description words it contains as whole words, so tools=
  [get_weather] and "What's the weather in Paris?" gives a get_weather call; all of
  them in the order the message mentions them (only the first when
  `parallel_tool_calls` is false); a text answer when it mentions none, or when the
  last message is a tool result;
- `response_format`: a document satisfying the `json_schema`, or `{"reply": ...}`
  for `json_object`;
- `stop` cuts the text before the first stop string, `max_completion_tokens` (or
  `max_tokens`) truncates text and tool arguments (finish_reason "length").

Usage is exact for what was generated: each streamed piece (a content token, a
tool call's opening fragment, an arguments fragment) is one completion token.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.providers.mock.payload import (
    as_list,
    digest,
    dumps,
    last_user_text,
    messages_of,
    plain_text,
    quote,
    seed_of,
)
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for
from gateway.providers.mock.tools import arguments, call_id, function_tools
from gateway.tokens.count import split_tokens

_QUOTE_TOKENS: Final = 48  # longer user messages are quoted up to here, then "…"
_RESULT_TOKENS: Final = 24  # the same for each tool result
_GREETING: Final = (
    "Hello! I am the gateway's offline mock model. Send a message and I will echo it."
)
_TEMPLATES: Final = (
    'You said: "{quote}"',
    'You wrote "{quote}". This is a mock reply from the gateway.',
    "Echo: {quote}",
    'Mock answer: I read "{quote}" and have nothing to add.',
)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    pieces: list[str]  # the arguments JSON, as streamed fragments


@dataclass(slots=True)
class Choice:
    """One generated answer: text pieces or tool calls, and why it ended."""

    index: int
    content: list[str] | None  # None when the answer is tool calls only
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def tokens(self) -> int:
        """Completion tokens: one per streamed piece, a call's opening fragment included."""
        return len(self.content or ()) + sum(1 + len(call.pieces) for call in self.calls)


def answer(payload: Mapping[str, Any], index: int, names: Sequence[str]) -> Choice:
    """Choice `index` of the reply (calling the tools `names`), cut to the token limit."""
    if names:
        tools = function_tools(payload)
        calls = [
            ToolCall(
                id=call_id(payload, index, k),
                name=name,
                pieces=split_tokens(arguments(tools.get(name), payload, index, name, k)),
            )
            for k, name in enumerate(names)
        ]
        choice = Choice(index, None, calls, "tool_calls")
    else:
        text = _apply_stop(_content(payload, index), payload.get("stop"))
        choice = Choice(index, split_tokens(text), [], "stop")
    _apply_limit(choice, _token_limit(payload))
    return choice


def _content(payload: Mapping[str, Any], index: int) -> str:
    """The text (or JSON document) choice `index` answers with."""
    response_format = payload.get("response_format")
    if not isinstance(response_format, Mapping):
        return _text(payload, index)
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            try:
                return dumps(instance_for(schema, seed=f"{seed_of(payload)}:{index}"))
            except SchemaInstanceError:
                pass  # an unsatisfiable schema: answer like json_object
        return dumps({"reply": _text(payload, index)})
    if kind == "json_object":
        return dumps({"reply": _text(payload, index)})
    return _text(payload, index)


def _text(payload: Mapping[str, Any], index: int) -> str:
    messages = messages_of(payload)
    if messages and messages[-1].get("role") in ("tool", "function"):
        return _tool_results_text(messages)
    said = last_user_text(messages)
    if said is None:
        return _GREETING
    template = _TEMPLATES[digest(f"{seed_of(payload)}:{index}") % len(_TEMPLATES)]
    return template.format(quote=quote(said, _QUOTE_TOKENS))


def _tool_results_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """A reply built from the trailing tool messages, naming the tools they answer."""
    names: dict[str, str] = {}
    for message in messages:
        for call in as_list(message.get("tool_calls")):
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name", "the tool"))
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") not in ("tool", "function"):
            break
        call_id = message.get("tool_call_id")
        name = message.get("name") or names.get(call_id if isinstance(call_id, str) else "")
        result = quote(plain_text(message.get("content")), _RESULT_TOKENS)
        results.append(f'{name or "the tool"} returned "{result}"')
    return "Here is what I found: " + "; ".join(reversed(results)) + "."


def _apply_stop(text: str, stop: Any) -> str:
    """`text` cut before the earliest stop string."""
    stops = [stop] if isinstance(stop, str) else [s for s in as_list(stop) if isinstance(s, str)]
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


def _token_limit(payload: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _apply_limit(choice: Choice, limit: int | None) -> None:
    """Truncate the choice to `limit` completion tokens (finish_reason "length")."""
    if limit is None or choice.tokens <= limit:
        return
    choice.finish_reason = "length"
    if choice.content is not None:
        del choice.content[limit:]
        return
    budget = limit
    kept: list[ToolCall] = []
    for call in choice.calls:
        if budget <= 0:
            break
        del call.pieces[budget - 1 :]
        budget -= 1 + len(call.pieces)
        kept.append(call)
    choice.calls = kept
