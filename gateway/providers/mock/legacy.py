"""The built-in offline model's engine: an OpenAI chat-completions answer, as bytes.

`respond` turns a validated request body into what an OpenAI upstream would send
back: a `chat.completion` JSON body, or a `text/event-stream` of
`chat.completion.chunk` events in OpenAI's order (role chunk, one chunk per token,
tool-call fragments, finish chunk, optional usage chunk, `[DONE]`). The parts carry
the delays a relay should sleep before writing them, so the configured speed
(`ttft_ms`, `tokens_per_s`) shows on the wire.

What it answers (the same payload always gives the same bytes):
- text: a short reply quoting the last user message, worded by `seed` and choice
  index; after tool results, a reply that reports what the tools returned;
- tool calls, honouring `tool_choice` (see `_tools_to_call`), with arguments
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

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.config import MockOptions
from gateway.providers.base import JSON, CallContext, UpstreamRequest
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for
from gateway.providers.openai import OpenAIProvider, normalise_request
from gateway.tokens.count import count_prompt_tokens, split_tokens

__all__ = ["SYSTEM_FINGERPRINT", "MockProvider", "MockReply", "respond"]

SYSTEM_FINGERPRINT: Final = "fp_mock"
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
_NO_PARAMETERS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}
_SSE_HEADERS: Final = {"content-type": "text/event-stream"}
_JSON_HEADERS: Final = {"content-type": "application/json"}
_DONE: Final = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class MockReply:
    """The mock upstream's HTTP answer; the relay sleeps each delay, then writes its bytes."""

    status: int
    headers: dict[str, str]
    parts: list[tuple[float, bytes]]


@dataclass(slots=True)
class _ToolCall:
    id: str
    name: str
    pieces: list[str]  # the arguments JSON, as streamed fragments


