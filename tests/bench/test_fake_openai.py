"""The fake OpenAI upstream, its HTTP server and its thread runner, over real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import trio
import trio.testing
from openai.types.chat import ChatCompletionMessageParam

from bench.__main__ import main as bench_main
from bench.fakes.directives import Behaviour, DirectiveError, apply_knobs, split_model
from bench.fakes.openai import FakeOpenAI
from bench.fakes.server import CoarseTimer, Reply, Request, serve_http
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from bench.loadgen.client import StreamSink
from bench.loadgen.metrics import RequestRecord

KEY = "sk-fake-upstream"
USER = [{"role": "user", "content": "Say hello to the fake upstream, please."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
        },
    },
}


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, httpx.Client]]:
    with (
        run_fake_openai() as (server, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        yield server, client


def chat(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/chat/completions", json={"model": "gpt-fake", "messages": USER, **body})


def sse_events(text: str) -> list[str]:
    """Split an SSE body into its data payloads, checking the framing on the way."""
    assert text.endswith("\n\n")
    payloads = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        assert "\n" not in block, block  # one data line per event, no event: lines
        payloads.append(block.removeprefix("data: "))
    return payloads


def stream_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_events(response.text)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


# -- answers ------------------------------------------------------------------


def test_non_stream_answer_has_openai_shape(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    response = chat(client, model="gpt-fake@chunks=3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-fake"  # directives are not echoed
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "This is a"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_truncates_with_finish_reason_length(
    fake: tuple[FakeOpenAI, httpx.Client],
) -> None:
    _, client = fake
    body = chat(client, max_completion_tokens=2).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_stream_shape_and_framing(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    chunks = stream_chunks(chat(client, model="gpt-fake@chunks=7", stream=True))
    assert len(chunks) == 1 + 7 + 1
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(contents) == 7 and all(contents)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    non_stream = chat(client, model="gpt-fake@chunks=7").json()
    assert "".join(contents) == non_stream["choices"][0]["message"]["content"]


def test_stream_include_usage_adds_usage_chunk(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    options = {"include_usage": True}
    chunks = stream_chunks(chat(client, stream=True, stream_options=options))
    *choice_chunks, usage_chunk = chunks
    assert all(c["usage"] is None and c["choices"] for c in choice_chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5
    off = stream_chunks(chat(client, stream=True, stream_options={"include_usage": False}))
    assert all("usage" not in c and c["choices"] for c in off)


def test_tool_call_stream_assembles(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    chunks = stream_chunks(chat(client, stream=True, tools=[WEATHER_TOOL]))
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    first, *rest = fragments
    assert first["index"] == 0 and first["type"] == "function"
    assert first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) >= 2
    assert all(set(f) == {"index", "function"} and f["index"] == 0 for f in rest)
    arguments = json.loads("".join(f["function"]["arguments"] for f in rest))
    assert arguments == {"city": "fake", "unit": "celsius", "days": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    message = chat(client, tools=[WEATHER_TOOL]).json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    (call,) = message["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == arguments

    text = chat(client, tools=[WEATHER_TOOL], tool_choice="none").json()["choices"][0]
    assert text["finish_reason"] == "stop" and "tool_calls" not in text["message"]


TIME_TOOL = {"type": "function", "function": {"name": "getLocalTime"}}


def test_parallel_tool_calls_stream_like_openai(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    said = [{"role": "user", "content": "What time is it in Oslo, and the weather?"}]
    tools = [WEATHER_TOOL, TIME_TOOL]
    chunks = stream_chunks(chat(client, messages=said, tools=tools, stream=True))
    fragments = [f for c in chunks[1:-1] for f in c["choices"][0]["delta"]["tool_calls"]]
    openings = [f for f in fragments if "id" in f]
    assert [(f["index"], f["function"]) for f in openings] == [
        (0, {"name": "getLocalTime", "arguments": ""}),
        (1, {"name": "get_weather", "arguments": ""}),
    ]
    assert all(f["type"] == "function" for f in openings)
    assert len({f["id"] for f in openings}) == 2
    rest = [f for f in fragments if "id" not in f]
    assert all(set(f) == {"index", "function"} for f in rest)
    arguments = [
        "".join(f["function"]["arguments"] for f in rest if f["index"] == k) for k in (0, 1)
    ]
    assert [json.loads(a) for a in arguments] == [
        {},
        {"city": "fake", "unit": "celsius", "days": 1},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    message = chat(client, messages=said, tools=tools).json()["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["getLocalTime", "get_weather"]
    serial = chat(client, messages=said, tools=tools, parallel_tool_calls=False).json()
    (call,) = serial["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "getLocalTime"
    unnamed = chat(client, tools=tools).json()["choices"][0]["message"]
    assert [c["function"]["name"] for c in unnamed["tool_calls"]] == ["get_weather"]


FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["city", "temperature_c", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format(fake: tuple[FakeOpenAI, httpx.Client], stream: bool) -> None:
    _, client = fake

    def content(response_format: dict[str, Any]) -> Any:
        response = chat(client, response_format=response_format, stream=stream)
        if not stream:
            return json.loads(response.json()["choices"][0]["message"]["content"])
        chunks = stream_chunks(response)
        return json.loads("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))

    spec = {"name": "forecast", "strict": True, "schema": FORECAST}
    jsonschema.validate(content({"type": "json_schema", "json_schema": spec}), FORECAST)
    assert isinstance(content({"type": "json_object"}), dict)
    assert isinstance(content({"type": "json_schema", "json_schema": {"name": "any"}}), dict)


def test_models_endpoint(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    listing = client.get("/models").json()
    assert listing["object"] == "list"
    assert listing["data"][0]["id"] == "fake-model"
    assert listing["data"][0]["object"] == "model"


# -- checks like OpenAI's -----------------------------------------------------


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param


def test_auth_failures(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    url = str(client.base_url).rstrip("/")
    missing = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": USER})
    assert_error(missing, 401)
    wrong = httpx.post(
        f"{url}/chat/completions",
        json={"model": "m", "messages": USER},
        headers={"authorization": "Bearer sk-wrong-key-123456"},
    )
    assert_error(wrong, 401)
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-123456" not in wrong.text  # the key is masked
    assert_error(httpx.get(f"{url}/models"), 401)


def test_request_checks(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    bad_json = client.post("/chat/completions", content=b"{not json")
    assert_error(bad_json, 400)
    assert_error(client.post("/chat/completions", json={"messages": USER}), 400, "model")
    assert_error(client.post("/chat/completions", json={"model": "m"}), 400, "messages")
    assert_error(chat(client, messages=[]), 400, "messages")
    assert_error(chat(client, stream_options={"include_usage": True}), 400, "stream_options")
    assert_error(chat(client, model="m@no_such_knob=1"), 400, "model")
    assert_error(client.post("/nowhere", json={}), 404)
    assert_error(client.get("/chat/completions"), 405)


def test_strict_roles() -> None:
    developer = [{"role": "developer", "content": "Be brief."}, *USER]
    with (
        run_fake_openai(strict_roles=True) as (_, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        assert_error(chat(client, messages=developer), 400, "messages[0].role")
        assert_error(chat(client, max_completion_tokens=5), 400, "max_completion_tokens")
        assert chat(client, max_tokens=5).status_code == 200
    with (
        run_fake_openai() as (_, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        assert chat(client, messages=developer, max_completion_tokens=5).status_code == 200


# -- injected behaviour -------------------------------------------------------


def test_status_directive_with_retry_after(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    limited = chat(client, model="m@status=429&retry_after=7", stream=True)
    assert_error(limited, 429)
    assert limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    custom = chat(client, model="m@status=503&error_type=overloaded&error_message=busy")
    assert_error(custom, 503)
    assert custom.json()["error"]["type"] == "overloaded"
    assert custom.json()["error"]["message"] == "busy"
    assert "retry-after" not in custom.headers


def test_reset_after_breaks_the_stream(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    received = b""
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        client.stream(
            "POST",
            "/chat/completions",
            json={"model": "m@reset_after=3&chunks=10", "messages": USER, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        for part in response.iter_raw():
            received += part
    payloads = sse_events(received.decode())
    assert len(payloads) == 3
    assert "[DONE]" not in payloads
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        chat(client, model="m@reset_after=0")  # non-stream: reset instead of answered


def test_reset_and_error_positions_past_the_end(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    body = {"model": "m@chunks=2&reset_after=99", "messages": USER, "stream": True}
    received = b""
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        for part in response.iter_raw():
            received += part
    assert len(sse_events(received.decode())) == 4  # every event, then no [DONE]
    payloads = sse_events(chat(client, model="m@chunks=2&error_after=99", stream=True).text)
    assert len(payloads) == 6
    assert "error" in json.loads(payloads[4]) and payloads[5] == "[DONE]"


def test_error_after_sends_in_band_error(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    _, client = fake
    response = chat(client, model="m@error_after=2&error_message=boom", stream=True)
    assert response.status_code == 200
    payloads = sse_events(response.text)
    assert len(payloads) == 4
    assert json.loads(payloads[1])["choices"][0]["delta"]["content"]
    error = json.loads(payloads[2])["error"]
    assert error["message"] == "boom" and set(error) == {"message", "type", "param", "code"}
    assert payloads[3] == "[DONE]"


def test_hang_times_out_the_client_and_is_seen_as_disconnect(
    fake: tuple[FakeOpenAI, httpx.Client],
) -> None:
    server, client = fake
    with pytest.raises(httpx.ReadTimeout):
        body = {"model": "m@hang", "messages": USER}
        client.post("/chat/completions", json=body, timeout=0.3)
    started = time.monotonic()
    assert server.wait_for_disconnects(1, timeout_s=5.0)
    assert time.monotonic() - started < 1.0


def test_disconnect_mid_stream_is_detected(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    server, client = fake
    body = {"model": "m@chunks=500&chunk_interval_ms=20", "messages": USER, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    started = time.monotonic()
    assert server.wait_for_disconnects(1, timeout_s=5.0)
    assert time.monotonic() - started < 1.0
    assert server.disconnects == 1


def test_requests_are_recorded(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    server, client = fake
    before = time.monotonic()
    body = {"model": "gpt-fake", "messages": USER, "temperature": 0.5}
    client.post("/chat/completions", json=body, headers={"X-Trace": "abc"})
    (recorded,) = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["x-trace"] == "abc"
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.body == body
    assert before <= recorded.time <= time.monotonic()
    assert server.wait_for_requests(1, timeout_s=0.1)
    assert server.request_count == 1


def test_fail_rate_is_evenly_spread_and_seedable() -> None:
    with (
        run_fake_openai(fail_rate=0.5) as (_, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        assert [chat(client).status_code for _ in range(6)] == [200, 500] * 3
    with (
        run_fake_openai(fail_rate=0.3, seed=7) as (_, url),
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
    ):
        statuses = [chat(client).status_code for _ in range(40)]
        assert set(statuses) == {200, 500}


def test_pacing_delays(fake: tuple[FakeOpenAI, httpx.Client]) -> None:
    server, client = fake
    started = time.monotonic()
    chat(client, model="m@ttft_ms=100&chunks=4&chunk_interval_ms=30", stream=True)
    assert time.monotonic() - started >= 0.1 + 3 * 0.03
    server.configure(latency_ms=120)
    started = time.monotonic()
    chat(client)
    assert time.monotonic() - started >= 0.12


def test_openai_sdk_against_the_fake() -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello."}]
    with run_fake_openai() as (_, url):
        sdk = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        completion = sdk.chat.completions.create(model="gpt-fake", messages=messages)
        assert completion.choices[0].message.content == "This is a fake answer"
        assert completion.usage is not None and completion.usage.completion_tokens == 5
        stream = sdk.chat.completions.create(
            model="gpt-fake",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        for chunk in stream:
            pieces += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(pieces) == "This is a fake answer"
        assert usage is not None and usage.total_tokens > 5
        with pytest.raises(openai.APIError, match="boom"):
            for _ in sdk.chat.completions.create(
                model="m@error_after=1&error_message=boom",
                messages=messages,
                stream=True,
            ):
                pass
        sdk.close()


# -- the HTTP server ------------------------------------------------------------


def raw_exchange(url: str, data: bytes, until: bytes) -> bytes:
    """Send raw bytes to the fake and read until `until` has been seen (or EOF)."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while until not in received:
            part = sock.recv(65536)
            if not part:
                break
            received += part
        return received


