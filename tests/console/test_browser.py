"""The console in a real browser: headless Chromium from the distribution's packages,
driven by Playwright for Python, against a served gateway; the official openai SDK
uses the keys the console makes.

One gateway for the module, one browser for the session (tests/console/conftest.py).
Screenshots of each page at desktop and phone widths go to the folder the session
prints (`console screenshots: ...`); docs/console/ holds a chosen few.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from bench.fakes.threaded import BackgroundTrio
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import serve_app

pw = pytest.importorskip("playwright.sync_api")

ADMIN = "adm-console-test-0123456789"
CONFIG_KEY = "sk-console-all-0123456789"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
EXPECTED = re.compile(r"Failed to load resource: .* status of (400|401|403|429)")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

CONFIG = """
[server]
# The gateway shares this process (and its GIL) with the Playwright driver on 2 busy
# cores: shedding on loop lag would test the machine, not the console.
max_loop_lag_ms = 0

[state]
sqlite_path = "{state_dir}/gateway.sqlite3"
admin_key = "{admin}"

[console]
login_attempts_per_minute = 30

[providers.mock]
kind = "mock"
price_input_per_mtok = 0.5
price_output_per_mtok = 1.5

[providers.claude]
kind = "anthropic"
base_url = "http://127.0.0.1:9/v1"
api_key = "unused"

[models."mock-fast"]
provider = "mock"
price_input_per_mtok = 2.5
price_cached_input_per_mtok = 1.25
price_output_per_mtok = 10
max_output_tokens = 8192

[models."mock-cheap"]
provider = "mock"
upstream_model = "cheap"

[models."claude-test"]
provider = "claude"
upstream_model = "claude-sonnet"
price_input_per_mtok = 3
price_output_per_mtok = 15

[models."mixed"]
targets = [{{model = "mock-fast", weight = 3}}, {{model = "mock-cheap", weight = 1}}]
fallbacks = ["mock/backup"]

[[keys]]
name = "everything"
key = "{config_key}"
"""


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT
    shots: Path

    def sdk(self, key: str) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shots: Path) -> Iterator[Served]:
    state = tmp_path_factory.mktemp("console-state")
    path = state / "gateway.toml"
    path.write_text(CONFIG.format(state_dir=state, admin=ADMIN, config_key=CONFIG_KEY))
    app = create_app(load_config(path, env={}))
    with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
        yield Served(f"http://127.0.0.1:{port}", shots)


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser context (no cookies), failing the test on any CSP violation or
    script error the page reports."""
    context = browser.new_context(viewport=DESKTOP, base_url=served.base)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500 else None
    )
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    # Refusals the tests ask for answer 4xx pages, which Chromium reports; a missing
    # resource (404) or a blocked script is a problem.
    assert [p for p in problems if not EXPECTED.search(p)] == []


