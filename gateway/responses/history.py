"""The conversation a request continues: `previous_response_id` and `item_reference`s.

A stored response keeps the whole input its model saw (the history before it and
its own input) and its output; a request that names it as `previous_response_id`
continues from that history plus that output (OpenAI's rule: the previous response's
`instructions` are not carried over). An `item_reference` input names one output item
of a stored response by id; the id says which response (objects.py), so it is found
without an index. Everything here is pure: the route loads the stored responses.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import InvalidRequest
from gateway.responses.objects import response_of_item
from gateway.responses.validate import item_type

JSON = dict[str, Any]


def request_items(request: JSON) -> list[tuple[JSON, str]]:
    """The request's own input items, each with the field path that names it."""
    value = request.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [({"type": "message", "role": "user", "content": value}, "input")]
    return [(item, f"input[{i}]") for i, item in enumerate(value)]


def continued(input_items: Sequence[JSON], response: Mapping[str, Any]) -> list[JSON]:
    """The history a response leaves: what its model saw, then what it answered
    (function calls cut short are left out: their arguments may not be whole)."""
    out = list(input_items)
    for item in response.get("output") or ():
        if isinstance(item, dict) and not (
            item.get("type") == "function_call" and item.get("status") == "incomplete"
        ):
            out.append(item)
    return out


def referenced_responses(items: Sequence[tuple[JSON, str]]) -> set[str]:
    """The ids of the stored responses that the `item_reference`s among `items` name."""
    found: set[str] = set()
    for item, _ in items:
        if item_type(item) == "item_reference":
            response_id = response_of_item(item["id"])
            if response_id is not None:
                found.add(response_id)
    return found


def resolve_references(
    items: Sequence[tuple[JSON, str]], stored: Mapping[str, Mapping[str, Any]]
) -> list[tuple[JSON, str]]:
    """`items` with each `item_reference` replaced by the output item it names, from
    the `stored` responses (id -> response object) the caller could load; a 400
    naming the reference if it names nothing the caller may see."""
    out: list[tuple[JSON, str]] = []
    for item, path in items:
        if item_type(item) != "item_reference":
            out.append((item, path))
            continue
        ref = item["id"]
        response = stored.get(response_of_item(ref) or "")
        found = None
        for candidate in (response or {}).get("output") or ():
            if isinstance(candidate, dict) and candidate.get("id") == ref:
                found = candidate
                break
        if found is None:
            raise InvalidRequest(
                f"Item with id '{ref}' not found: it must be an output item of a stored "
                "response made with the same key.",
                param=f"{path}.id",
                code="item_not_found",
            )
        out.append((found, path))
    return out