def test_server_keep_alive_and_chunked_request_body() -> None:
    body = json.dumps({"model": "m", "messages": USER}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + KEY.encode()
    first = head + b"\r\ntransfer-encoding: chunked\r\n\r\n" + chunked
    second = head + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    with run_fake_openai() as (server, url):
        # Both requests on one connection, the second pipelined behind the first.
        answer = raw_exchange(url, first + second, until=b"req_0000000000000002")
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert [r.body for r in server.requests] == [json.loads(body)] * 2


def test_server_http10_stream_is_close_delimited() -> None:
    body = json.dumps({"model": "m@chunks=3", "messages": USER, "stream": True}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer %b\r\n"
        b"content-length: %d\r\n\r\n%b" % (KEY.encode(), len(body), body)
    )
    with run_fake_openai() as (_, url):
        answer = raw_exchange(url, request, until=b"\x00never")  # read until close
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert sse_events(payload.decode())[-1] == "[DONE]"


def test_server_answers_expect_100_continue() -> None:
    body = json.dumps({"model": "m", "messages": USER}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %b\r\n"
        b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % (KEY.encode(), len(body))
    )
    with run_fake_openai() as (_, url):
        port = httpx.URL(url).port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head)
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
            sock.sendall(body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_server_bounds_and_bad_requests() -> None:
    with run_fake_openai() as (_, url):
        oversized = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n"
        )
        assert raw_exchange(url, oversized, until=b"}}").startswith(b"HTTP/1.1 413 ")
        huge_header = (
            b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 300_000 + b"\r\n\r\n"
        )
        assert raw_exchange(url, huge_header, until=b"}}").startswith(b"HTTP/1.1 431 ")
        assert raw_exchange(url, b"NONSENSE\r\n\r\n", until=b"}}").startswith(b"HTTP/1.1 400 ")


