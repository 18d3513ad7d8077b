"""Logs as an operator reads them: one access line per request, operator events once,
the request id everywhere; against `gateway serve` processes and their stderr."""

from __future__ import annotations

import io
import logging
import re
import sqlite3
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from bench.fakes.threaded import run_fake_openai
from gateway.observability import logs
from gateway.observability.record import CURRENT, RequestRecord, request_id_from
from gateway.observability.traces import NO_SPAN
from tests.conftest import KEY_ALL, UPSTREAM_KEY, Stack, free_port
from tests.observability.served import serve

KEY = "sk-logs-test-0123456789"
CONFIG = """
[server]
graceful_timeout_s = 2
[state]
sqlite_path = "{dir}/gw.sqlite3"
{state_extra}
[providers.fake]
kind = "openai"
base_url = "{fake}"
api_key = "{upstream_key}"
[providers.down]
kind = "openai"
base_url = "http://127.0.0.1:{closed}/v1"
api_key = "unused"
connect_timeout_s = 1
[providers.mock]
kind = "mock"
[models."gpt-test"]
provider = "fake"
upstream_model = "fake-model"
[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
[models."nowhere"]
provider = "down"
[[keys]]
name = "alice"
key = "{key}"
"""
HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


def config(tmp_path: Path, fake: str, state_extra: str = "") -> str:
    return CONFIG.format(
        dir=tmp_path,
        fake=fake,
        upstream_key=UPSTREAM_KEY,
        closed=free_port(),
        key=KEY,
        state_extra=state_extra,
    )


def access(line: dict[str, object]) -> bool:
    return line.get("logger") == "gateway.access"


def test_one_access_line_per_request_after_it_ends(tmp_path: Path) -> None:
    with run_fake_openai(api_key=UPSTREAM_KEY) as (fake, fake_url):
        with serve(tmp_path, config(tmp_path, fake_url)) as gw:
            client = OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=HELLO, extra_headers={"x-request-id": "client-id-1"}
            )
            assert raw.headers["x-request-id"] == "client-id-1"
            completion = raw.parse()
            response = client.chat.completions.with_raw_response.create(
                model="mock-fast", messages=HELLO, stream=True
            )
            stream_id = response.headers["x-request-id"]
            assert list(response.parse())
            bad = httpx.post(
                f"{gw.url}/chat/completions",
                json={"model": "gpt-test", "messages": HELLO},
                headers={"authorization": "Bearer sk-nope"},
            )
            assert bad.status_code == 401
            lines = gw.wait_for(access, count=3)
            by_id = {line["request_id"]: line for line in lines}
            assert len(lines) == 3 and len(by_id) == 3  # one line per request

            first = by_id["client-id-1"]
            assert first["status"] == 200 and first["stream"] is False
            assert first["key_name"] == "alice" and first["key_id"] is None  # a config key
            assert (first["model"], first["provider"], first["deployment"]) == (
                "gpt-test",
                "fake",
                "gpt-test",  # the routable id that served, as x-gateway-deployment says
            )
            assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
            assert first["attempts"] == 1 and first["error_code"] is None
            assert first["latency_ms"] > 0 and first["ttft_ms"] is None
            assert first["client"] == "127.0.0.1"
            assert first["message"] == "POST /v1/chat/completions 200"
            # The upstream heard the same request id.
            assert fake.requests[-1].headers["x-request-id"] == "client-id-1"

            streamed = by_id[stream_id]
            assert streamed["stream"] is True and streamed["status"] == 200
            assert 0 < streamed["ttft_ms"] <= streamed["latency_ms"]
            assert streamed["completion_tokens"] > 0

            refused = by_id[bad.headers["x-request-id"]]
            assert refused["status"] == 401 and refused["error_code"] == "invalid_api_key"
            assert refused["model"] is None and refused["attempts"] == 0
        time.sleep(0.1)
    # The ledger keeps the request id beside the completion id.
    with sqlite3.connect(tmp_path / "gw.sqlite3") as db:
        row = db.execute(
            "SELECT request_id, x_request_id FROM usage WHERE x_request_id = 'client-id-1'"
        ).fetchone()
    # request_id: the gateway's own id of the request (an OpenAI-compatible upstream's
    # body keeps the upstream's completion id).
    assert row[0].startswith("chatcmpl-") and row[1] == "client-id-1"
    assert completion.id


def test_request_ids_on_every_route_kept_when_short_and_printable(stack: Stack) -> None:
    base = stack.url.removesuffix("/v1")
    auth = {"authorization": f"Bearer {KEY_ALL}"}
    cases = [
        ("GET", "/healthz", {}),
        ("GET", "/v1/models", auth),
        ("GET", "/nowhere", auth),  # 404 from Quart
        ("GET", "/v1/chat/completions", auth),  # 405 from the hot route
        ("POST", "/v1/chat/completions", {}),  # 401
    ]
    for method, path, headers in cases:
        sent = httpx.request(method, base + path, headers={**headers, "x-request-id": "abc-123"})
        assert sent.headers["x-request-id"] == "abc-123", (path, sent.headers)
        fresh = httpx.request(method, base + path, headers=headers)
        assert re.fullmatch(r"req_[0-9a-f]{24}", fresh.headers["x-request-id"]), path
    for bad in ("x" * 129, "has space", "tab\there", ""):
        got = httpx.get(base + "/healthz", headers={"x-request-id": bad}).headers["x-request-id"]
        assert got != bad and got.startswith("req_")
    assert request_id_from(b"x" * 128) == "x" * 128
    assert request_id_from("é".encode()).startswith("req_")


