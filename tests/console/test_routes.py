"""The console's login, cookies and CSRF through Quart's test client (no browser): the
cases a browser on this machine cannot show, such as a proxy that ends TLS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.config import parse_config

ADMIN = "adm-routes-0123456789"


def client(tmp_path: Path) -> Any:
    config = parse_config(
        {
            "providers": {"mock": {"kind": "mock"}},
            "models": {"m": {"provider": "mock"}},
            "state": {"sqlite_path": str(tmp_path / "gw.sqlite3"), "admin_key": ADMIN},
        },
        env={},
        source="test",
    )
    return create_app(config).quart.test_client()


async def log_in(c: Any, headers: dict[str, str] | None = None) -> Any:
    page = await (await c.get("/console/login")).get_data(as_text=True)
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token is not None
    return await c.post(
        "/console/login",
        form={"login_token": token.group(1), "admin_key": ADMIN, "next": "/console/models"},
        headers=headers or {},
    )


async def csrf_of(c: Any) -> str:
    page = await (await c.get("/console/models")).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return token.group(1)


async def test_behind_a_tls_proxy_the_cookie_is_secure_and_https_origins_pass(
    tmp_path: Path,
) -> None:
    c = client(tmp_path)
    resp = await log_in(c, {"x-forwarded-proto": "https", "origin": "https://localhost"})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/models"
    cookie = next(v for v in resp.headers.getlist("set-cookie") if v.startswith("gateway_console="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = await csrf_of(c)
    resp = await c.post(
        "/console/logout", form={"csrf_token": token}, headers={"origin": "https://localhost"}
    )
    assert resp.status_code == 303


async def test_plain_http_cookies_are_not_secure_and_other_hosts_are_refused(
    tmp_path: Path,
) -> None:
    c = client(tmp_path)
    resp = await log_in(c)
    cookie = next(v for v in resp.headers.getlist("set-cookie") if v.startswith("gateway_console="))
    assert "Secure" not in cookie
    token = await csrf_of(c)
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        resp = await c.post(
            "/console/logout", form={"csrf_token": token}, headers={"origin": origin}
        )
        assert resp.status_code == 403, origin
    assert (await c.get("/console/models")).status_code == 200  # still logged in


async def test_next_never_leaves_the_console(tmp_path: Path) -> None:
    c = client(tmp_path)
    for target in ("https://evil.example/console/", "//evil.example/console/", "/admin/keys"):
        page = await (await c.get("/console/login", query_string={"next": target})).get_data(
            as_text=True
        )
        assert 'name="next" value="/console/keys"' in page, target


def test_every_template_and_static_file_ships_in_a_wheel() -> None:
    import tomllib
    from fnmatch import fnmatch

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["gateway.console"]
    package = root / "gateway" / "console"
    files = [
        p.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for p in (package / folder).rglob("*")
        if p.is_file()
    ]
    assert files
    assert [f for f in files if not any(fnmatch(f, pat) for pat in patterns)] == []
