"""End to end: the official OpenAI SDK's Responses API against a served gateway, on the
mock and on every fake vendor (bench/fakes): bridged through chat completions for
OpenAI-compatible, Anthropic and Gemini upstreams, and native for an OpenAI upstream
that serves /v1/responses itself (`responses_api = true`).

Streams are also read as raw bytes and checked event by event against the SDK's own
types and OpenAI's order (tests/responses/events.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import FunctionToolParam
from pydantic import BaseModel

from bench.contract.checks import check_error
from bench.fakes import anthropic as fake_anthropic
from bench.fakes import gemini as fake_gemini
from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import serve_app
from tests.responses.events import check_stream

KEY = "sk-responses-test-a-0123456789"
OTHER_KEY = "sk-responses-test-b-0123456789"
SCOPED_KEY = "sk-responses-test-c-0123456789"

CONFIG = """
[state]
sqlite_path = "{state_dir}/gateway.sqlite3"

[routing]
max_attempts = 1

[responses]
retention_days = 1

[providers.mock]
kind = "mock"

[providers.fake]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
first_byte_timeout_s = 2
idle_timeout_s = 2

[providers.native]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
responses_api = true
first_byte_timeout_s = 2
idle_timeout_s = 2

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"
reasoning_output = true

[providers.gemini]
kind = "gemini"
base_url = "{gemini}"
api_key = "{gemini_key}"
reasoning_output = true