def test_operator_events_once_each_with_their_context(tmp_path: Path) -> None:
    with run_fake_openai(api_key=UPSTREAM_KEY) as (_, fake_url):
        with serve(tmp_path, config(tmp_path, fake_url)) as gw:
            client = OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
            for _ in range(3):  # the upstream refuses connections: logged once, not thrice
                with pytest.raises(openai.APIStatusError):
                    client.chat.completions.create(model="nowhere", messages=HELLO)
            managed_looking = "sk-gw-abcdefghij12-" + "A" * 43 + "B" * 6
            for _ in range(2):
                r = httpx.get(
                    f"{gw.url}/models", headers={"authorization": f"Bearer {managed_looking}"}
                )
                assert r.status_code == 401
            failed = gw.wait_for(lambda x: x["message"] == "upstream attempt failed")
            denied = gw.wait_for(lambda x: x["message"] == "authentication failed")
            assert gw.stop() == 0
        lines = gw.lines()
    messages = [line["message"] for line in lines]
    for once in ("starting", "ready", "draining", "stopped"):
        assert messages.count(once) == 1, (once, messages)
    start = lines[messages.index("starting")]
    assert start["workers"] == 1 and start["config"].endswith("gateway.toml")
    assert start["providers"] == ["down", "fake", "mock"] and start["redis"] is False
    assert len(failed) == 1
    assert failed[0]["deployment"] == "down" and failed[0]["outcome"] == "unreachable"
    assert failed[0]["latency_ms"] >= 0 and failed[0]["request_id"].startswith("req_")
    assert len(denied) == 1  # throttled
    assert denied[0]["key_id"] is None  # not a well-formed key: nothing of it is named
    text = gw.log_text()
    assert managed_looking not in text and "A" * 43 not in text


def test_an_auth_failure_names_a_managed_key_by_its_id_only(stack: Stack) -> None:
    from gateway.auth.keys import new_key
    from gateway.auth.principal import presented_key_id

    issued = new_key()
    assert presented_key_id(f"Bearer {issued.full_key}".encode()) == issued.key_id
    assert presented_key_id(b"Bearer sk-other") is None
    assert presented_key_id(None) is None


def test_redis_unreachable_at_start_is_one_warning_before_any_request(tmp_path: Path) -> None:
    extra = f'redis_url = "redis://127.0.0.1:{free_port()}/0"\nredis_timeout_s = 0.2'
    with (
        run_fake_openai(api_key=UPSTREAM_KEY) as (_, fake_url),
        # Not ready while Redis does not answer (docs/operations.md): wait for the log.
        serve(tmp_path, config(tmp_path, fake_url, extra), ready=False) as gw,
    ):
        warned = gw.wait_for(lambda x: "unreachable at start" in x["message"])
        assert not gw.wait_for(access, timeout_s=0)  # no request was needed
        gw.wait_for(lambda x: x["message"] == "ready")
        probe = httpx.get(f"{gw.base}/readyz")
        assert probe.status_code == 503 and probe.json()["reason"].startswith("redis:")
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    assert "redis://" not in gw.log_text()  # its URL may hold a password


def test_text_format_and_level_from_the_command_line_and_the_environment(tmp_path: Path) -> None:
    with run_fake_openai(api_key=UPSTREAM_KEY) as (_, fake_url):
        text = config(tmp_path, fake_url)
        with serve(tmp_path, text, "--log-format", "text", "--log-level", "warning") as gw:
            httpx.get(f"{gw.url}/models", headers={"authorization": "Bearer sk-nope"})
            time.sleep(0.3)
        lines = gw.log_text().splitlines()
        assert lines and all(" INFO " not in line for line in lines)  # warning and above
        assert any(
            re.match(r"\S+Z \d+ WARNING gateway\.events: authentication failed .*status=401", x)
            for x in lines
        ), lines
        with serve(tmp_path, text, env={"GATEWAY_LOG_FORMAT": "text"}) as gw:
            httpx.get(f"{gw.url}/models", headers={"authorization": f"Bearer {KEY}"})
            time.sleep(0.3)
        assert re.search(
            r"INFO gateway\.access: GET /v1/models 200 request_id=req_\w+ ", gw.log_text()
        ), gw.log_text()


def test_log_settings_resolve_command_line_then_environment_then_config() -> None:
    tty, pipe = _Stream(tty=True), _Stream(tty=False)
    env = {"GATEWAY_LOG_FORMAT": "text", "GATEWAY_LOG_LEVEL": "debug"}
    assert logs.resolve("json", "error", "text", "info", env, pipe) == ("json", "error")
    assert logs.resolve(None, None, "json", "info", env, pipe) == ("text", "debug")
    assert logs.resolve(None, None, "text", "warning", {}, pipe) == ("text", "warning")
    assert logs.resolve(None, None, None, "info", {}, pipe) == ("json", "info")
    assert logs.resolve(None, None, None, "info", {}, tty) == ("text", "info")
    with pytest.raises(ValueError, match="GATEWAY_LOG_FORMAT"):
        logs.resolve(None, None, None, "info", {"GATEWAY_LOG_FORMAT": "xml"}, pipe)


def test_every_line_written_for_a_request_names_it() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("tests.observability.named")
    log.addHandler(handler)
    log.propagate = False
    rec = RequestRecord("req-named", "POST", "/x", None, 0.0, 0.0, NO_SPAN)
    token = CURRENT.set(rec)
    try:
        log.warning("inside %s", "it", extra={"fields": {"n": 1}})
    finally:
        CURRENT.reset(token)
    log.warning("outside")
    inside, outside = (orjson_line(x) for x in out.getvalue().splitlines())
    assert inside["request_id"] == "req-named" and inside["n"] == 1
    assert inside["message"] == "inside it" and inside["level"] == "warning"
    assert "request_id" not in outside


def orjson_line(text: str) -> dict[str, object]:
    import orjson

    value = orjson.loads(text)
    assert isinstance(value, dict)
    return value


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty
