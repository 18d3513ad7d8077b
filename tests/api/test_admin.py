"""The admin HTTP API: scope on every route, key lifecycle, errors in OpenAI's shape."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart_trio import QuartTrio

from gateway.api.admin import admin_digest, make_admin_blueprint
from gateway.auth.cache import ManagedKeyStore
from gateway.auth.keys import new_key, parse_key
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.billing.ledger import Ledger
from gateway.config import KeyConfig
from gateway.errors import AuthenticationFailed
from gateway.store.records import KeyLimits, NewKey, StoreError, Topup, UsageRow
from gateway.store.sqlite import AsyncSqlite

ADMIN_KEY = "adm-" + "x" * 40
STATIC_KEY = "sk-static-0123456789"


@dataclass
class Admin:
    client: Any
    db: AsyncSqlite
    keys: ManagedKeyStore
    ledger: Ledger
    topups: list[Topup]
    auth: Authenticator

    async def call(
        self, method: str, path: str, *, json: Any = None, key: str | None = ADMIN_KEY, **kw: Any
    ) -> tuple[int, Any]:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        resp = await self.client.open(path, method=method, json=json, headers=headers, **kw)
        return resp.status_code, await resp.get_json()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    db = await AsyncSqlite.open(tmp_path / "gateway.sqlite3")
    topups: list[Topup] = []

    async def on_topup(t: Topup) -> None:
        topups.append(t)

    keys = ManagedKeyStore(db, on_topup=on_topup)
    await keys.refresh()
    ledger = await Ledger.open(db, tmp_path / "journal")

    async def limit_status(key_id: str, now: float, limits: KeyLimits) -> dict[str, Any]:
        return {"key_id": key_id, "requests_remaining": 7, "rpm": limits.rpm}

    app = QuartTrio("test")
    app.register_blueprint(
        make_admin_blueprint(
            db, keys, admin_digest(ADMIN_KEY), ledger=ledger, limit_status=limit_status
        )
    )
    auth = Authenticator([keys, StaticKeyStore([KeyConfig(name="static", key=STATIC_KEY)])])
    yield Admin(app.test_client(), db, keys, ledger, topups, auth)
    await ledger.aclose()
    await db.aclose()


async def created(admin: Admin, **body: Any) -> dict[str, Any]:
    status, out = await admin.call("POST", "/admin/keys", json={"name": "k", **body})
    assert status == 201, out
    return out  # type: ignore[no-any-return]


ROUTES = [
    ("POST", "/admin/keys", {"name": "x"}),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys/{id}", None),
    ("PATCH", "/admin/keys/{id}", {"rpm": 5}),
    ("DELETE", "/admin/keys/{id}", None),
    ("POST", "/admin/keys/{id}/topup", {"micros": 5}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_requires_the_admin_key(
    admin: Admin, method: str, path: str, body: Any
) -> None:
    managed = await created(admin, credit_micros=10)
    url = path.format(id=managed["id"])
    for wrong in (None, "", managed["key"], STATIC_KEY, ADMIN_KEY + "x", ADMIN_KEY[:-1]):
        status, out = await admin.call(method, url, json=body, key=wrong)
        assert status == 401, (wrong, out)
        assert set(out["error"]) == {"message", "type", "param", "code"}
        assert out["error"]["type"] == "authentication_error"
    for header in ("Basic " + ADMIN_KEY, ADMIN_KEY):
        resp = await admin.client.open(
            url, method=method, json=body, headers={"Authorization": header}
        )
        assert resp.status_code == 401
    status, _ = await admin.call(method, url, json=body)
    assert status in (200, 201)


async def test_the_admin_key_is_not_a_v1_key(admin: Admin) -> None:
    with pytest.raises(AuthenticationFailed):
        admin.auth.authenticate(b"Bearer " + ADMIN_KEY.encode())


async def test_create_shows_the_key_once_and_it_works_at_once(admin: Admin) -> None:
    out = await created(
        admin,
        name="alice",
        models=["gpt-test", "openai/*"],
        rpm=60,
        tpm=10_000,
        spend_limit_micros=5_000_000,
        spend_period="month",
        credit_micros=1_000_000,
        expires_at=time.time() + 3600,
    )
    parsed = parse_key(out["key"])
    assert parsed is not None and parsed[0] == out["id"]
    assert out["models"] == ["gpt-test", "openai/*"]
    assert out["prepaid"] is True and out["state"] == "active"
    principal = admin.auth.authenticate(b"Bearer " + out["key"].encode())
    assert principal.key_id == out["id"] and principal.may_use("openai/gpt-4o")

    status, listed = await admin.call("GET", "/admin/keys")
    assert status == 200 and listed["object"] == "list"
    assert [k["id"] for k in listed["data"]] == [out["id"]]
    status, shown = await admin.call("GET", f"/admin/keys/{out['id']}")
    assert status == 200
    for body in (listed, shown):
        assert out["key"] not in str(body) and parsed[1] not in str(body)
    assert shown["credit_micros"] == 1_000_000
    assert shown["spent_micros"] == 0
    assert shown["limits"] == {"key_id": out["id"], "requests_remaining": 7, "rpm": 60}


async def test_show_includes_usage_not_yet_flushed(admin: Admin) -> None:
    out = await created(admin, spend_limit_micros=100, spend_period="day", credit_micros=1000)
    now = time.time()
    for i, (model, cost, outcome) in enumerate(
        [("a", 10, "ok"), ("a", 20, "client_gone"), ("b", 30, "ok")]
    ):
        await admin.ledger.record(
            UsageRow(f"r{i}", out["id"], model, "fake", 100, 10, 5, cost, outcome, 50, now)
        )
    status, shown = await admin.call("GET", f"/admin/keys/{out['id']}?period=day")
    assert status == 200
    usage = shown["usage"]
    assert usage["period"] == "day"
    assert (usage["requests"], usage["cost_micros"], usage["prompt_tokens"]) == (3, 60, 300)
    assert usage["by_model"]["a"]["requests"] == 2
    assert usage["by_status"] == {"client_gone": 1, "ok": 2}
    assert shown["spent_micros"] == 60
    assert shown["credit_micros"] == 940
    status, everything = await admin.call("GET", f"/admin/keys/{out['id']}?period=all")
    assert everything["usage"]["since"] is None and everything["usage"]["requests"] == 3
    status, bad = await admin.call("GET", f"/admin/keys/{out['id']}?period=week")
    assert status == 400 and bad["error"]["param"] == "period"


async def test_patch_changes_a_key_in_this_process_at_once(admin: Admin) -> None:
    out = await created(admin, name="alice", rpm=10, spend_limit_micros=500, spend_period="day")
    header = b"Bearer " + out["key"].encode()
    assert admin.auth.authenticate(header).may_use("gpt-test")
    later = time.time() + 3600
    status, patched = await admin.call(
        "PATCH",
        f"/admin/keys/{out['id']}",
        json={"name": "alice2", "models": ["mock-fast"], "rpm": None, "tpm": 100,
              "expires_at": later},
    )  # fmt: skip
    assert status == 200, patched
    assert (patched["name"], patched["models"], patched["rpm"], patched["tpm"]) == (
        "alice2", ["mock-fast"], None, 100,
    )  # fmt: skip
    assert patched["spend_limit_micros"] == 500 and patched["expires_at"] == later
    who = admin.auth.authenticate(header)
    assert who.name == "alice2" and not who.may_use("gpt-test") and who.may_use("mock-fast")
    assert who.limits is not None and (who.limits.rpm, who.limits.tpm) == (None, 100)
    # Clearing the spend limit clears its period; the key keeps working.
    status, cleared = await admin.call(
        "PATCH", f"/admin/keys/{out['id']}", json={"spend_limit_micros": None}
    )
    assert status == 200 and cleared["spend_period"] is None
    status, shown = await admin.call("GET", f"/admin/keys/{out['id']}")
    assert shown["name"] == "alice2" and shown["spend_limit_micros"] is None


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({}, None, "Nothing to change"),
        ({"rpm": 0}, "rpm", "rpm"),
        ({"rpm": "5"}, "rpm", "rpm"),
        ({"tpm": 1.5}, "tpm", "tpm"),
        ({"models": "gpt-test"}, "models", "list"),
        ({"models": [""]}, "models", "models"),
        ({"name": ""}, "name", "name"),
        ({"spend_period": "week"}, "spend_period", "spend_period"),
        ({"spend_period": "day"}, "spend_period", "spend limit"),  # no limit to go with
        ({"expires_at": 1.0}, "expires_at", "future"),
        ({"credit_micros": 5}, "credit_micros", "Unknown field"),
    ],
)
async def test_patch_refuses_what_a_key_cannot_be(
    admin: Admin, body: dict[str, Any], param: str | None, message: str
) -> None:
    out = await created(admin, rpm=7)
    status, error = await admin.call("PATCH", f"/admin/keys/{out['id']}", json=body)
    assert status == 400, error
    assert error["error"]["param"] == param and message in error["error"]["message"], error
    status, shown = await admin.call("GET", f"/admin/keys/{out['id']}")
    assert shown["rpm"] == 7  # nothing changed


async def test_patch_of_an_unknown_key_is_404(admin: Admin) -> None:
    for key_id in ("nosuchkey000", "not-an-id"):
        status, error = await admin.call("PATCH", f"/admin/keys/{key_id}", json={"rpm": 1})
        assert status == 404 and error["error"]["code"] == "key_not_found"


async def test_revoke_takes_effect_in_this_process_at_once(admin: Admin) -> None:
    out = await created(admin)
    header = b"Bearer " + out["key"].encode()
    assert admin.auth.authenticate(header).key_id == out["id"]
    status, revoked = await admin.call("DELETE", f"/admin/keys/{out['id']}")
    assert status == 200 and revoked["state"] == "revoked" and revoked["revoked_at"]
    with pytest.raises(AuthenticationFailed, match="revoked"):
        admin.auth.authenticate(header)
    status, again = await admin.call("DELETE", f"/admin/keys/{out['id']}")
    assert status == 200 and again["revoked_at"] == revoked["revoked_at"]


async def test_topup_adds_credit_and_tells_the_limiter(admin: Admin) -> None:
    out = await created(admin, credit_micros=100)
    status, body = await admin.call(
        "POST", f"/admin/keys/{out['id']}/topup", json={"micros": 250, "note": "invoice 7"}
    )
    assert status == 200
    assert body["credit_micros"] == 350 and body["micros"] == 250
    # Every top-up after the cache loaded, the initial credit included: a limiter that
    # seeded this key from `credit_snapshot` skips ids up to the snapshot's.
    assert [(t.key_id, t.micros) for t in admin.topups] == [(out["id"], 100), (out["id"], 250)]
    assert body["topup_id"] == admin.topups[-1].topup_id


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"micros": 0}, "micros"),
        ({"micros": -5}, "micros"),
        ({"micros": 1.5}, "micros"),
        ({"micros": True}, "micros"),
        ({}, "micros"),
        ({"micros": 5, "note": 7}, "note"),
        ({"micros": 5, "usd": 1}, "usd"),
    ],
)
async def test_topup_rejects_bad_bodies(admin: Admin, body: Any, param: str) -> None:
    out = await created(admin, credit_micros=0)
    status, err = await admin.call("POST", f"/admin/keys/{out['id']}/topup", json=body)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == param


async def test_topup_of_a_postpaid_key_is_refused(admin: Admin) -> None:
    out = await created(admin)
    status, err = await admin.call("POST", f"/admin/keys/{out['id']}/topup", json={"micros": 5})
    assert status == 400 and err["error"]["code"] == "key_not_prepaid"
    assert admin.topups == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({}, "name"),
        ({"name": "a", "models": "gpt"}, "models"),
        ({"name": "a", "models": [1]}, "models"),
        ({"name": "a", "rpm": 0}, "rpm"),
        ({"name": "a", "tpm": "many"}, "tpm"),
        ({"name": "a", "spend_limit_micros": 5}, "spend_period"),
        ({"name": "a", "spend_limit_micros": 5, "spend_period": "year"}, "spend_period"),
        ({"name": "a", "credit_micros": -1}, "credit_micros"),
        ({"name": "a", "expires_at": 1.0}, "expires_at"),
        ({"name": "a", "secret": "mine"}, "secret"),
    ],
)
async def test_create_rejects_bad_bodies(admin: Admin, body: Any, param: str) -> None:
    status, err = await admin.call("POST", "/admin/keys", json=body)
    assert status == 400, err
    assert err["error"]["param"] == param
    assert (await admin.db.list_keys()) == []


async def test_non_json_bodies_are_400(admin: Admin) -> None:
    for data in (b"not json", b"[1]", b""):
        resp = await admin.client.post(
            "/admin/keys", data=data, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert resp.status_code == 400
        assert (await resp.get_json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("key_id", ["abcdefghijkl", "NOT-AN-ID", "x" * 300])
async def test_unknown_keys_are_404_without_echoing_junk(admin: Admin, key_id: str) -> None:
    for method, path, body in ROUTES[2:]:
        status, err = await admin.call(method, path.format(id=key_id), json=body)
        assert status == 404, (method, path)
        assert err["error"]["code"] == "key_not_found"
        if key_id != "abcdefghijkl":
            assert key_id not in err["error"]["message"]


async def test_a_failing_store_is_503_in_openai_shape(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[Any]:
        raise StoreError("database is locked")

    monkeypatch.setattr(admin.db, "list_keys", broken)
    status, err = await admin.call("GET", "/admin/keys")
    assert status == 503
    assert err["error"]["code"] == "store_unavailable"
    assert err["error"]["type"] == "gateway_unavailable_error"  # ours, not a bug, not upstream
    assert "locked" not in err["error"]["message"]


async def test_the_digest_must_be_sha256(admin: Admin) -> None:
    with pytest.raises(ValueError):
        make_admin_blueprint(admin.db, admin.keys, b"short")
    with pytest.raises(ValueError):
        make_admin_blueprint(admin.db, admin.keys, ADMIN_KEY.encode())


async def test_keys_from_another_process_are_listed(admin: Admin) -> None:
    await admin.db.create_key(NewKey("from-cli"), time.time(), new_key())
    status, listed = await admin.call("GET", "/admin/keys")
    assert status == 200
    assert [k["name"] for k in listed["data"]] == ["from-cli"]