[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0

[models."gpt-chat"]
provider = "fake"
upstream_model = "fake-model"

[models."gpt-native"]
provider = "native"
upstream_model = "fake-model"

[models."claude-test"]
provider = "anthropic"
upstream_model = "claude-fake"

[models."gemini-test"]
provider = "gemini"
upstream_model = "gemini-2.5-flash"

[[keys]]
name = "a"
key = "{key}"

[[keys]]
name = "b"
key = "{other_key}"

[[keys]]
name = "scoped"
key = "{scoped_key}"
models = ["mock-fast"]
"""

MODELS = ["mock-fast", "gpt-chat", "gpt-native", "claude-test", "gemini-test"]
every_model = pytest.mark.parametrize("model", MODELS)

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@dataclass
class Stack:
    url: str
    openai: FakeOpenAI
    anthropic: Any
    sqlite: Path
    clients: dict[str, OpenAI] = field(default_factory=dict)  # one per key, closed at the end


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        run_fake_openai() as (fake, openai_url),
        fake_anthropic.run_fake_anthropic() as (anthropic, anthropic_url),
        fake_gemini.run_fake_gemini() as (_, gemini_url),
    ):
        path: Path = tmp_path_factory.mktemp("responses") / "gateway.toml"
        path.write_text(
            CONFIG.format(
                state_dir=path.parent,
                openai=openai_url,
                anthropic=anthropic_url,
                anthropic_key=fake_anthropic.DEFAULT_KEY,
                gemini=gemini_url,
                gemini_key=fake_gemini.DEFAULT_KEY,
                key=KEY,
                other_key=OTHER_KEY,
                scoped_key=SCOPED_KEY,
            )
        )
        app = create_app(load_config(path))
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            url = f"http://127.0.0.1:{port}/v1"
            running = Stack(url, fake, anthropic, path.parent / "gateway.sqlite3")
            try:
                yield running
            finally:
                for c in running.clients.values():
                    c.close()


def client(stack: Stack, key: str = KEY) -> OpenAI:
    if key not in stack.clients:
        stack.clients[key] = OpenAI(base_url=stack.url, api_key=key, max_retries=0, timeout=20)
    return stack.clients[key]


def raw_stream(stack: Stack, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/responses",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {key}"},
        timeout=20,
    )


# ---------------------------------------------------------------- every provider


@every_model
def test_create(stack: Stack, model: str) -> None:
    r = client(stack).responses.create(
        model=model, input="Say hello", instructions="Answer briefly.", max_output_tokens=200
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.model == model
    assert r.output_text
    message = next(item for item in r.output if item.type == "message")
    assert message.id.startswith("msg_" + r.id[5:])
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Answer briefly." and r.max_output_tokens == 200


@every_model
def test_stream_events_are_openais(stack: Stack, model: str) -> None:
    answer = raw_stream(stack, {"model": model, "input": "Say hello"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = check_stream(answer.content)
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
    with client(stack).responses.stream(model=model, input="Say hello") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        response = s.get_final_response()
    assert "".join(deltas) == response.output_text and response.output_text


class Forecast(BaseModel):
    city: str
    temperature_c: float
    sunny: bool


@every_model
def test_parse_structured_output(stack: Stack, model: str) -> None:
    r = client(stack).responses.parse(
        model=model, input="Forecast for Rome as JSON", text_format=Forecast
    )
    assert isinstance(r.output_parsed, Forecast)


@every_model
def test_tool_round_trip_by_previous_response_id(stack: Stack, model: str) -> None:
    c = client(stack)
    first = c.responses.create(
        model=model, input="What is the weather in Oslo? Use get_weather.", tools=[WEATHER]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict)
    second = c.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "3 C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.output_text
    assert second.previous_response_id == first.id


@every_model
def test_tool_round_trip_without_stored_state(stack: Stack, model: str) -> None:
    """A stateless client sends the whole conversation back, items and all."""
    c = client(stack)
    question: Any = {"role": "user", "content": "Weather in Oslo? Use get_weather."}
    first = c.responses.create(model=model, input=[question], tools=[WEATHER], store=False)
    call = next(item for item in first.output if item.type == "function_call")
    history = [question, *[item.model_dump(exclude_none=True) for item in first.output]]
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "3 C"}
    second = c.responses.create(model=model, input=[*history, output], tools=[WEATHER], store=False)
    assert second.output_text
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)  # store: false keeps nothing


@pytest.mark.parametrize("model", ["claude-test", "gemini-test"])
def test_thinking_is_a_reasoning_item(stack: Stack, model: str) -> None:
    r = client(stack).responses.create(
        model=model, input="Think, then say hello", reasoning={"effort": "low"}
    )
    kinds = [item.type for item in r.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.summary[0].text
    answer = raw_stream(
        stack, {"model": model, "input": "Think, then say hello", "reasoning": {"effort": "low"}}
    )
    kinds = [e["type"] for e in check_stream(answer.content)]
    assert "response.reasoning_summary_text.delta" in kinds


# ---------------------------------------------------------------- state


def test_a_conversation_continues_on_another_provider(stack: Stack) -> None:
    c = client(stack)
    first = c.responses.create(model="mock-fast", input="My name is Ada.")
    second = c.responses.create(
        model="claude-test", input="What is my name?", previous_response_id=first.id
    )
    assert second.output_text
    sent = stack.anthropic.requests[-1].body["messages"]
    texts = json.dumps(sent)
    assert "My name is Ada." in texts and first.output_text in texts and "What is my name?" in texts
    third = c.responses.create(
        model="gpt-native", input="And again?", previous_response_id=second.id
    )
    assert third.output_text
    native = stack.openai.requests[-1]
    assert native.path == "/v1/responses" and native.body["store"] is False
    assert "previous_response_id" not in native.body
    assert [m.get("role") for m in native.body["input"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_retrieve_and_delete_belong_to_the_key_that_stored(stack: Stack) -> None:
    c = client(stack)
    r = c.responses.create(model="mock-fast", input="keep this", metadata={"topic": "test"})
    got = c.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.metadata == {"topic": "test"}
    other = client(stack, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model="mock-fast", input="x", previous_response_id=r.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_item_references_resolve_to_stored_items(stack: Stack) -> None:
    """The Vercel AI SDK sends earlier assistant output as item references."""
    c = client(stack)
    first = c.responses.create(model="mock-fast", input="Hello")
    reference: Any = {"type": "item_reference", "id": first.output[0].id}
    second = c.responses.create(
        model="claude-test",
        input=[
            {"role": "user", "content": "Hello"},
            reference,
            {"role": "user", "content": "Again"},
        ],
    )
    assert second.output_text
    assert first.output_text in json.dumps(stack.anthropic.requests[-1].body["messages"])
    with pytest.raises(openai.BadRequestError) as info:
        client(stack, OTHER_KEY).responses.create(model="mock-fast", input=[reference])
    assert info.value.param == "input[0].id"


def test_the_ledger_has_a_row_per_response(stack: Stack) -> None:
    """The response id is the ledger's request id (the writer commits every 200 ms)."""
    r = client(stack).responses.create(model="gpt-chat", input="count me")
    row = None
    for _ in range(50):
        with sqlite3.connect(stack.sqlite) as db:
            row = db.execute(
                "SELECT model, prompt_tokens, completion_tokens, status FROM usage "
                "WHERE request_id = ? AND status != 'pending'",
                (r.id,),
            ).fetchone()
        if row is not None:
            break
        time.sleep(0.1)
    assert r.usage is not None
    assert row == ("gpt-chat", r.usage.input_tokens, r.usage.output_tokens, "ok")


# ---------------------------------------------------------------- errors


def _raises(exc: type[openai.APIStatusError], **kw: Any) -> openai.APIStatusError:
    with pytest.raises(exc) as info:
        client(stack_ := kw.pop("stack"), kw.pop("key", KEY)).responses.create(**kw)
    del stack_
    assert check_error({"error": info.value.body}) == []
    return info.value


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}
                ]
            },
            "input[0].content[0].image_url",
        ),
        ({"input": "x", "temperature": 5}, "temperature"),
        ({"input": "x", "tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
        ),
        ({"input": "x", "background": True}, "background"),
    ],
)
def test_validation_errors_name_the_field(stack: Stack, fields: dict[str, Any], param: str) -> None:
    err = _raises(openai.BadRequestError, stack=stack, model="mock-fast", **fields)
    assert err.param == param and param in err.message


