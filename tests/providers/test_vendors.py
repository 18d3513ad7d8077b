"""One OpenAI client script, unchanged, against OpenAI-, Anthropic- and Gemini-shaped upstreams.

The gateway runs on a real hypercorn server; the upstreams are the strict fakes of
bench/fakes (they refuse what the real APIs refuse); the client is the official
OpenAI SDK. Every test runs once per vendor and the answers must agree in shape.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest
import trio
from openai import OpenAI
from pydantic import BaseModel

from bench.contract.checks import check_error
from bench.fakes import anthropic as fake_anthropic
from bench.fakes import gemini as fake_gemini
from bench.fakes.server import Reply, Request, serve_http
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import serve_app

KEY = "sk-vendors-test-key"
# A real 1x1 PNG (the fakes check magic bytes) and a minimal PDF.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

CONFIG = """
[state]
sqlite_path = "{state_dir}/gateway.sqlite3"

[routing]
# One attempt: these tests see each upstream failure's own answer and timing. Routing
# (retries, fallbacks, health) has its own tests: tests/api/test_routing.py.
max_attempts = 1

[media]
allow_private_addresses = true    # the test image server is on loopback

[providers.openai]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
first_byte_timeout_s = 2

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"
first_byte_timeout_s = 2

[providers.gemini]
kind = "gemini"
base_url = "{gemini}"
api_key = "{gemini_key}"
first_byte_timeout_s = 2

[models."gpt-test"]
provider = "openai"
upstream_model = "fake-model"

[models."claude-test"]
provider = "anthropic"
upstream_model = "claude-fake"

[models."gemini-test"]
provider = "gemini"
upstream_model = "gemini-2.5-flash"

