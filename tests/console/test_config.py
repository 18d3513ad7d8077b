"""`[console]`: read and checked like every table; public_models and enabled as served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import ConfigError, ConsoleConfig, parse_config

BASE: dict[str, Any] = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {"m": {"provider": "mock"}},
}


def config(tmp_path: Path, console: dict[str, Any] | None, admin: bool = True) -> Any:
    data: dict[str, Any] = {
        **BASE,
        "state": {"sqlite_path": str(tmp_path / "gw.sqlite3")},
    }
    if admin:
        data["state"]["admin_key"] = "adm-cfg-0123456789"
    if console is not None:
        data["console"] = console
    return parse_config(data, env={}, source="test")


def test_defaults_and_values(tmp_path: Path) -> None:
    assert config(tmp_path, None).console == ConsoleConfig()
    c = config(
        tmp_path,
        {"public_models": True, "session_max_age_s": 600, "login_attempts_per_minute": 3},
    ).console
    assert (c.public_models, c.session_max_age_s, c.login_attempts_per_minute) == (True, 600, 3)


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"public_model": True}, "console.public_model"),
        ({"public_models": "yes"}, "console.public_models"),
        ({"session_max_age_s": 1}, "console.session_max_age_s"),
        ({"login_attempts_per_minute": 0}, "console.login_attempts_per_minute"),
    ],
)
def test_bad_keys_are_refused_by_name(tmp_path: Path, table: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        config(tmp_path, table)


async def test_models_page_needs_a_login_unless_public(tmp_path: Path) -> None:
    private = create_app(config(tmp_path, None)).quart.test_client()
    resp = await private.get("/console/models")
    assert resp.status_code == 303
    assert resp.headers["location"].startswith("/console/login?next=/console/models")
    public = create_app(config(tmp_path, {"public_models": True})).quart.test_client()
    resp = await public.get("/console/models")
    assert resp.status_code == 200
    assert 'id="model-m"' in await resp.get_data(as_text=True)
    resp = await public.get("/console/keys")  # only the Models pages are public
    assert resp.status_code == 303


async def test_root_leads_to_the_console_and_disabled_means_404(tmp_path: Path) -> None:
    on = create_app(config(tmp_path, None)).quart.test_client()
    resp = await on.get("/")
    assert (resp.status_code, resp.headers["location"]) == (303, "/console/")
    off = create_app(config(tmp_path, {"enabled": False})).quart.test_client()
    for path in ("/", "/console/login", "/console/models"):
        resp = await off.get(path)
        assert resp.status_code == 404
        assert (await resp.get_json())["error"]["type"] == "invalid_request_error"
    no_admin = create_app(config(tmp_path, None, admin=False)).quart.test_client()
    assert (await no_admin.get("/console/login")).status_code == 404


def test_a_reload_may_open_the_models_page_but_not_change_sessions(tmp_path: Path) -> None:
    from gateway.config.reload import restart_needed

    old = config(tmp_path, None)
    assert restart_needed(old, config(tmp_path, {"public_models": True, "enabled": False})) == []
    assert restart_needed(old, config(tmp_path, {"session_max_age_s": 60})) == [
        "console.session_max_age_s"
    ]
