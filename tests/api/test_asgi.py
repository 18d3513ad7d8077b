"""The ASGI helpers: what a streamed response's writer sends, message by message."""

from __future__ import annotations

from typing import Any

from gateway.api.asgi import SSEWriter


def recorder() -> tuple[list[dict[str, Any]], Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return sent, send


def bodies(sent: list[dict[str, Any]]) -> list[tuple[bytes, bool]]:
    return [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]


async def test_the_last_event_ends_the_response_in_the_same_message() -> None:
    sent, send = recorder()
    sse = SSEWriter(send, [], 0.0)
    await sse.write(b"data: a\n\n")
    await sse.write_last(b"data: [DONE]\n\n")
    await sse.end()  # nothing more: the last event ended it
    assert bodies(sent) == [(b"data: a\n\n", True), (b"data: [DONE]\n\n", False)]


async def test_a_last_event_that_is_the_first_starts_then_ends() -> None:
    sent, send = recorder()
    sse = SSEWriter(send, [], 0.0)
    await sse.write_last(b"data: [DONE]\n\n")
    await sse.end()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert bodies(sent) == [(b"data: [DONE]\n\n", True), (b"", False)]


async def test_end_without_a_last_event_ends_once() -> None:
    sent, send = recorder()
    sse = SSEWriter(send, [], 0.0)
    await sse.end()  # nothing started: nothing to end
    assert sent == []
    await sse.write(b"data: a\n\n")
    await sse.end()
    await sse.end()
    assert bodies(sent) == [(b"data: a\n\n", True), (b"", False)]
