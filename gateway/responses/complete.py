"""A non-streamed chat completion as a Responses API response object.

The bridged providers answer in chat completions' shape; the message becomes the
response's output through the same `Output` the streamed answer uses (reasoning,
then the message's text and refusal, then the function calls), so both agree item
for item. Usage becomes the Responses API's; the finish reason its status.

Pure module: no I/O.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import UpstreamError
from gateway.responses.objects import Events, incomplete_reason, usage_from_chat
from gateway.responses.output import Output

JSON = dict[str, Any]


def response_from_chat(completion: JSON, skeleton: JSON) -> JSON:
    """The response object for a `chat.completion` (the first choice)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise UpstreamError("The upstream response has no message.")
    message: JSON = choice["message"]
    output = Output(skeleton["id"], Events())
    reasoning = message.get("reasoning_content")
    if not isinstance(reasoning, str):
        reasoning = message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.reasoning(reasoning, None)
    content = message.get("content")
    if isinstance(content, list):  # content parts, as some servers answer
        content = "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if isinstance(content, str) and content:
        output.text(content, None)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.refusal(refusal, None)
    for index, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        arguments = fn.get("arguments")
        output.call(
            index,
            call.get("id"),
            fn.get("name") if isinstance(fn.get("name"), str) else "",
            arguments if isinstance(arguments, str) else "",
            None,
        )
    reason = incomplete_reason(choice.get("finish_reason"))
    output.close("incomplete" if reason else "completed", None)
    response = dict(skeleton)
    response["status"] = "incomplete" if reason else "completed"
    if reason:
        response["incomplete_details"] = {"reason": reason}
    response["output"] = [item for item in output.items if item is not None]
    response["usage"] = usage_from_chat(completion.get("usage"))
    response["completed_at"] = int(time.time())
    return response