[[keys]]
name = "t"
key = "{key}"
"""

# Model ids per vendor, and the PROVIDER/MODEL prefix used for fault directives.
VENDORS = {
    "openai": ("gpt-test", "openai/fake-model"),
    "anthropic": ("claude-test", "anthropic/claude-fake"),
    "gemini": ("gemini-test", "gemini/gemini-2.5-flash"),
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        },
    },
}


@dataclass
class Vendors:
    url: str
    image_url: str


async def serve_image(*, task_status: trio.TaskStatus[int]) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.send(200, [("content-type", "image/png")], PNG)

    await serve_http(handler, "127.0.0.1", 0, task_status=task_status)


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vendors]:
    with (
        run_fake_openai() as (_, openai_url),
        fake_anthropic.run_fake_anthropic() as (_, anthropic_url),
        fake_gemini.run_fake_gemini() as (_, gemini_url),
        BackgroundTrio[int](serve_image, name="images") as image_port,
    ):
        path: Path = tmp_path_factory.mktemp("vendors") / "gateway.toml"
        path.write_text(
            CONFIG.format(
                openai=openai_url,
                anthropic=anthropic_url,
                anthropic_key=fake_anthropic.DEFAULT_KEY,
                gemini=gemini_url,
                gemini_key=fake_gemini.DEFAULT_KEY,
                key=KEY,
                state_dir=path.parent,
            )
        )
        app = create_app(load_config(path))
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            yield Vendors(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{image_port}/cat.png")


def client(v: Vendors) -> OpenAI:
    return OpenAI(base_url=v.url, api_key=KEY, max_retries=0, timeout=20)


every_vendor = pytest.mark.parametrize("vendor", list(VENDORS))


@every_vendor
def test_text(vendors: Vendors, vendor: str) -> None:
    r = client(vendors).chat.completions.create(
        model=VENDORS[vendor][0],
        messages=[
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": "Say hello"},
        ],
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=100,
        stop=["\n\n"],
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@every_vendor
def test_stream_with_usage(vendors: Vendors, vendor: str) -> None:
    chunks = list(
        client(vendors).chat.completions.create(
            model=VENDORS[vendor][0],
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@every_vendor
def test_stream_without_usage_has_no_usage_chunk(vendors: Vendors, vendor: str) -> None:
    chunks = list(
        client(vendors).chat.completions.create(
            model=VENDORS[vendor][0],
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@every_vendor
def test_parallel_tool_calls_streamed_and_assembled(vendors: Vendors, vendor: str) -> None:
    with client(vendors).chat.completions.stream(
        model=VENDORS[vendor][0],
        messages=[{"role": "user", "content": "Use get_weather for Paris and get_time for CET"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    ) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert sorted(c.function.name for c in calls) == ["get_time", "get_weather"]
    assert len({c.id for c in calls}) == 2
    for c in calls:
        assert isinstance(json.loads(c.function.arguments), dict)


@every_vendor
def test_two_turn_tool_conversation(vendors: Vendors, vendor: str) -> None:
    c = client(vendors)
    model = VENDORS[vendor][0]
    history: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris? Use get_weather."}
    ]
    first = c.chat.completions.create(model=model, messages=history, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    history.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls or []:
        history.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = c.chat.completions.create(model=model, messages=history, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


@pytest.mark.parametrize("how", ["data-url", "http-url"])
@every_vendor
def test_image(vendors: Vendors, vendor: str, how: str) -> None:
    url = (
        "data:image/png;base64," + base64.b64encode(PNG).decode()
        if how == "data-url"
        else vendors.image_url
    )
    r = client(vendors).chat.completions.create(
        model=VENDORS[vendor][0],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content


@every_vendor
def test_pdf(vendors: Vendors, vendor: str) -> None:
    data = "data:application/pdf;base64," + base64.b64encode(PDF).decode()
    r = client(vendors).chat.completions.create(
        model=VENDORS[vendor][0],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise this document."},
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": data}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content


class Forecast(BaseModel):
    city: str
    temperature_c: float
    sunny: bool


@pytest.mark.parametrize("stream", [False, True])
@every_vendor
def test_json_schema(vendors: Vendors, vendor: str, stream: bool) -> None:
    c = client(vendors)
    messages = [{"role": "user", "content": "Forecast for Rome"}]
    if stream:
        with c.chat.completions.stream(
            model=VENDORS[vendor][0],
            messages=messages,  # type: ignore[arg-type]
            response_format=Forecast,
        ) as s:
            final = s.get_final_completion()
    else:
        final = c.chat.completions.parse(
            model=VENDORS[vendor][0],
            messages=messages,  # type: ignore[arg-type]
            response_format=Forecast,
        )
    assert final.choices[0].finish_reason == "stop"
    assert isinstance(final.choices[0].message.parsed, Forecast)
    assert not final.choices[0].message.tool_calls


@pytest.mark.parametrize(
    ("directive", "exc", "status"),
    [
        ("status=400", openai.BadRequestError, 400),
        ("status=401", openai.AuthenticationError, 401),
        ("status=404", openai.NotFoundError, 404),
        ("status=500", openai.InternalServerError, 502),
        ("status=503", openai.InternalServerError, 503),
    ],
)
@every_vendor
def test_error_classes(
    vendors: Vendors, vendor: str, directive: str, exc: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(exc) as info:
        client(vendors).chat.completions.create(
            model=f"{VENDORS[vendor][1]}@{directive}",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.status_code == status
    assert check_error({"error": info.value.body}) == []


@every_vendor
def test_rate_limit_keeps_retry_after(vendors: Vendors, vendor: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client(vendors).chat.completions.create(
            model=f"{VENDORS[vendor][1]}@status=429&retry_after=7",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.response.headers["retry-after"] == "7"


@every_vendor
def test_overloaded_is_503(vendors: Vendors, vendor: str) -> None:
    status = {"openai": 503, "anthropic": 529, "gemini": 503}[vendor]
    with pytest.raises(openai.InternalServerError) as info:
        client(vendors).chat.completions.create(
            model=f"{VENDORS[vendor][1]}@status={status}",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.status_code == 503


@every_vendor
def test_upstream_timeout_is_504(vendors: Vendors, vendor: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client(vendors).chat.completions.create(
            model=f"{VENDORS[vendor][1]}@hang",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    assert info.value.status_code == 504
    assert time.monotonic() - t0 < 6


@every_vendor
def test_mid_stream_vendor_error(vendors: Vendors, vendor: str) -> None:
    r = httpx.post(
        f"{vendors.url}/chat/completions",
        json={
            "model": f"{VENDORS[vendor][1]}@error_after=3&chunks=8",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    )
    assert r.status_code == 200
    events = [e[6:] for e in r.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] != "[DONE]"
    assert check_error(json.loads(events[-1])) == []
    with pytest.raises(openai.APIError):
        for _ in client(vendors).chat.completions.create(
            model=f"{VENDORS[vendor][1]}@error_after=3&chunks=8",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        ):
            pass