def log_in(page: Any, key: str = ADMIN) -> Any:
    page.goto("/console/login")
    page.fill("#admin_key", key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    return page


def shoot(page: Any, served: Served, name: str) -> None:
    """The page at desktop width, then at phone width (checking nothing overflows)."""
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(served.shots / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than a phone"
    page.screenshot(path=str(served.shots / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def create_key(page: Any, **fields: str) -> tuple[str, str]:
    """Create a key through the form; (full key, key page URL)."""
    page.goto("/console/keys")
    page.click("summary")
    for name, value in fields.items():
        page.fill(f"#f-{name}", value)
    with page.expect_navigation():
        page.click("#create button[type=submit]")
    full = page.input_value("#new-key")
    href = page.get_attribute("a.button", "href")
    return full, href


def test_a_wrong_admin_key_is_refused_and_the_right_one_logs_in(page: Any, served: Served) -> None:
    resp = page.goto("/console/keys")
    assert "/console/login" in page.url  # every page but the login needs a session
    shoot(page, served, "login")
    page.fill("#admin_key", "adm-wrong-key")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert page.is_visible("text=Incorrect admin key.")
    assert page.get_attribute("#admin_key", "aria-invalid") == "true"
    # The keyboard alone: the key field has focus, Enter submits.
    page.fill("#admin_key", ADMIN)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/console/keys")
    cookie = next(c for c in page.context.cookies() if c["name"] == "gateway_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN not in cookie["value"]
    resp = page.goto("/console/keys")
    assert resp.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert "unsafe-inline" not in resp.headers["content-security-policy"]


def test_create_a_key_see_it_once_and_use_it_with_the_sdk(
    page: Any, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    log_in(page)
    shoot(page, served, "keys-empty")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    full, href = create_key(page, name="ci-bot", models="mock-fast, mock-cheap", credit_usd="1")
    assert full.startswith("sk-")
    assert page.is_visible("text=Copy this key now.")
    page.click("button.copy")
    page.wait_for_selector("text=Copied")
    assert page.evaluate("navigator.clipboard.readText()") == full
    shoot(page, served, "key-created")

    reply = served.sdk(full).chat.completions.create(model="mock-fast", messages=HELLO)
    assert reply.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):  # out of its scope
        served.sdk(full).chat.completions.create(model="claude-test", messages=HELLO)

    page.goto(href)
    assert page.locator("#key-state").inner_text() == "active"
    assert page.locator("#recent tbody tr").count() >= 1
    shoot(page, served, "key")
    page.goto("/console/keys")
    assert page.is_visible("text=ci-bot")
    # The key is shown once: on no other page, in no URL, in no log line.
    for path in ("/console/keys", href, "/console/usage?by=key"):
        page.goto(path)
        assert full not in page.content()
    assert not any(full in u for u in urls)
    assert full not in caplog.text


def test_edit_rpm_then_429s_follow(page: Any, served: Served) -> None:
    log_in(page)
    full, href = create_key(page, name="limited")
    client = served.sdk(full)
    for _ in range(3):  # no limit yet
        client.chat.completions.create(model="mock-cheap", messages=HELLO)
    page.goto(href)
    page.fill("#f-rpm", "2")
    with page.expect_navigation():
        page.click("form.grid button.primary >> text=Save changes")
    assert page.is_visible("text=The key was updated.")
    statuses = []
    for _ in range(4):
        try:
            client.chat.completions.create(model="mock-cheap", messages=HELLO)
            statuses.append(200)
        except openai.RateLimitError as e:
            statuses.append(e.status_code)
            assert e.response.headers.get("retry-after")
    assert 429 in statuses, statuses
    page.reload()
    assert page.locator("#limiter").is_visible()
    assert "rate_limit_exceeded" in page.locator("#by-status").inner_text()
    # A bad value is refused with the field named, and nothing changes.
    page.fill("#f-rpm", "lots")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("form.grid button.primary >> text=Save changes")
    assert answer.value.status == 400
    assert page.is_visible("text=rpm: must be a whole number")
    assert page.get_attribute("#f-rpm", "aria-invalid") == "true"


def test_top_up_adds_credit(page: Any, served: Served) -> None:
    log_in(page)
    _, href = create_key(page, name="prepaid", credit_usd="0.50")
    page.goto(href)
    assert page.inner_text("#credit") == "$0.50"
    page.fill("#f-amount", "2")
    page.fill("#f-note", "invoice 42")
    with page.expect_navigation():
        page.click("text=Add credit")
    assert page.is_visible("text=Credit was added.")
    assert page.inner_text("#credit") == "$2.50"


def test_revoke_is_refused_within_2_s(page: Any, served: Served) -> None:
    log_in(page)
    full, href = create_key(page, name="to-revoke")
    client = served.sdk(full)
    client.chat.completions.create(model="mock-fast", messages=HELLO)
    page.goto(href)
    page.on("dialog", lambda d: d.accept())  # the confirmation
    page.check("#f-confirm")
    with page.expect_navigation():
        page.click("button.danger")
    revoked_at = time.monotonic()
    assert page.locator("#key-state").inner_text() == "revoked"
    while True:
        try:
            client.chat.completions.create(model="mock-fast", messages=HELLO)
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < 2.0, "a revoked key still served after 2 s"
        time.sleep(0.05)


def test_models_page_lists_what_v1_models_lists_with_prices(page: Any, served: Served) -> None:
    listed = served.sdk(CONFIG_KEY).models.list()
    ids = [m.id for m in listed.data]
    # claude-test's provider refuses connections: five failures in a row eject it.
    for _ in range(6):
        with pytest.raises(openai.APIStatusError):
            served.sdk(CONFIG_KEY).chat.completions.create(model="claude-test", messages=HELLO)
    log_in(page)
    page.goto("/console/models")
    rows = page.locator("tr[data-model]")
    shown = [rows.nth(i).locator("a.model-id").inner_text() for i in range(rows.count())]
    assert sorted(shown) == sorted(ids)
    fast = page.locator("#model-mock-fast td.price")
    assert fast.all_inner_texts() == ["$2.50", "$10.00"]
    cheap = page.locator("#model-mock-cheap td.price")  # the provider's prices
    assert cheap.all_inner_texts() == ["$0.50", "$1.50"]
    claude = page.locator("#model-claude-test")
    assert "json_schema emulated" in claude.inner_text()
    assert "audio" not in claude.locator("td.caps").inner_text()
    assert "cooldown: claude-test" in claude.inner_text()
    assert "cooldown" not in page.inner_text("#model-mock-fast")
    mixed = page.locator("#model-mixed")
    assert "weighted" in mixed.inner_text()
    # A routed model's targets differ in price: the range, not the first one's.
    assert mixed.locator("td.price").all_inner_texts() == ["$0.50 to $2.50", "$1.50 to $10.00"]
    page.fill("#model-filter", "claude")
    assert page.locator("tr[data-model]:visible").count() == 1
    page.fill("#model-filter", "")
    shoot(page, served, "models")
    page.click("text=mock-fast")
    assert page.inner_text("#code-python").count('"mock-fast"') == 1
    shoot(page, served, "model-example")


def test_usage_page_and_csv(page: Any, served: Served) -> None:
    served.sdk(CONFIG_KEY).chat.completions.create(model="mock-fast", messages=HELLO)
    log_in(page)
    page.goto("/console/usage")
    assert page.locator("svg.chart").count() == 2
    shoot(page, served, "usage")
    page.select_option("#by", "model")
    with page.expect_navigation():
        page.click("text=Show")
    assert "mock-fast" in page.inner_text("#usage")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    csv = Path(download.value.path()).read_text()
    assert csv.startswith("model,requests,refused,errors,")
    assert "mock-fast" in csv


def test_csrf_forged_cookies_and_other_origins_are_refused(
    page: Any, browser: Any, served: Served
) -> None:
    log_in(page)
    # A POST without the session's CSRF token (what another site's form would send).
    resp = page.request.post("/console/keys", form={"name": "forged"})
    assert resp.status == 403
    html = page.content()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None
    resp = page.request.post(
        "/console/keys",
        form={"name": "cross-site", "csrf_token": token.group(1)},
        headers={"origin": "https://evil.example"},
    )
    assert resp.status == 403
    page.goto("/console/keys?q=forged")
    assert page.is_visible("text=No key matches.")
    # A forged session cookie is no session.
    other = browser.new_context(base_url=served.base)
    other.add_cookies(
        [{"name": "gateway_console", "value": "0" * 32 + ".AAAAAA.forged", "url": served.base}]
    )
    p2 = other.new_page()
    p2.goto("/console/keys")
    assert "/console/login" in p2.url
    other.close()
    # Logging out ends the session: its cookie no longer opens a page.
    cookie = next(c for c in page.context.cookies() if c["name"] == "gateway_console")
    with page.expect_navigation():
        page.click("text=Log out")
    assert "/console/login" in page.url
    stale = httpx.get(f"{served.base}/console/keys", cookies={"gateway_console": cookie["value"]})
    assert stale.status_code == 303


def test_logins_are_rate_limited(served: Served) -> None:
    """Last in the module: it uses up this address's login attempts."""
    with httpx.Client(base_url=served.base) as client:
        statuses = []
        for _ in range(40):
            r = client.post("/console/login", data={"admin_key": "wrong"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert "Too many login attempts" in r.text
                break
        assert statuses[-1] == 429
        assert set(statuses[:-1]) == {403}  # no login token: refused before the key
