"""Routing end to end: the official SDK -> the served gateway -> the fake vendors.

Faults come from the fakes' directives in the upstream model name (bench/fakes/
directives.py), so each target below is its own deployment (`openai/fake-model@...`)
and the fakes' recorded requests say exactly which upstream saw what. Every test uses
models of its own: health state is per deployment and lives as long as the gateway.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from bench.fakes import anthropic as fake_anthropic
from bench.fakes import gemini as fake_gemini
from bench.fakes.anthropic import FakeAnthropic
from bench.fakes.gemini import FakeGemini
from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import free_port, serve_app

KEY = "sk-routing-test-key"
SCOPED = "sk-routing-scoped-key"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

CONFIG = """
[state]
sqlite_path = "{state_dir}/gateway.sqlite3"

[routing]
backoff_base_ms = 10

[providers.openai]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
first_byte_timeout_s = 2

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"

[providers.gemini]
kind = "gemini"
base_url = "{gemini}"
api_key = "{gemini_key}"

[providers.slow]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
first_byte_timeout_s = 0.3
total_timeout_s = 1

[models."spread"]
targets = ["openai/fake-model@status=500&chunks=2", "openai/fake-model@chunks=3"]

[models."weights"]
targets = [
  {{ model = "openai/fake-model@chunks=4", weight = 3 }},
  {{ model = "openai/fake-model@chunks=5", weight = 1 }},
]

[models."limited"]
strategy = "priority"
targets = ["openai/fake-model@status=429&retry_after=60", "openai/fake-model@chunks=6"]

[models."chain"]
provider = "openai"
upstream_model = "fake-model@status=503&chunks=7"
price_input_per_mtok = 100
price_output_per_mtok = 100
fallbacks = ["claude-down", "gemini-ok"]

[models."chain-stream"]
provider = "openai"
upstream_model = "fake-model@status=500&chunks=8"
fallbacks = ["claude-stream-down", "gemini-ok"]

[models."claude-down"]
provider = "anthropic"
upstream_model = "claude-fake@status=529"
price_input_per_mtok = 100
price_output_per_mtok = 100

[models."claude-stream-down"]
provider = "anthropic"
upstream_model = "claude-fake@status=503&chunks=2"

[models."one-down"]
provider = "openai"
upstream_model = "fake-model@status=502&chunks=9"
fallbacks = ["claude-ok", "gemini-ok"]

[models."claude-ok"]
provider = "anthropic"
upstream_model = "claude-fake"

[models."gemini-ok"]
provider = "gemini"
upstream_model = "gemini-2.5-flash"
price_input_per_mtok = 1
price_output_per_mtok = 2

[models."mid-stream"]
strategy = "priority"
targets = ["openai/fake-model@reset_after=2&chunks=10", "openai/fake-model@chunks=11"]

[models."sent-once"]
strategy = "priority"
targets = ["openai/fake-model@reset_after=0&chunks=12", "openai/fake-model@chunks=13"]

[models."sent-again"]
strategy = "priority"
targets = ["openai/fake-model@reset_after=0&chunks=14", "openai/fake-model@chunks=15"]
retry_after_send = true

[models."stream-reset"]
strategy = "priority"
targets = ["openai/fake-model@reset_after=0&chunks=16", "openai/fake-model@chunks=17"]

[models."all-fail"]
targets = ["openai/fake-model@status=500&chunks=18", "openai/fake-model@status=502&chunks=19"]
retry_budget_ratio = 0.2
retry_budget_min_per_s = 0

[models."hangs"]
strategy = "priority"
max_attempts = 5
targets = [
  "slow/fake-model@hang&chunks=20",
  "slow/fake-model@hang&chunks=21",
  "slow/fake-model@hang&chunks=22",
]

[models."dead-first"]
strategy = "priority"
targets = ["dead/m", "openai/fake-model@chunks=23"]

