"""The console's pure parts: sessions and CSRF, the login throttle, forms, the health
window and quantiles, charts and examples."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET

import pytest

from gateway.console import forms
from gateway.console.examples import examples
from gateway.console.models_view import (
    SAMPLE_EVERY_S,
    WINDOW_S,
    HealthWindow,
    ModelTotals,
    model_totals,
    quantile,
)
from gateway.console.session import LoginThrottle, Sessions, console_secret
from gateway.console.svg import bar_chart
from gateway.store.records import KeyRecord


def sessions(admin_key: str = "adm-one", max_age_s: float = 3600) -> Sessions:
    return Sessions(console_secret(admin_key), max_age_s)


def test_a_session_cookie_is_checked_by_any_worker_with_the_same_admin_key() -> None:
    cookie = sessions().issue()
    assert sessions().check(cookie, 0) is not None  # another process, same admin key
    assert sessions("adm-two").check(cookie, 0) is None  # a new admin key ends them all


@pytest.mark.parametrize(
    "forged",
    ["", "x", "0" * 32, "0" * 32 + ".AAAAAA.forged", "a" * 500, "é.é.é"],
)
def test_forged_cookies_are_no_session(forged: str) -> None:
    assert sessions().check(forged, 0) is None


def test_a_cookie_with_a_tampered_id_is_refused() -> None:
    cookie = sessions().issue()
    sid, rest = cookie.split(".", 1)
    tampered = ("0" if sid[0] != "0" else "1") + sid[1:] + "." + rest
    assert sessions().check(tampered, 0) is None


def test_logout_revokes_the_session_here() -> None:
    s = sessions()
    cookie = s.issue()
    sid = s.check(cookie, 100)
    assert sid is not None
    s.revoke(sid, 100)
    assert s.check(cookie, 101) is None


def test_csrf_tokens_are_bound_to_the_session_and_purpose() -> None:
    s = sessions()
    token = s.csrf("abc")
    assert s.csrf_ok("abc", token)
    assert not s.csrf_ok("abd", token)
    assert not s.csrf_ok("abc", token, "login")
    assert not s.csrf_ok(None, token)
    assert not s.csrf_ok("abc", None)
    assert not s.csrf_ok("abc", "")


def test_the_throttle_allows_n_attempts_a_minute_per_client() -> None:
    t = LoginThrottle(3)
    assert [t.attempt("a", 0.0) for _ in range(3)] == [None, None, None]
    wait = t.attempt("a", 1.0)
    assert wait is not None and 58 <= wait <= 60
    assert t.attempt("b", 1.0) is None  # another address has its own
    assert t.attempt("a", 60.5) is None  # the first attempt left the window


def record(**kw: object) -> KeyRecord:
    base: dict[str, object] = dict(
        key_id="abcdefabcdef",
        name="k",
        secret_hash=b"",
        models=None,
        rpm=None,
        tpm=None,
        spend_limit_micros=None,
        spend_period=None,
        prepaid=False,
        expires_at=None,
        revoked_at=None,
        created_at=0.0,
        version=1,
    )
    base.update(kw)
    return KeyRecord(**base)  # type: ignore[arg-type]


def test_the_create_form_becomes_the_admin_api_body() -> None:
    body = forms.create_body(
        {
            "name": " bot ",
            "models": "a, b  c",
            "rpm": "60",
            "tpm": "",
            "spend_limit_usd": "$1,000.50",
            "spend_period": "day",
            "credit_usd": "0.000001",
            "expires": "2030-01-02",
        }
    )
    assert body == {
        "name": "bot",
        "models": ["a", "b", "c"],
        "rpm": 60,
        "spend_limit_micros": 1_000_500_000,
        "spend_period": "day",
        "credit_micros": 1,
        "expires_at": 1893542400.0,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm", "-1"),
        ("rpm", "1.5"),
        ("tpm", "many"),
        ("spend_limit_usd", "abc"),
        ("spend_limit_usd", "-2"),
        ("spend_limit_usd", "NaN"),
        ("credit_usd", "1e99"),
        ("expires", "tomorrow"),
    ],
)
def test_a_bad_form_value_names_its_field(field: str, value: str) -> None:
    with pytest.raises(forms.FormError) as e:
        forms.create_body({"name": "x", field: value})
    assert e.value.field == field


def test_the_edit_form_sends_only_what_changed() -> None:
    r = record(rpm=10, spend_limit_micros=5_000_000, spend_period="month", expires_at=1893542400.5)
    same = {
        "name": "k",
        "models": "",
        "rpm": "10",
        "tpm": "",
        "spend_limit_usd": "5",
        "spend_period": "month",
        "expires": "2030-01-02",
    }
    assert forms.update_body(same, r) == {}
    assert forms.update_body({**same, "rpm": "2"}, r) == {"rpm": 2}
    assert forms.update_body({**same, "rpm": ""}, r) == {"rpm": None}  # cleared
    assert forms.update_body({**same, "spend_limit_usd": ""}, r) == {
        "spend_limit_micros": None,
        "spend_period": None,
    }
    assert forms.update_body({**same, "models": "m1"}, r) == {"models": ["m1"]}


def test_money_for_people() -> None:
    assert forms.usd(0) == "$0"
    assert forms.usd(2_500_000) == "$2.50"
    assert forms.usd(50) == "$0.000050"
    assert forms.usd(None) == "—"
    assert forms.usd_input(1_500_000) == "1.5"
    assert forms.usd_input(5_000_000) == "5"


def test_quantile_interpolates_within_the_bucket() -> None:
    bounds = [0.1, 0.2, 0.4]
    assert quantile([], bounds, 0.5) is None
    assert quantile([0, 0, 0, 0, 0.0], bounds, 0.5) is None
    assert quantile([0, 4, 0, 0, 0.6], bounds, 0.5) == pytest.approx(0.15)
    assert quantile([0, 0, 0, 3, 9.0], bounds, 0.5) == 0.4  # +Inf: the last bound


def merged(requests: int, errors: int, fast: int) -> dict[str, dict[tuple[str, ...], object]]:
    return {
        "gateway_requests": {("m", "p", "200"): requests - errors, ("m", "p", "502"): errors},
        "gateway_request_errors": {("m", "p", "upstream_error"): errors},
        "gateway_request_duration_seconds": {("m", "p"): [fast, 0, 0, fast * 0.05]},
    }


def test_the_window_shows_what_changed_over_the_last_minutes() -> None:
    window = HealthWindow(started=0.0)
    first = model_totals(merged(10, 2, 10))
    covered, changes = window.since(60.0, first)
    assert covered == 60.0 and changes["m"].requests == 10  # since the start
    window.add(60.0, first)
    later = model_totals(merged(15, 3, 15))
    covered, changes = window.since(60.0 + SAMPLE_EVERY_S, later)
    assert covered == SAMPLE_EVERY_S
    assert (changes["m"].requests, changes["m"].errors) == (5, 1)
    assert changes["m"].duration[0] == 5
    # A sample older than the window no longer counts.
    covered, changes = window.since(60.0 + WINDOW_S + 1, later)
    assert changes["m"].requests == 15
    assert ModelTotals().minus(ModelTotals()).requests == 0


def test_a_chart_is_well_formed_svg_without_style_attributes() -> None:
    figure = bar_chart("Spend <per> day", [("12-01", 3.0), ("12-02", 0.0)], lambda v: f"${v}")
    svg = figure[figure.index("<svg") : figure.index("</svg>") + 6]
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    assert "style=" not in figure
    assert "&lt;per&gt;" in figure
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == 2
    assert "No requests" in bar_chart("Empty", [])


def test_examples_carry_the_model_id_and_no_key() -> None:
    tricky = 'it\'s/"odd"'
    out = dict((i, code) for i, _, code in examples("http://gw.example/v1", tricky))
    argv = shlex.split(out["curl"].replace("\\\n", " "))
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == tricky
    assert "GATEWAY_API_KEY" in out["python"] and "GATEWAY_API_KEY" in out["node"]
    assert json.dumps(tricky) in out["python"]


def test_a_routed_model_shows_what_all_its_targets_carry() -> None:
    from gateway.config import Price
    from gateway.console.models_view import Live, ModelRow, Target
    from gateway.providers.base import Capabilities

    def target(caps: Capabilities, cap: int | None) -> Target:
        return Target("t", "p", "mock", "u", Price(), cap, caps, False)

    row = ModelRow(
        "r",
        "gateway",
        "weighted",
        (
            target(Capabilities(), 100),
            target(Capabilities(audio=False, json_schema="emulated"), None),
        ),
        (),
        Live(0, None, None, None),
    )
    caps = row.capabilities
    assert caps.vision and not caps.audio and caps.json_schema == "mixed"
    assert row.max_output == "up to 100"
    assert row.price("input") == "free"
