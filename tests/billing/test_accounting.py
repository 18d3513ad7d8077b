"""Keys, limits and spend end to end: admin API -> managed key -> /v1 -> ledger.

The gateway of tests/conftest.py runs with a real SQLite store in a temp dir and
an admin key; keys are created through the admin HTTP API, used with the official
OpenAI SDK, and the usage ledger is read back from SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from gateway.api.chat import request_deadline_s
from gateway.auth.principal import Principal
from gateway.billing.accounting import Accounting, admit
from gateway.billing.limits.budget import RESERVATION_MARGIN_S
from gateway.billing.limits.core import Admission, unlimited_admission
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.config import Price
from gateway.errors import UpstreamError
from gateway.providers.base import Deployment
from gateway.state import Gateway
from gateway.store.records import KeyLimits, UsageRow
from tests.conftest import ADMIN_KEY, KEY_ALL, Stack

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


def admin(stack: Stack, method: str, path: str, **kw: Any) -> httpx.Response:
    base = stack.url.removesuffix("/v1")
    return httpx.request(
        method, f"{base}/admin{path}", headers={"authorization": f"Bearer {ADMIN_KEY}"}, **kw
    )


def new_key(stack: Stack, **spec: Any) -> tuple[str, str]:
    r = admin(stack, "POST", "/keys", json={"name": f"t{time.monotonic_ns()}", **spec})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["key"].startswith("sk-gw-")
    return body["id"], body["key"]


def client(stack: Stack, key: str) -> OpenAI:
    return OpenAI(base_url=stack.url, api_key=key, max_retries=0, timeout=20)


def ledger_rows(stack: Stack, key_id: str, settle_s: float = 1.5) -> list[sqlite3.Row]:
    """The key's ledger rows once the batch writer has flushed them."""
    path = str(stack.config.state.sqlite_path)
    deadline = time.monotonic() + settle_s
    rows: list[sqlite3.Row] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM usage WHERE key_id = ? AND status != 'pending'", (key_id,)
            ).fetchall()
        time.sleep(0.1)
    return rows


def test_a_managed_key_works_and_its_requests_reach_the_ledger(stack: Stack) -> None:
    key_id, key = new_key(stack)
    r = client(stack, key).chat.completions.create(model="mock-priced", messages=HELLO)
    assert r.usage is not None
    rows = ledger_rows(stack, key_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["model"] == "mock-priced"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    # 10 micros per prompt token, 100 per completion token.
    assert row["cost_micros"] == 10 * r.usage.prompt_tokens + 100 * r.usage.completion_tokens


def test_streamed_usage_is_settled_exactly(stack: Stack) -> None:
    key_id, key = new_key(stack)
    chunks = list(
        client(stack, key).chat.completions.create(
            model="mock-priced",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    row = ledger_rows(stack, key_id)[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_rpm_limit_gives_429_with_retry_after_and_headers(stack: Stack) -> None:
    _, key = new_key(stack, rpm=3)
    c = client(stack, key)
    for i in range(3):
        raw = c.chat.completions.with_raw_response.create(model="mock-fast", messages=HELLO)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="mock-fast", messages=HELLO)
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert "requests per minute" in info.value.message


def test_tpm_limit_reserves_prompt_plus_output_cap_and_settles_to_actuals(stack: Stack) -> None:
    _, key = new_key(stack, tpm=300)
    c = client(stack, key)
    # Alone, prompt (~10) + a 280-token cap fits in 300 tokens per minute...
    _, fresh = new_key(stack, tpm=300)
    client(stack, fresh).chat.completions.create(model="mock-fast", messages=HELLO, max_tokens=280)
    # ...but not after a small request whose actual tokens were settled against the key.
    c.chat.completions.create(model="mock-fast", messages=HELLO, max_tokens=20)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="mock-fast", messages=HELLO, max_tokens=280)
    assert "tokens per minute" in info.value.message


def test_a_request_that_can_never_fit_the_tpm_limit_is_refused_clearly(stack: Stack) -> None:
    _, key = new_key(stack, tpm=100)
    with pytest.raises(openai.APIStatusError) as info:
        client(stack, key).chat.completions.create(
            model="mock-fast", messages=HELLO, max_tokens=500
        )
    assert info.value.status_code in (400, 429)
    assert "tokens" in info.value.message


@pytest.mark.parametrize("value", [2**31, 10**15, 2**64 - 1])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_output_cap_past_its_bound_is_400_naming_it_on_a_limited_key(
    stack: Stack, field: str, value: int
) -> None:
    """1e15 used to reach the limiter and come back as a 500 with a traceback."""
    _, key = new_key(stack, rpm=1000)
    with pytest.raises(openai.BadRequestError) as info:
        client(stack, key).chat.completions.create(
            model="mock-fast", messages=HELLO, extra_body={field: value}
        )
    assert info.value.param == field
    assert field in info.value.message and "2147483647" in info.value.message


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ({"rpm": 1000}, 200),
        ({"tpm": 1000}, 400),
        ({"spend_limit_micros": 1_000_000, "spend_period": "day"}, 402),
        ({"credit_micros": 1_000_000}, 402),
    ],
)
def test_the_largest_output_cap_times_n_gets_an_answer_on_any_kind_of_key(
    stack: Stack, spec: dict[str, Any], status: int
) -> None:
    """prompt + max_tokens x n at its largest is admitted or refused cleanly, never a 500."""
    _, key = new_key(stack, **spec)
    raw = httpx.post(
        stack.url + "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "mock-priced", "messages": HELLO, "max_tokens": 2**31 - 1, "n": 128},
        timeout=20,
    )
    assert raw.status_code == status, raw.text
    if status != 200:
        assert raw.json()["error"]["type"] in ("invalid_request_error", "billing_error")