[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:{closed_port}/v1"
api_key = "unused"

[[keys]]
name = "all"
key = "{key}"

[[keys]]
name = "scoped"
key = "{scoped}"
models = ["spread", "openai/*"]
"""


@dataclass
class Routed:
    url: str
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini
    sqlite: Path


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    with (
        run_fake_openai() as (oai, openai_url),
        fake_anthropic.run_fake_anthropic() as (ant, anthropic_url),
        fake_gemini.run_fake_gemini() as (gem, gemini_url),
    ):
        path: Path = tmp_path_factory.mktemp("routing") / "gateway.toml"
        path.write_text(
            CONFIG.format(
                openai=openai_url,
                anthropic=anthropic_url,
                anthropic_key=fake_anthropic.DEFAULT_KEY,
                gemini=gemini_url,
                gemini_key=fake_gemini.DEFAULT_KEY,
                closed_port=free_port(),
                key=KEY,
                scoped=SCOPED,
                state_dir=path.parent,
            )
        )
        app = create_app(load_config(path))
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            yield Routed(
                f"http://127.0.0.1:{port}/v1", oai, ant, gem, path.parent / "gateway.sqlite3"
            )


@pytest.fixture(scope="module")
def sdk(routed: Routed) -> Iterator[OpenAI]:
    """The official SDK, closed when the module ends (a client left to the garbage
    collector may have its sockets finalized first: ResourceWarnings)."""
    with OpenAI(base_url=routed.url, api_key=KEY, max_retries=0, timeout=20) as client:
        yield client


def seen(fake: FakeOpenAI | FakeAnthropic | FakeGemini, model: str) -> list[Any]:
    """The request bodies `fake` received for the upstream model `model`."""
    out = []
    for request in fake.requests:
        body = request.body if isinstance(request.body, dict) else {}
        name = body.get("model") or request.path.rsplit("/", 1)[-1].split(":")[0]
        if name == model:
            out.append(body)
    return out


def served(sdk: OpenAI, model: str, **kw: Any) -> tuple[str, int, Any]:
    """One non-streamed request: the deployment that served it, its attempts, the body."""
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kw)
    headers = raw.headers
    return headers["x-gateway-deployment"], int(headers["x-gateway-attempts"]), raw.parse()


def ledger_row(r: Routed, request_id: str) -> dict[str, Any]:
    """The final usage row of a request, once the ledger writer has committed it."""
    deadline = time.monotonic() + 5
    while True:
        conn = sqlite3.connect(r.sqlite)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
        if row is not None and row["status"] != "pending":
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"no final ledger row for {request_id}")
        time.sleep(0.05)


# ----------------------------------------------------------------- load balancing


def test_a_target_that_always_fails_beside_a_healthy_one_costs_no_request(
    routed: Routed,
    sdk: OpenAI,
) -> None:
    deployments = [served(sdk, "spread")[0] for _ in range(60)]  # each one succeeded
    assert set(deployments) == {"openai/fake-model@chunks=3"}
    failing = len(seen(routed.openai, "fake-model@status=500&chunks=2"))
    # Five failures in a row eject it; after its cooldown one probe goes through.
    assert 1 <= failing <= 10


def test_weights_hold_end_to_end(routed: Routed, sdk: OpenAI) -> None:
    picks = [served(sdk, "weights")[0] for _ in range(200)]
    heavy = picks.count("openai/fake-model@chunks=4") / len(picks)
    assert abs(heavy - 0.75) < 0.1, heavy  # 3:1; the router's own test checks it closely


def test_a_429_with_a_long_retry_after_ejects_the_target_and_traffic_moves(
    routed: Routed,
    sdk: OpenAI,
) -> None:
    first = served(sdk, "limited")
    assert first[:2] == ("openai/fake-model@chunks=6", 2)  # tried the 429 first, moved on
    later = [served(sdk, "limited")[:2] for _ in range(10)]
    assert set(later) == {("openai/fake-model@chunks=6", 1)}  # it stays out for 60 s
    assert len(seen(routed.openai, "fake-model@status=429&retry_after=60")) == 1


def test_a_dead_target_is_passed_over(routed: Routed, sdk: OpenAI) -> None:
    assert served(sdk, "dead-first")[:2] == ("openai/fake-model@chunks=23", 2)


# ----------------------------------------------------------------- fallbacks


def test_fallback_from_openai_to_anthropic_when_openai_fails(routed: Routed, sdk: OpenAI) -> None:
    deployment, attempts, completion = served(sdk, "one-down")
    assert (deployment, attempts) == ("claude-ok", 2)
    assert completion.choices[0].message.content
    [claude] = seen(routed.anthropic, "claude-fake")[-1:]
    assert claude["max_tokens"] and claude["messages"][0]["role"] == "user"  # a Claude request


def test_fallback_openai_anthropic_gemini_when_each_fails(routed: Routed, sdk: OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="chain", messages=HELLO)
    completion = raw.parse()
    assert raw.headers["x-gateway-deployment"] == "gemini-ok"
    assert raw.headers["x-gateway-attempts"] == "3"
    assert completion.choices[0].message.content
    assert len(seen(routed.openai, "fake-model@status=503&chunks=7")) == 1
    [claude] = seen(routed.anthropic, "claude-fake@status=529")
    assert "max_tokens" in claude and "messages" in claude  # built for Claude, not OpenAI's
    gemini = seen(routed.gemini, "gemini-2.5-flash")
    assert gemini and "contents" in gemini[-1]  # and for Gemini from the same original body
    row = ledger_row(routed, completion.id)
    assert (row["model"], row["deployment"], row["provider"], row["attempts"]) == (
        "chain",
        "gemini-ok",
        "gemini",
        3,
    )
    usage = completion.usage
    assert usage is not None
    # Charged at the price of the deployment that answered (1 and 2 micro-dollars a token).
    assert row["cost_micros"] == usage.prompt_tokens * 1 + usage.completion_tokens * 2


def test_a_streamed_fallback_names_its_deployment_in_the_stream_headers(routed: Routed) -> None:
    with httpx.stream(
        "POST",
        f"{routed.url}/chat/completions",
        json={"model": "chain-stream", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    ) as r:
        assert r.status_code == 200
        assert r.headers["x-gateway-deployment"] == "gemini-ok"
        assert r.headers["x-gateway-attempts"] == "3"
        text = r.read().decode()
    assert text.endswith("data: [DONE]\n\n")


def test_the_request_may_bring_its_own_fallbacks(routed: Routed, sdk: OpenAI) -> None:
    deployment, attempts, _ = served(
        sdk, "openai/fake-model@status=503&chunks=24", extra_body={"models": ["gemini-ok"]}
    )
    assert (deployment, attempts) == ("gemini-ok", 2)
    [sent] = seen(routed.openai, "fake-model@status=503&chunks=24")
    assert "models" not in sent  # never forwarded upstream


def test_own_fallbacks_are_checked_against_the_key(routed: Routed, sdk: OpenAI) -> None:
    with (
        OpenAI(base_url=routed.url, api_key=SCOPED, max_retries=0) as scoped,
        pytest.raises(openai.PermissionDeniedError) as denied,
    ):
        scoped.chat.completions.create(
            model="spread", messages=HELLO, extra_body={"models": ["openai/x", "gemini-ok"]}
        )
    assert denied.value.body["param"] == "models[1]"  # type: ignore[index]
    assert "gemini-ok" in denied.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(
            model="spread", messages=HELLO, extra_body={"models": ["no-such-model"]}
        )
    assert missing.value.body["param"] == "models[0]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(
            model="spread", messages=HELLO, extra_body={"models": "gemini-ok"}
        )
    assert bad.value.body["param"] == "models"  # type: ignore[index]


# ----------------------------------------------------------------- what is never retried


def test_a_mid_stream_reset_is_never_retried(routed: Routed, sdk: OpenAI) -> None:
    stream = sdk.chat.completions.create(model="mid-stream", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert len(seen(routed.openai, "fake-model@reset_after=2&chunks=10")) == 1
    assert seen(routed.openai, "fake-model@chunks=11") == []


def test_a_reset_after_a_non_streamed_request_was_sent_is_sent_once(
    routed: Routed, sdk: OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="sent-once", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.response.headers["x-gateway-attempts"] == "1"
    assert len(seen(routed.openai, "fake-model@reset_after=0&chunks=12")) == 1
    assert seen(routed.openai, "fake-model@chunks=13") == []  # nor sent elsewhere


def test_a_model_may_opt_in_to_retrying_after_the_request_was_sent(
    routed: Routed, sdk: OpenAI
) -> None:
    assert served(sdk, "sent-again")[:2] == ("openai/fake-model@chunks=15", 2)


def test_a_stream_reset_before_its_first_byte_is_retried(routed: Routed) -> None:
    with httpx.stream(
        "POST",
        f"{routed.url}/chat/completions",
        json={"model": "stream-reset", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    ) as r:
        assert r.status_code == 200
        assert r.headers["x-gateway-deployment"] == "openai/fake-model@chunks=17"
        r.read()


def test_a_4xx_comes_back_at_once_from_the_deployment_that_answered(
    routed: Routed, sdk: OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="openai/fake-model@status=400&chunks=25",
            messages=HELLO,
            extra_body={"models": ["gemini-ok"]},
        )
    headers = info.value.response.headers
    assert headers["x-gateway-deployment"] == "openai/fake-model@status=400&chunks=25"
    assert headers["x-gateway-attempts"] == "1"


# ----------------------------------------------------------------- budget and deadline


def test_the_retry_budget_caps_retries_when_every_upstream_fails(
    routed: Routed, sdk: OpenAI
) -> None:
    requests = 50
    for _ in range(requests):
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="all-fail", messages=HELLO)
    attempts = len(seen(routed.openai, "fake-model@status=500&chunks=18")) + len(
        seen(routed.openai, "fake-model@status=502&chunks=19")
    )
    # Without a budget 3 attempts each (150); with a ratio of 0.2 and no floor, at most
    # 1.2x the client's requests (docs/reliability.md R2).
    assert requests < attempts <= requests * 1.2


@pytest.mark.parametrize("stream", [False, True])
def test_the_deadline_holds_across_the_chain(routed: Routed, sdk: OpenAI, stream: bool) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="hangs", messages=HELLO, stream=stream)
    elapsed = time.monotonic() - t0
    assert info.value.status_code == 504
    assert 0.9 < elapsed < 1.5, elapsed  # total_timeout_s = 1 for the whole chain
    attempts = int(info.value.response.headers["x-gateway-attempts"])
    if stream:  # a 0.3 s first-byte timeout each: three or four fit in the second
        assert 3 <= attempts <= 4
    else:  # a non-streamed answer has no first-byte timeout: one attempt takes it all
        assert attempts == 1


def test_errors_are_openai_shaped_with_the_routing_headers(routed: Routed) -> None:
    r = httpx.post(
        f"{routed.url}/chat/completions",
        json={"model": "sent-once", "messages": HELLO},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    )
    assert r.status_code == 502
    assert set(orjson.loads(r.content)["error"]) == {"message", "type", "param", "code"}
    assert r.headers["x-gateway-deployment"] == "openai/fake-model@reset_after=0&chunks=12"
