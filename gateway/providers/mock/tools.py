"""Which tools the mock calls, and with what arguments.

Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.providers.mock.payload import as_list, dumps, last_user_text, messages_of, seed_of
from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for

NO_PARAMETERS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


def function_tools(payload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Function tools by name, in request order, with their parameters schema."""
    tools: dict[str, Mapping[str, Any]] = {}
    for tool in as_list(payload.get("tools")):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            continue
        name = function.get("name")
        if isinstance(name, str):
            parameters = function.get("parameters")
            tools[name] = parameters if isinstance(parameters, Mapping) else NO_PARAMETERS
    return tools


def tools_to_call(payload: Mapping[str, Any]) -> list[str]:
    """The tools the reply calls, by `tool_choice`.

    "none": no call. A named function: exactly that one. "auto": the tools the last
    user message mentions (see `_mentioned`; in the order it mentions them, only the
    first when `parallel_tool_calls` is false), none if it mentions none or if the
    last message is a tool result. "required": the same, or else the first tool.
    `allowed_tools` narrows the tools and picks auto or required.
    """
    tools = function_tools(payload)
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
    messages = messages_of(payload)
    if mode != "required" and messages and messages[-1].get("role") in ("tool", "function"):
        return []
    named = _mentioned(last_user_text(messages) or "", allowed, _tool_terms(payload))
    if payload.get("parallel_tool_calls") is False:
        named = named[:1]
    if named:
        return named
    return allowed[:1] if mode == "required" else []


def _allowed_names(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in as_list(tools):
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
    for tool in as_list(payload.get("tools")):
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


def arguments(
    parameters: Mapping[str, Any] | None, payload: Mapping[str, Any], index: int, name: str, k: int
) -> str:
    """A compact JSON string satisfying the tool's parameters schema ("{}" if none can)."""
    try:
        value = instance_for(
            parameters or NO_PARAMETERS, seed=f"{seed_of(payload)}:{index}:{name}:{k}"
        )
    except SchemaInstanceError:
        value = {}
    return dumps(value)


def call_id(payload: Mapping[str, Any], index: int, k: int) -> str:
    """A tool-call id that differs per turn, choice and call, and repeats per payload."""
    messages = messages_of(payload)
    last = dumps(messages[-1]) if messages else ""
    key = f"{len(messages)}\x00{last}\x00{seed_of(payload)}\x00{index}\x00{k}"
    return "call_" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