@pytest.mark.parametrize("model", ["mock-fast", "gpt-chat", "claude-test", "gemini-test"])
def test_built_in_tools_are_refused_where_no_upstream_runs_them(stack: Stack, model: str) -> None:
    err = _raises(
        openai.BadRequestError, stack=stack, model=model, input="x", tools=[{"type": "web_search"}]
    )
    assert err.param == "tools[0].type" and "web_search" in err.message


def test_built_in_tools_go_to_a_native_upstream(stack: Stack) -> None:
    r = client(stack).responses.create(
        model="gpt-native",
        input="x",
        tools=[{"type": "web_search"}],
    )
    assert r.status == "completed"
    assert stack.openai.requests[-1].body["tools"] == [{"type": "web_search"}]


def test_auth_scope_and_model_errors(stack: Stack) -> None:
    err = _raises(
        openai.AuthenticationError, stack=stack, key="sk-wrong", model="mock-fast", input="x"
    )
    assert err.status_code == 401
    err = _raises(
        openai.PermissionDeniedError, stack=stack, key=SCOPED_KEY, model="gpt-chat", input="x"
    )
    assert err.code == "model_not_allowed"
    err = _raises(openai.NotFoundError, stack=stack, model="nope", input="x")
    assert err.code == "model_not_found"


@pytest.mark.parametrize("model", ["fake/m", "native/m"])
def test_an_upstream_error_before_output_keeps_its_status(stack: Stack, model: str) -> None:
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as info:
            client(stack).responses.create(
                model=f"{model}@status=429&retry_after=7", input="x", stream=stream
            )
        assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("model", ["fake/m", "native/m"])
@pytest.mark.parametrize("directive", ["error_after=5", "reset_after=5"])
def test_a_failure_mid_stream_is_error_then_response_failed(
    stack: Stack, model: str, directive: str
) -> None:
    body = {"model": f"{model}@{directive}&chunks=8", "input": "x"}
    answer = raw_stream(stack, body)
    assert answer.status_code == 200
    events = check_stream(answer.content)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    with client(stack).responses.stream(model=body["model"], input=body["input"]) as s:
        kinds = [e.type for e in s]
        with pytest.raises(RuntimeError):
            s.get_final_response()
    assert kinds[-1] == "response.failed"


def test_other_paths_and_methods_are_openai_shaped(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    r = httpx.put(f"{stack.url}/responses", headers=headers)
    assert r.status_code == 405 and r.headers["allow"] == "POST" and check_error(r.json()) == []
    r = httpx.post(f"{stack.url}/responses/resp_x", headers=headers)
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"
    r = httpx.get(f"{stack.url}/responses/resp_x/input_items", headers=headers)
    assert r.status_code == 404 and check_error(r.json()) == []
    r = httpx.get(f"{stack.url}/responses/resp_x?stream=true", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    r = httpx.post(f"{stack.url}/responses", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["fake/m", "native/m"])
def test_client_disconnect_cancels_the_upstream(stack: Stack, model: str) -> None:
    before = stack.openai.disconnects
    events = client(stack).responses.create(
        model=f"{model}@chunks=200&chunk_interval_ms=50", input="x", stream=True
    )
    for i, _ in enumerate(events):
        if i == 4:
            break
    events.close()
    assert stack.openai.wait_for_disconnects(before + 1, timeout_s=1.0)


def test_an_upstream_silent_mid_stream_ends_with_response_failed(stack: Stack) -> None:
    """idle_timeout_s is 2 s here: the stream ends with the timeout, never a silent cut."""
    answer = raw_stream(stack, {"model": "native/m@chunks=3&chunk_interval_ms=3000", "input": "x"})
    events = check_stream(answer.content)
    assert events[-2]["type"] == "error" and events[-2]["code"] == "upstream_timeout"
    assert events[-1]["response"]["status"] == "failed"
