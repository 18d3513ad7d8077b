"""GET /metrics through a served gateway: what the requests did, in the Prometheus text
format, across worker processes too."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from bench.fakes.threaded import BackgroundTrio
from gateway.app import create_app
from gateway.config import load_config
from gateway.observability.metrics import MAX_MODELS, Metrics, merge, render
from gateway.observability.record import RequestRecord
from gateway.observability.traces import NO_SPAN
from tests.conftest import ADMIN_KEY, KEY_ALL, Stack, serve_app
from tests.observability.served import serve
from tests.redis_server import require_redis_server, running_redis

HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Hello there"}
]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of a scrape. A request is counted just after its last byte went out:
    its client may be a moment ahead, so a scrape waits that moment first."""
    time.sleep(0.2)
    r = httpx.get(f"{base}/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def base_of(stack: Stack) -> str:
    return stack.url.removesuffix("/v1")


def test_a_scrape_counts_requests_tokens_cost_and_times(stack: Stack) -> None:
    base = base_of(stack)
    before = scrape(base)
    client = OpenAI(base_url=stack.url, api_key=KEY_ALL, max_retries=0)
    usage = [client.chat.completions.create(model="mock-priced", messages=HELLO).usage]
    chunks = list(
        client.chat.completions.create(
            model="mock-priced",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage.append(chunks[-1].usage)
    after = scrape(base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    mp = {"model": "mock-priced", "provider": "mock"}
    assert delta("gateway_requests_total", **mp, status="200") == 2
    prompt = sum(u.prompt_tokens for u in usage if u)
    completion = sum(u.completion_tokens for u in usage if u)
    assert delta("gateway_tokens_total", **mp, type="input") == prompt
    assert delta("gateway_tokens_total", **mp, type="output") == completion
    cost = (prompt * 10 + completion * 100) / 1e6  # the config's prices, per token
    assert delta("gateway_cost_usd_total", model="mock-priced") == pytest.approx(cost)
    assert delta("gateway_request_duration_seconds_count", **mp) == 2
    assert delta("gateway_request_duration_seconds_bucket", **mp, le="+Inf") == 2
    assert delta("gateway_time_to_first_token_seconds_count", **mp) == 1  # the stream only
    assert delta("gateway_upstream_attempts_total", deployment="mock", outcome="ok") == 2
    assert ("gateway_in_flight_requests", frozenset()) in after
    assert ("gateway_ledger_backlog_rows", frozenset()) in after


def test_probes_and_scrapes_are_not_counted_as_requests(stack: Stack) -> None:
    base = base_of(stack)
    before = scrape(base)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(base + path).status_code == 200
    after = scrape(base)
    unrouted = {"model": "", "provider": ""}
    assert value(after, "gateway_requests_total", **unrouted, status="200") == value(
        before, "gateway_requests_total", **unrouted, status="200"
    )


def test_upstream_attempts_by_outcome_and_errors_by_code(stack: Stack) -> None:
    base = base_of(stack)
    before = scrape(base)
    client = OpenAI(base_url=stack.url, api_key=KEY_ALL, max_retries=0)
    attempts: dict[str, int] = {}  # per model, as its response reports them
    for model in ("fake/m@status=500", "fake/m@status=429", "fake/m@status=400", "down/m"):
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model=model, messages=HELLO)
        attempts[model] = int(failed.value.response.headers["x-gateway-attempts"])
    after = scrape(base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # 5xx, 429 and refused connections may be retried (docs/routing.md), a 400 never:
    # one count per attempt the response reported.
    assert attempts["fake/m@status=400"] == 1
    for model, outcome in (
        ("fake/m@status=500", "server_error"),
        ("fake/m@status=429", "rate_limited"),
        ("fake/m@status=400", "client_error"),
    ):
        assert (
            delta("gateway_upstream_attempts_total", deployment="fake", outcome=outcome)
            == (attempts[model])
        )
    assert (
        delta("gateway_upstream_attempts_total", deployment="down", outcome="unreachable")
        == (attempts["down/m"])
    )
    assert (
        delta(
            "gateway_request_errors_total",
            model="down/m",
            provider="down",
            code="upstream_unreachable",
        )
        == 1
    )


def test_refusals_by_the_key_limits_are_counted_by_limit(stack: Stack) -> None:
    base = base_of(stack)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{base}/admin/keys", json={"name": "rpm-1", "rpm": 1}, headers=admin)
    assert created.status_code == 201, created.text
    before = scrape(base)
    client = OpenAI(base_url=stack.url, api_key=created.json()["key"], max_retries=0)
    client.chat.completions.create(model="mock-fast", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="mock-fast", messages=HELLO)
    after = scrape(base)
    assert (
        value(after, "gateway_rate_limited_total", limit="rpm")
        - value(before, "gateway_rate_limited_total", limit="rpm")
        == 1
    )
    labels = {"model": "mock-fast", "provider": "mock", "status": "429"}
    assert value(after, "gateway_requests_total", **labels) >= 1


def test_in_flight_counts_an_open_stream(stack: Stack) -> None:
    base = base_of(stack)
    body = {"model": "fake/m@chunks=40&chunk_interval_ms=50", "messages": HELLO, "stream": True}
    headers = {"authorization": f"Bearer {KEY_ALL}"}
    with httpx.stream("POST", f"{stack.url}/chat/completions", json=body, headers=headers) as r:
        chunks = r.iter_bytes()  # held: a dropped iterator would close the stream
        next(chunks)
        assert value(scrape(base), "gateway_in_flight_requests") >= 1
        assert b"".join(chunks).rstrip().endswith(b"data: [DONE]")


def test_openmetrics_when_asked(stack: Stack) -> None:
    r = httpx.get(f"{base_of(stack)}/metrics", headers={"accept": "application/openmetrics-text"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


@pytest.fixture
def own_app(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A gateway of the test's own: metrics behind the admin key, series per key."""
    config = tmp_path / "gw.toml"
    config.write_text(
        f"""
[state]
sqlite_path = "{tmp_path}/gw.sqlite3"
admin_key = "{ADMIN_KEY}"
[observability]
metrics_auth = true
metrics_per_key = true
[providers.mock]
kind = "mock"
[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
[[keys]]
name = "alice"
key = "{KEY_ALL}"
"""
    )
    app = create_app(load_config(config))
    with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
        yield f"http://127.0.0.1:{port}", ADMIN_KEY


def test_metrics_auth_asks_for_the_admin_key_and_per_key_series(
    own_app: tuple[str, str],
) -> None:
    base, admin_key = own_app
    assert httpx.get(f"{base}/metrics").status_code == 401
    wrong = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {KEY_ALL}"})
    assert wrong.status_code == 401 and KEY_ALL not in wrong.text
    client = OpenAI(base_url=f"{base}/v1", api_key=KEY_ALL, max_retries=0)
    client.chat.completions.create(model="mock-fast", messages=HELLO)
    samples = scrape(base, {"authorization": f"Bearer {admin_key}"})
    labels = {"key_id": "", "key_name": "alice"}
    assert value(samples, "gateway_key_requests_total", **labels, model="mock-fast") == 1
    assert value(samples, "gateway_key_tokens_total", **labels, type="output") > 0


def test_model_labels_are_bounded() -> None:
    metrics = Metrics(["configured"])
    for i in range(MAX_MODELS + 50):
        metrics.request(_ended(f"p/model-{i}"))
    metrics.request(_ended("configured"))
    models = {labels[0] for labels in metrics.values["gateway_requests"]}
    assert len(models) == MAX_MODELS + 2  # the dynamic ones, "other" and the configured one
    assert "other" in models and "configured" in models


def test_gauges_of_dead_workers_drop_out_and_their_counters_stay() -> None:
    live, dead = Metrics(), Metrics()
    for m in (live, dead):
        m.request(_ended("m"))
        m.sample("gateway_in_flight_requests", 3)
    snapshots = [live.snapshot(), {**dead.snapshot(), "pid": _dead_pid()}]
    merged = merge(snapshots)
    assert merged["gateway_requests"][("m", "p", "200")] == 2
    assert merged["gateway_in_flight_requests"][()] == 3
    body, _ = render(merged, None)
    assert b'gateway_requests_total{model="m",provider="p",status="200"} 2.0' in body


def _ended(model: str) -> RequestRecord:
    rec = RequestRecord("r", "POST", "/v1/chat/completions", None, 0.0, 0.0, NO_SPAN)
    rec.model, rec.provider, rec.status, rec.ended = model, "p", 200, 0.5
    return rec


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


WORKERS_CONFIG = """
[state]
sqlite_path = "{dir}/gw.sqlite3"
redis_url = "{redis}"
[providers.mock]
kind = "mock"
[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
[[keys]]
name = "t"
key = "{key}"
"""


def test_any_worker_reports_the_whole_gateway_and_restarts_lose_nothing(tmp_path: Path) -> None:
    require_redis_server()
    labels = {"model": "mock-fast", "provider": "mock", "status": "200"}
    with running_redis() as redis:
        text = WORKERS_CONFIG.format(dir=tmp_path, redis=redis.url, key=KEY_ALL)
        with serve(tmp_path, text, "--workers", "2") as gw:
            sent = 40
            for _ in range(sent):  # a new connection each: the kernel spreads them
                r = httpx.post(
                    f"{gw.url}/chat/completions",
                    json={"model": "mock-fast", "messages": HELLO},
                    headers={"authorization": f"Bearer {KEY_ALL}"},
                )
                assert r.status_code == 200
            access = gw.wait_for(lambda x: x["logger"] == "gateway.access" and x["status"] == 200)
            served_by = {line["pid"] for line in access if line["path"] == "/v1/chat/completions"}
            assert len(served_by) == 2, "both workers must have served requests"
            time.sleep(1.5)  # every worker writes its totals each second
            counts = [value(scrape(gw.base), "gateway_requests_total", **labels) for _ in range(8)]
            assert counts == [sent] * 8, counts
            # A worker killed outright is replaced; what it counted stays counted.
            victim = served_by.pop()
            environ = Path(f"/proc/{victim}/environ").read_bytes().split(b"\0")
            [metrics_dir] = [
                v[len(b"GATEWAY_METRICS_DIR=") :]
                for v in environ
                if v.startswith(b"GATEWAY_METRICS_DIR=")
            ]
            assert os.path.isdir(metrics_dir)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                restarted = gw.wait_for(lambda x: "exited with status" in x["message"], timeout_s=0)
                if restarted:
                    break
                time.sleep(0.1)
            assert restarted
            wait_all_ready(gw.base)
            counts = [value(scrape(gw.base), "gateway_requests_total", **labels) for _ in range(8)]
            assert counts == [sent] * 8, counts
        assert gw.proc.returncode == 0
    assert not os.path.exists(metrics_dir)  # the parent removed its directory


def wait_all_ready(base: str) -> None:
    from tests.test_cli import wait_ready

    wait_ready(base, in_a_row=8)


def test_scrapes_during_load_do_not_block_requests(stack: Stack) -> None:
    """A scrape is a cold route: it runs beside requests without failing them."""
    stop = threading.Event()
    failures: list[int] = []

    def scraper() -> None:
        while not stop.is_set():
            r = httpx.get(f"{base_of(stack)}/metrics")
            if r.status_code != 200:
                failures.append(r.status_code)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        client = OpenAI(base_url=stack.url, api_key=KEY_ALL, max_retries=0)
        for _ in range(20):
            client.chat.completions.create(model="mock-fast", messages=HELLO)
    finally:
        stop.set()
        thread.join()
    assert failures == []


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def test_the_dashboard_parses_and_queries_only_metrics_a_scrape_has(stack: Stack) -> None:
    import json
    import re

    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    assert dashboard["title"] and dashboard["panels"] and len(exprs) >= 15
    queried = {name for e in exprs for name in re.findall(r"\bgateway_[a-z0-9_]+", e)}
    client = OpenAI(base_url=stack.url, api_key=KEY_ALL, max_retries=0)
    list(client.chat.completions.create(model="mock-fast", messages=HELLO, stream=True))
    time.sleep(0.2)
    text = httpx.get(f"{base_of(stack)}/metrics").text
    exposed = set()
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        exposed.update(s.name for s in family.samples)
        if family.type == "counter":
            exposed.add(family.name + "_total")
        if family.type == "histogram":
            exposed.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    assert queried <= exposed, sorted(queried - exposed)
    # Every family of the gateway is on the dashboard but the per-key ones (off by default).
    families = {f.name for f in text_string_to_metric_families(text)}
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", q) for q in queried}
    assert families - shown == {
        "gateway_key_requests",
        "gateway_key_tokens",
        "gateway_key_cost_usd",
    }