@dataclass(slots=True)
class _Choice:
    """One generated answer: text pieces or tool calls, and why it ended."""

    index: int
    content: list[str] | None  # None when the answer is tool calls only
    calls: list[_ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def tokens(self) -> int:
        """Completion tokens: one per streamed piece, a call's opening fragment included."""
        return len(self.content or ()) + sum(1 + len(call.pieces) for call in self.calls)


def respond(
    payload: dict[str, Any], options: MockOptions, *, created: int, request_id: str
) -> MockReply:
    """The mock upstream's answer to an OpenAI chat-completions payload.

    The payload was validated by the gateway; `options` holds the deployment's pace
    (`ttft_ms`, `tokens_per_s`; 0 means no delay).
    """
    ttft_s = max(0.0, options.ttft_ms) / 1000
    tokens_per_s = max(0.0, options.tokens_per_s)
    n = payload.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    names = _tools_to_call(payload)
    choices = [_answer(payload, index, names) for index in range(count)]
    usage = _usage(count_prompt_tokens(payload), sum(c.tokens for c in choices))
    if payload.get("stream") is True:
        stream_options = payload.get("stream_options")
        include_usage = (
            isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True
        )
        kept_usage = usage if include_usage else None
        parts = _stream_parts(
            payload, choices, kept_usage, ttft_s, tokens_per_s, created, request_id
        )
        return MockReply(200, dict(_SSE_HEADERS), parts)
    body = _completion(payload, choices, usage, created, request_id)
    steps = max(c.tokens for c in choices)
    delay = ttft_s + (steps / tokens_per_s if tokens_per_s > 0 else 0.0)
    return MockReply(200, dict(_JSON_HEADERS), [(delay, body)])


def _answer(payload: Mapping[str, Any], index: int, names: Sequence[str]) -> _Choice:
    """Choice `index` of the reply (calling the tools `names`), cut to the token limit."""
    if names:
        tools = _function_tools(payload)
        calls = [
            _ToolCall(
                id=_call_id(payload, index, k),
                name=name,
                pieces=split_tokens(_arguments(tools.get(name), payload, index, name, k)),
            )
            for k, name in enumerate(names)
        ]
        choice = _Choice(index, None, calls, "tool_calls")
    else:
        text = _apply_stop(_content(payload, index), payload.get("stop"))
        choice = _Choice(index, split_tokens(text), [], "stop")
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
                return _dumps(instance_for(schema, seed=f"{_seed(payload)}:{index}"))
            except SchemaInstanceError:
                pass  # an unsatisfiable schema: answer like json_object
        return _dumps({"reply": _text(payload, index)})
    if kind == "json_object":
        return _dumps({"reply": _text(payload, index)})
    return _text(payload, index)


def _text(payload: Mapping[str, Any], index: int) -> str:
    messages = _messages(payload)
    if messages and messages[-1].get("role") in ("tool", "function"):
        return _tool_results_text(messages)
    said = _last_user_text(messages)
    if said is None:
        return _GREETING
    template = _TEMPLATES[_digest(f"{_seed(payload)}:{index}") % len(_TEMPLATES)]
    return template.format(quote=_quote(said, _QUOTE_TOKENS))


def _tool_results_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """A reply built from the trailing tool messages, naming the tools they answer."""
    names: dict[str, str] = {}
    for message in messages:
        for call in _list(message.get("tool_calls")):
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name", "the tool"))
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") not in ("tool", "function"):
            break
        call_id = message.get("tool_call_id")
        name = message.get("name") or names.get(call_id if isinstance(call_id, str) else "")
        result = _quote(_plain_text(message.get("content")), _RESULT_TOKENS)
        results.append(f'{name or "the tool"} returned "{result}"')
    return "Here is what I found: " + "; ".join(reversed(results)) + "."


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _plain_text(message.get("content"))
    return None


def _plain_text(content: Any) -> str:
    """A message's content as text; non-text parts show as [image], [audio], [file]."""
    if isinstance(content, str):
        return content
    words: list[str] = []
    for part in _list(content):
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            words.append(part[kind])
        elif kind in ("image_url", "input_audio", "file"):
            words.append({"image_url": "[image]", "input_audio": "[audio]", "file": "[file]"}[kind])
    return " ".join(words)


def _quote(text: str, limit: int) -> str:
    pieces = split_tokens(" ".join(text.split()))
    if len(pieces) <= limit:
        return "".join(pieces)
    return "".join(pieces[:limit]).rstrip() + "…"


def _apply_stop(text: str, stop: Any) -> str:
    """`text` cut before the earliest stop string."""
    stops = [stop] if isinstance(stop, str) else [s for s in _list(stop) if isinstance(s, str)]
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


def _token_limit(payload: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _apply_limit(choice: _Choice, limit: int | None) -> None:
    """Truncate the choice to `limit` completion tokens (finish_reason "length")."""
    if limit is None or choice.tokens <= limit:
        return
    choice.finish_reason = "length"
    if choice.content is not None:
        del choice.content[limit:]
        return
    budget = limit
    kept: list[_ToolCall] = []
    for call in choice.calls:
        if budget <= 0:
            break
        del call.pieces[budget - 1 :]
        budget -= 1 + len(call.pieces)
        kept.append(call)
    choice.calls = kept


# -- tools ---------------------------------------------------------------------------


def _function_tools(payload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Function tools by name, in request order, with their parameters schema."""
    tools: dict[str, Mapping[str, Any]] = {}
    for tool in _list(payload.get("tools")):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            continue
        name = function.get("name")
        if isinstance(name, str):
            parameters = function.get("parameters")
            tools[name] = parameters if isinstance(parameters, Mapping) else _NO_PARAMETERS
    return tools


def _tools_to_call(payload: Mapping[str, Any]) -> list[str]:
    """The tools the reply calls, by `tool_choice`.

    "none": no call. A named function: exactly that one. "auto": the tools the last
    user message mentions (see `_mentioned`; in the order it mentions them, only the
    first when `parallel_tool_calls` is false), none if it mentions none or if the
    last message is a tool result. "required": the same, or else the first tool.
    `allowed_tools` narrows the tools and picks auto or required.
    """
    tools = _function_tools(payload)
    choice = payload.get("tool_choice", "auto" if tools else "none")
    if not tools or choice == "none":
        return []
    allowed, mode = list(tools), choice
    if isinstance(choice, Mapping):
        if choice.get("type") == "function":
            function = choice.get("function")
            name = function.get("name") if isinstance(function, Mapping) else None
            return [name] if isinstance(name, str) else []
        spec = choice.get("allowed_tools")
        if choice.get("type") != "allowed_tools" or not isinstance(spec, Mapping):
            return []
        mode = spec.get("mode", "auto")
        allowed = [name for name in _allowed_names(spec.get("tools")) if name in tools]
    messages = _messages(payload)
    if mode != "required" and messages and messages[-1].get("role") in ("tool", "function"):
        return []
    named = _mentioned(_last_user_text(messages) or "", allowed, _tool_terms(payload))
    if payload.get("parallel_tool_calls") is False:
        named = named[:1]
    if named:
        return named
    return allowed[:1] if mode == "required" else []


def _allowed_names(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in _list(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that say nothing about what a tool is for: generic verbs and grammar words
# (ignored in names and descriptions) and description filler (in descriptions only).
_GENERIC_VERBS: Final = _word_set(
    "get gets set sets list lists fetch fetches find finds search searches lookup "
    "lookups look create creates update updates delete deletes do does run runs call "
    "calls add adds remove removes read reads write writes check checks query queries "
    "retrieve retrieves return returns show shows make makes use uses execute executes "
    "handle handles compute computes calculate calculates"
)
_GRAMMAR_WORDS: Final = _word_set(
    "a an the and or nor but by of in on at to for with from into onto as is be if "
    "this that these those what which who whom whose when where how why are was were "
    "been being has have had can could will would shall should may might must not no "
    "any all some each every its it their there here than then also only just about "
    "over under via per such other more most less very"
)
_FILLER_WORDS: Final = _word_set(
    "current currently given specified specific provided optional optionally based "
    "using value values information info data details result results tool function "
    "functions user users you your our item items thing things name names type types "
    "new"
)
_IGNORED_IN_NAMES: Final = _GENERIC_VERBS | _GRAMMAR_WORDS
_IGNORED_IN_DESCRIPTIONS: Final = _IGNORED_IN_NAMES | _FILLER_WORDS
_NAME_WORD: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_DESCRIPTION_WORD: Final = re.compile(r"[^\W_]+")


def _name_words(name: str) -> set[str]:
    """The words of a tool name split on _ - and camelCase, generic verbs aside."""
    words = {word.lower() for word in _NAME_WORD.findall(name)}
    return {w for w in words if len(w) >= 2 and w not in _IGNORED_IN_NAMES}


def _description_words(description: str) -> set[str]:
    words = {word.lower() for word in _DESCRIPTION_WORD.findall(description)}
    return {
        w for w in words if len(w) >= 3 and not w.isdigit() and w not in _IGNORED_IN_DESCRIPTIONS
    }


def _tool_terms(payload: Mapping[str, Any]) -> dict[str, set[str]]:
    """The words that point at each function tool: its name words, and the words of its
    description that no other tool's name or description uses (the distinctive ones)."""
    names: dict[str, set[str]] = {}
    described: dict[str, set[str]] = {}
    for tool in _list(payload.get("tools")):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            continue
        name, description = function.get("name"), function.get("description")
        if isinstance(name, str):
            names[name] = _name_words(name)
            text = description if isinstance(description, str) else ""
            described[name] = _description_words(text) - names[name]
    uses: dict[str, int] = {}
    for name in names:
        for word in names[name] | described[name]:
            uses[word] = uses.get(word, 0) + 1
    return {name: names[name] | {w for w in described[name] if uses[w] == 1} for name in names}


def _mentioned(text: str, names: Sequence[str], terms: Mapping[str, set[str]]) -> list[str]:
    """The tools among `names` that `text` mentions, in order of first mention: by the
    whole name or by one of its `terms`, as whole words, case-insensitively."""
    found: list[tuple[int, int, str]] = []
    for order, name in enumerate(names):
        starts = [
            match.start()
            for term in (name, *sorted(terms.get(name, ())))
            if (match := re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, re.I))
        ]
        if starts:
            found.append((min(starts), order, name))
    return [name for *_, name in sorted(found)]


def _arguments(
    parameters: Mapping[str, Any] | None, payload: Mapping[str, Any], index: int, name: str, k: int
) -> str:
    """A compact JSON string satisfying the tool's parameters schema ("{}" if none can)."""
    try:
        value = instance_for(
            parameters or _NO_PARAMETERS, seed=f"{_seed(payload)}:{index}:{name}:{k}"
        )
    except SchemaInstanceError:
        value = {}
    return _dumps(value)


def _call_id(payload: Mapping[str, Any], index: int, k: int) -> str:
    """A tool-call id that differs per turn, choice and call, and repeats per payload."""
    messages = _messages(payload)
    last = _dumps(messages[-1]) if messages else ""
    key = f"{len(messages)}\x00{last}\x00{_seed(payload)}\x00{index}\x00{k}"
    return "call_" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


# -- wire format ---------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion(
    payload: Mapping[str, Any],
    choices: Sequence[_Choice],
    usage: dict[str, Any],
    created: int,
    request_id: str,
) -> bytes:
    """The non-streamed `chat.completion` body."""
    body = {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": payload.get("model"),
        "choices": [
            {
                "index": choice.index,
                "message": _message(choice),
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for choice in choices
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return orjson.dumps(body)


def _message(choice: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.content is None else "".join(choice.content),
        "refusal": None,
        "annotations": [],
    }
    if choice.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.pieces)},
            }
            for call in choice.calls
        ]
    return message


class _ChunkWriter:
    """Encodes `chat.completion.chunk` events sharing one id/created/model header."""

    def __init__(
        self, payload: Mapping[str, Any], created: int, request_id: str, usage: bool
    ) -> None:
        self.head = (
            b'data: {"id":'
            + orjson.dumps(request_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(payload.get("model"))
            + b',"service_tier":"default","system_fingerprint":'
            + orjson.dumps(SYSTEM_FINGERPRINT)
            + b',"choices":['
        )
        self.tail = b'],"usage":null}\n\n' if usage else b"]}\n\n"

    def chunk(
        self, index: int, delta: Mapping[str, Any], finish_reason: str | None = None
    ) -> bytes:
        return b"".join(
            (
                self.head,
                b'{"index":%d,"delta":' % index,
                orjson.dumps(delta),
                b',"logprobs":null,"finish_reason":',
                orjson.dumps(finish_reason),
                b"}",
                self.tail,
            )
        )

    def usage_chunk(self, usage: Mapping[str, Any]) -> bytes:
        return self.head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def _choice_steps(writer: _ChunkWriter, choice: _Choice) -> list[list[bytes]]:
    """The choice's events grouped by token: step k carries the k-th generated piece;
    the role chunk rides with the first step and the finish chunk with the last."""
    i = choice.index
    role = {"role": "assistant", "content": None if choice.content is None else "", "refusal": None}
    steps = [[writer.chunk(i, {"content": piece})] for piece in choice.content or ()]
    for k, call in enumerate(choice.calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": k, "id": call.id, "type": "function", "function": function}
        steps.append([writer.chunk(i, {"tool_calls": [opening]})])
        for piece in call.pieces:
            fragment = {"index": k, "function": {"arguments": piece}}
            steps.append([writer.chunk(i, {"tool_calls": [fragment]})])
    if not steps:
        steps.append([])
    steps[0].insert(0, writer.chunk(i, role))
    steps[-1].append(writer.chunk(i, {}, choice.finish_reason))
    return steps


def _stream_parts(
    payload: Mapping[str, Any],
    choices: Sequence[_Choice],
    usage: dict[str, Any] | None,
    ttft_s: float,
    tokens_per_s: float,
    created: int,
    request_id: str,
) -> list[tuple[float, bytes]]:
    """SSE bytes in timed parts: the first after `ttft_s`, then one per token step
    every 1/tokens_per_s (all choices advance together); one part when there is no
    token delay."""
    writer = _ChunkWriter(payload, created, request_id, usage is not None)
    per_choice = [_choice_steps(writer, choice) for choice in choices]
    length = max(len(steps) for steps in per_choice)
    frames = [
        b"".join(b"".join(steps[s]) for steps in per_choice if s < len(steps))
        for s in range(length)
    ]
    frames[-1] += (writer.usage_chunk(usage) if usage is not None else b"") + _DONE
    if tokens_per_s <= 0:
        return [(ttft_s, b"".join(frames))]
    gap = 1 / tokens_per_s
    return [(ttft_s if s == 0 else gap, frame) for s, frame in enumerate(frames)]


# -- helpers -------------------------------------------------------------------------


def _messages(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in _list(payload.get("messages")) if isinstance(m, Mapping)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _seed(payload: Mapping[str, Any]) -> str:
    seed = payload.get("seed")
    return str(seed) if isinstance(seed, int) and not isinstance(seed, bool) else ""


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _dumps(value: Any) -> str:
    """Compact JSON; the stdlib handles what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class MockProvider(OpenAIProvider):
    """Provider for `kind = "mock"`: answered in-process by `respond`.

    It speaks OpenAI's wire format, so responses, streams and errors go through the
    OpenAI translator like those of a real upstream; `relay.LocalTransport` serves the
    reply's parts with their delays instead of a socket.
    """

    kind = "mock"

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        payload = normalise_request(body, ctx)
        return UpstreamRequest(
            url="mock://local/v1/chat/completions",
            headers={},
            body=b"",
            stream=ctx.stream,
            payload=payload,
        )

    def respond(self, req: UpstreamRequest, ctx: CallContext) -> MockReply:
        assert req.payload is not None
        return respond(
            req.payload,
            ctx.deployment.options_of(MockOptions),
            created=ctx.created,
            request_id=ctx.request_id,
        )