async def test_serve_http_handler_failure_is_a_500_and_server_survives() -> None:
    async def handler(request: Request, reply: Reply) -> None:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        await reply.start(200, [("content-type", "text/plain")])
        await reply.write(b"a")
        await reply.end(b"b")

    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, handler, "127.0.0.1", 0))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/boom")).status_code == 500
            ok = await client.get("/ok")
            assert ok.text == "ab" and ok.headers["transfer-encoding"] == "chunked"
        nursery.cancel_scope.cancel()


async def test_coarse_timer_wakes_each_sleeper_on_its_millisecond(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = CoarseTimer()
    woke: dict[float, float] = {}

    async def sleeper(delay: float, after: float) -> None:
        await trio.sleep(after)  # later sleepers with earlier deadlines force a re-plan
        deadline = trio.current_time() + delay
        await timer.sleep_until(deadline)
        woke[deadline] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for delay, after in [(0.5, 0.0), (0.1, 0.01), (0.1, 0.01), (0.0123, 0.2), (0.0, 0.3)]:
            nursery.start_soon(sleeper, delay, after)
        with trio.move_on_after(0.05):  # a cancelled sleeper leaves the others unharmed
            await timer.sleep_until(trio.current_time() + 10)
    assert len(woke) == 4  # two sleepers shared one deadline
    for deadline, at in woke.items():
        assert deadline <= at <= deadline + 0.001


# -- directives, thread runner, command line ------------------------------------------


def test_directive_parsing() -> None:
    assert split_model("gpt-4o") == ("gpt-4o", {})
    assert split_model("claude-3@20240229") == ("claude-3@20240229", {})
    assert split_model("a@b@status=429&hang") == ("a@b", {"status": "429", "hang": "true"})
    behaviour = apply_knobs(Behaviour(tokens_per_s=100), {"chunk_interval_ms": "5"})
    assert behaviour.chunk_interval_s == 0.005 and behaviour.tokens_per_s is None
    assert apply_knobs(Behaviour(), {"tokens_per_s": 50}).chunk_interval_s == 0.02
    for bad in ({"status": "200"}, {"fail_rate": "2"}, {"chunks": "x"}, {"hang": "maybe"}):
        with pytest.raises(DirectiveError):
            apply_knobs(Behaviour(), bad)
    with pytest.raises(DirectiveError):
        split_model("m@status=1&&hang")


def test_background_trio_reports_start_and_thread_failures() -> None:
    with run_fake_openai() as (_, url):
        taken = httpx.URL(url).port
        assert taken is not None
        with (
            pytest.raises(OSError),
            BackgroundTrio[int](partial(FakeOpenAI().serve, "127.0.0.1", taken)),
        ):
            pass

    async def crashes(*, task_status: trio.TaskStatus[str]) -> None:
        task_status.started("up")
        await trio.sleep(0.05)
        raise ValueError("crashed later")

    with pytest.raises(ValueError, match="crashed later"), BackgroundTrio[str](crashes) as value:
        assert value == "up"
        time.sleep(0.2)


def test_background_trio_refuses_a_serve_function_that_never_started() -> None:
    async def returns_early(*, task_status: trio.TaskStatus[int]) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(RuntimeError, match="without calling"), BackgroundTrio(returns_early):
        pass


def test_cli_rejects_unknown_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        bench_main(["upstream", "--kind", "bedrock", "--port", "0"])
    assert info.value.code == 2
    assert "invalid choice: 'bedrock'" in capsys.readouterr().err


def interruptible() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C delivers it. A shell that runs a job in
    the background (`make test &`) starts it with SIGINT ignored, which Python keeps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "bench", "upstream", "--port", "0", "--chunks", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            answer = httpx.post(
                f"{url}/chat/completions",
                json={"model": "m", "messages": USER},
                headers={"authorization": f"Bearer {KEY}"},
            )
            assert answer.json()["usage"]["completion_tokens"] == 2
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0  # generous: a loaded CI machine
        finally:
            process.kill()


@pytest.mark.parametrize(
    ("kind", "path", "suffix", "headers", "body"),
    [
        (
            "anthropic",
            "/messages",
            "/v1",
            {"x-api-key": "k", "anthropic-version": "2023-06-01"},
            {"model": "claude-fake", "max_tokens": 50, "messages": USER},
        ),
        (
            "gemini",
            "/models/gemini-2.5-flash:generateContent",
            "/v1beta",
            {"x-goog-api-key": "k"},
            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        ),
    ],
)
def test_cli_serves_every_vendor_kind(
    kind: str, path: str, suffix: str, headers: dict[str, str], body: dict[str, object]
) -> None:
    command = [sys.executable, "-m", "bench", "upstream", "--kind", kind, "--port", "0"]
    command += ["--key", "k"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            assert url.endswith(suffix)
            answer = httpx.post(f"{url}{path}", json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0  # generous: a loaded CI machine
        finally:
            process.kill()


def test_paced_like_a_model_draws_its_length_and_gaps(
    fake: tuple[FakeOpenAI, httpx.Client],
) -> None:
    """chunks_max draws each stream's length; chunk_jitter_ms spreads the gaps, each at
    least interval - jitter on the fake's schedule (a late fake catches up at once)."""
    _, client = fake
    model = "m@chunks=2&chunks_max=9&chunk_interval_ms=10&chunk_jitter_ms=5"
    lengths = set()
    for _ in range(12):
        sent = time.monotonic()
        with client.stream(
            "POST", "/chat/completions", json={"model": model, "messages": USER, "stream": True}
        ) as response:
            arrivals = [
                time.monotonic()
                for line in response.iter_lines()
                if line.startswith("data: {") and '"content":"' in line
            ]
        lengths.add(len(arrivals))
        assert arrivals[-1] - sent >= (len(arrivals) - 2) * 0.005
    assert lengths <= set(range(3, 11)) and len(lengths) > 1, lengths  # the role chunk too


def test_a_stamped_stream_says_when_each_token_went_out(
    fake: tuple[FakeOpenAI, httpx.Client],
) -> None:
    """`stamp`: each content piece is its write's time (CLOCK_MONOTONIC ns, the same in
    every process), so the load generator's `StreamSink` measures each token's transit."""
    _, client = fake
    record = RequestRecord(scheduled=0.0, start=0.0)
    sink = StreamSink(record, 0.0)
    body = {"model": "m@chunks=5&chunk_interval_ms=20&stamp=1", "messages": USER, "stream": True}
    before = time.monotonic_ns()
    with client.stream("POST", "/chat/completions", json=body) as response:
        for raw in response.iter_raw():
            sink.data(raw, 0.0)
    sink.end(0.0)
    after = time.monotonic_ns()
    assert record.error is None and record.chunks == 5
    assert len(sink.transits) == 5
    assert all(0 <= t < (after - before) / 1e9 for t in sink.transits)


@pytest.mark.parametrize("directive", ["chunks_max=-1", "chunk_jitter_ms=-2", "chunks_max=x"])
def test_bad_model_pacing_directives_are_refused(
    fake: tuple[FakeOpenAI, httpx.Client], directive: str
) -> None:
    _, client = fake
    response = chat(client, model=f"m@{directive}", stream=True)
    assert response.status_code == 400
    assert directive.split("=")[0] in response.json()["error"]["message"]