def test_prepaid_credit_is_spent_and_then_402(stack: Stack) -> None:
    key_id, key = new_key(stack, credit_micros=3000)
    c = client(stack, key)
    # Worst case of one request: ~10 prompt tokens x 10 + 5 output x 100 = ~600 micros.
    ok = 0
    with pytest.raises(openai.APIStatusError) as info:
        for _ in range(20):
            c.chat.completions.create(model="mock-priced", messages=HELLO, max_tokens=5)
            ok += 1
    assert info.value.status_code == 402 and "credit" in info.value.message
    assert 3 <= ok < 20
    spent = sum(r["cost_micros"] for r in ledger_rows(stack, key_id))
    assert spent <= 3000  # never overshot
    shown = admin(stack, "GET", f"/keys/{key_id}").json()
    assert shown["id"] == key_id


def test_topup_lets_a_prepaid_key_spend_again(stack: Stack) -> None:
    key_id, key = new_key(stack, credit_micros=100)
    c = client(stack, key)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="mock-priced", messages=HELLO, max_tokens=5)
    assert info.value.status_code == 402
    assert (
        admin(stack, "POST", f"/keys/{key_id}/topup", json={"micros": 100_000}).status_code == 200
    )
    deadline = time.monotonic() + 5
    while True:  # the top-up reaches the key cache within its refresh interval
        try:
            c.chat.completions.create(model="mock-priced", messages=HELLO, max_tokens=5)
            break
        except openai.APIStatusError:
            assert time.monotonic() < deadline, "top-up never took effect"
            time.sleep(0.2)


def test_daily_spend_limit_gives_402(stack: Stack) -> None:
    _, key = new_key(stack, spend_limit_micros=1500, spend_period="day")
    c = client(stack, key)
    with pytest.raises(openai.APIStatusError) as info:
        for _ in range(20):
            c.chat.completions.create(model="mock-priced", messages=HELLO, max_tokens=5)
    assert info.value.status_code == 402
    assert "spend limit for this day" in info.value.message.lower()


def test_a_revoked_key_is_refused_within_seconds(stack: Stack) -> None:
    key_id, key = new_key(stack)
    c = client(stack, key)
    c.chat.completions.create(model="mock-fast", messages=HELLO)
    assert admin(stack, "DELETE", f"/keys/{key_id}").status_code == 200
    deadline = time.monotonic() + 5
    while True:
        try:
            c.chat.completions.create(model="mock-fast", messages=HELLO)
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "revocation never took effect"
        time.sleep(0.2)


