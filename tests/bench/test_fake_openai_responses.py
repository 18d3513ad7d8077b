"""The fake OpenAI upstream's Responses API: OpenAI's shapes, checked with the SDK's types.

The gateway's native relay is tested against this fake, so the fake itself is held to
the same checks as the gateway's own streams (tests/responses/events.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.responses import Response

from bench.fakes.threaded import run_fake_openai
from tests.responses.events import check_stream

KEY = "sk-fake-upstream"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[httpx.Client]:
    with (
        run_fake_openai() as (_, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/responses", json={"model": "gpt-fake", "input": "Say hello", **body})


@pytest.mark.parametrize("tools", [[], [WEATHER]])
def test_answers_and_streams_in_openais_shapes(fake: httpx.Client, tools: list[Any]) -> None:
    whole = create(fake, tools=tools)
    assert whole.status_code == 200
    response = Response.model_validate(whole.json())
    assert response.output and response.usage is not None
    events = check_stream(create(fake, tools=tools, stream=True).content)
    streamed = events[-1]["response"]
    assert [i["type"] for i in streamed["output"]] == [i.type for i in response.output]


def test_an_injected_error_mid_stream_is_an_error_event(fake: httpx.Client) -> None:
    raw = create(fake, model="gpt-fake@error_after=4&chunks=6", stream=True).content
    assert raw.rstrip().split(b"\n")[0] == b"event: response.created"
    assert b"event: error\n" in raw and b"response.completed" not in raw


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"role": "assistant", "content": "x", "id": "msg_other"}]}, "input[0]"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0]"),
        ({"input": []}, "input"),
    ],
)
def test_refuses_what_a_stateless_openai_would(
    fake: httpx.Client, body: dict[str, Any], param: str
) -> None:
    r = create(fake, **body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