def test_model_scope_applies_to_managed_keys(stack: Stack) -> None:
    _, key = new_key(stack, models=["mock-fast"])
    with pytest.raises(openai.PermissionDeniedError):
        client(stack, key).chat.completions.create(model="mock-priced", messages=HELLO)


def test_the_admin_key_is_not_a_v1_key_and_v1_keys_are_not_admin_keys(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(stack, ADMIN_KEY).chat.completions.create(model="mock-fast", messages=HELLO)
    base = stack.url.removesuffix("/v1")
    r = httpx.get(f"{base}/admin/keys", headers={"authorization": f"Bearer {KEY_ALL}"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_failed_requests_are_in_the_ledger_too(stack: Stack) -> None:
    key_id, key = new_key(stack)
    with pytest.raises(openai.RateLimitError):
        client(stack, key).chat.completions.create(
            model="fake/m@status=429&retry_after=1",
            messages=HELLO,
        )
    rows = ledger_rows(stack, key_id)
    assert [r["status"] for r in rows] == ["rate_limit_exceeded"]
    assert rows[0]["cost_micros"] == 0


def test_a_budgeted_key_sends_its_reserved_output_cap_upstream(stack: Stack) -> None:
    """Without an explicit cap the upstream could produce more than was reserved and
    overshoot the budget; the reserved default goes upstream instead."""
    _, key = new_key(stack, credit_micros=10_000_000)
    client(stack, key).chat.completions.create(model="fake/m", messages=HELLO)
    sent = stack.fake.requests[-1].body
    assert sent["max_completion_tokens"] == stack.config.state.default_output_tokens
    # A key without a budget leaves the client's body alone.
    client(stack, KEY_ALL).chat.completions.create(model="fake/m", messages=HELLO)
    assert "max_completion_tokens" not in stack.fake.requests[-1].body


# ------------------------------------------------- estimates without upstream usage


class RecordingLedger:
    """Stands in for the Ledger: keeps the rows it is asked to journal."""

    def __init__(self) -> None:
        self.rows: list[UsageRow] = []

    async def record(self, row: UsageRow) -> None:
        self.rows.append(row)


def books(ledger: RecordingLedger) -> Accounting:
    dep = Deployment("m", "p", "mock", "m")
    return Accounting(
        ledger=ledger,  # type: ignore[arg-type]
        limiter=None,  # type: ignore[arg-type]
        principal=Principal(name="k"),
        dep=dep,
        request_id="chatcmpl-t",
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        prompt_tokens=9,
    )


@pytest.mark.parametrize(
    ("events", "error", "expected"),
    [
        (7, None, (9, 5)),  # role, 5 content events, finish: ~5 tokens
        (3, UpstreamError("cut"), (9, 1)),  # cut short after some content
        (0, UpstreamError("refused"), (0, 0)),  # nothing sent: nothing generated
        (0, None, (9, 0)),  # a client gone before the first event
    ],
)
async def test_without_usage_the_translators_event_count_is_the_estimate(
    events: int, error: UpstreamError | None, expected: tuple[int, int]
) -> None:
    ledger = RecordingLedger()
    await books(ledger).finish(None, error, events=events)
    (row,) = ledger.rows
    assert (row.prompt_tokens, row.completion_tokens) == expected


async def test_reported_usage_wins_over_the_event_count() -> None:
    ledger = RecordingLedger()
    usage = {"prompt_tokens": 4, "completion_tokens": 40, "total_tokens": 44}
    await books(ledger).finish(usage, None, events=3)
    assert (ledger.rows[0].prompt_tokens, ledger.rows[0].completion_tokens) == (4, 40)


def test_a_stream_the_client_leaves_is_billed_for_what_was_sent(stack: Stack) -> None:
    """No usage reaches the gateway when the client goes away mid-stream: the row is
    estimated from the events the translator had produced (role and finish aside)."""
    key_id, key = new_key(stack)
    said = " ".join(f"word{i}" for i in range(40))
    seen = 0
    with httpx.stream(
        "POST",
        stack.url + "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "mock-paced",
            "messages": [{"role": "user", "content": said}],
            "stream": True,
        },
        timeout=10,
    ) as r:
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen == 6:
                break  # the client goes away
    (row,) = ledger_rows(stack, key_id)
    assert row["status"] == "client_gone"
    assert row["completion_tokens"] >= seen - 2
    assert row["prompt_tokens"] > 0


# ------------------------------------------------- reservation lifetime


class RecordingLimiter(MemoryLimitBackend):
    """The in-process limiter, keeping the reservation TTL each admission asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.ttls: list[float | None] = []

    async def admit(
        self, *args: Any, reservation_ttl_s: float | None = None, **kw: Any
    ) -> Admission:
        self.ttls.append(reservation_ttl_s)
        return await super().admit(*args, reservation_ttl_s=reservation_ttl_s, **kw)


async def test_a_reservation_lives_as_long_as_its_request_can_plus_a_margin() -> None:
    limiter = RecordingLimiter()
    await admit(
        ledger=RecordingLedger(),  # type: ignore[arg-type]
        limiter=limiter,
        default_output_tokens=16,
        principal=Principal(
            name="k", key_id="k", limits=KeyLimits(spend_limit_micros=10**6, spend_period="day")
        ),
        dep=Deployment("m", "p", "mock", "m"),
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        request_id="chatcmpl-t",
        deadline_s=1200,
    )
    assert limiter.ttls == [1200 + RESERVATION_MARGIN_S]


def test_the_request_deadline_is_the_providers_total_plus_the_media_fetch(stack: Stack) -> None:
    gw = Gateway(stack.config)
    relay = gw.current.relays["fake"]
    assert relay.timeouts.total_s == 20  # tests/conftest.py
    assert request_deadline_s(stack.config, relay) == 20 + 2 * stack.config.media.timeout_s


# ------------------------------------------------- routed requests


class BookingLimiter:
    """Stands in for a limit backend: keeps what it was asked to reserve and settle."""

    def __init__(self) -> None:
        self.reserved: list[tuple[int, int]] = []
        self.settled: list[tuple[int, int]] = []

    async def admit(
        self, key_id: str, limits: Any, tokens: int, worst: int, now: float, **kw: Any
    ) -> Any:
        self.reserved.append((tokens, worst))
        return unlimited_admission(key_id, tokens)

    async def settle(self, admission: Any, tokens: int, micros: int, now: float) -> None:
        self.settled.append((tokens, micros))


def deployment(
    name: str, input_per_mtok: float, output_per_mtok: float, cap: int | None
) -> Deployment:
    return Deployment(
        name, "p", "openai", name, price=Price(input_per_mtok, None, output_per_mtok),
        max_output_tokens=cap,
    )  # fmt: skip


async def test_the_reservation_covers_the_dearest_deployment_and_the_cheaper_one_is_charged() -> (
    None
):
    cheap = deployment("cheap", 1, 2, cap=100)
    dear = deployment("dear", 10, 20, cap=None)
    ledger, limiter = RecordingLedger(), BookingLimiter()
    principal = Principal(
        name="k", key_id="key1", limits=KeyLimits(spend_limit_micros=10**9, spend_period="day")
    )
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}
    account, _ = await admit(
        ledger=ledger,  # type: ignore[arg-type]
        limiter=limiter,  # type: ignore[arg-type]
        default_output_tokens=4096,
        principal=principal,
        dep=cheap,
        reach=[dear],
        model="chat",
        body=body,
        request_id="chatcmpl-r",
    )
    prompt = await account.prompt_tokens()
    [(tokens, worst)] = limiter.reserved
    assert tokens == prompt + 500  # the larger output cap of the two
    assert worst == max(prompt * 1 + 100 * 2, prompt * 10 + 500 * 20) == prompt * 10 + 10_000
    account.served(cheap, 2)
    await account.finish({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}, None)
    row = ledger.rows[-1]
    assert (row.model, row.deployment, row.attempts) == ("chat", "cheap", 2)
    assert row.cost_micros == 7 * 1 + 3 * 2  # at the price of the one that answered
    assert limiter.settled == [(10, 13)]
