"""The Redis backend's Lua scripts as loaded from package data: the numbers they share
with the Python core agree, and the files are shipped with the package."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from importlib.resources import files

import pytest

from gateway.billing.limits import scripts
from gateway.billing.limits.gcra import MAX_DEBT_WINDOWS, WINDOW_MS, RateState, store_backlog
from gateway.store.redis_client import RedisClient
from tests.paths import REPO
from tests.redis_server import RedisServer

LUA_DIR = files("gateway.billing.limits") / "lua"
LUA_FILES = sorted(p.name for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))
SCRIPTS = {
    "admit": scripts.ADMIT_LUA,
    "settle": scripts.SETTLE_LUA,
    "status": scripts.STATUS_LUA,
    "load": scripts.LOAD_LUA,
    "topup": scripts.TOPUP_LUA,
    "reconcile": scripts.RECONCILE_LUA,
}


def test_every_lua_file_is_a_script_or_the_common_helpers() -> None:
    expected = sorted(f"{name}.lua" for name in [*SCRIPTS, "common"])
    assert expected == LUA_FILES


def test_every_placeholder_names_a_python_constant_and_every_constant_is_used() -> None:
    used: set[str] = set()
    for name in LUA_FILES:
        used.update(scripts.PLACEHOLDER.findall((LUA_DIR / name).read_text()))
    assert used == set(scripts.CONSTANTS)


def test_the_constants_are_the_cores_own() -> None:
    assert scripts.CONSTANTS == {"WINDOW_MS": WINDOW_MS, "MAX_DEBT_WINDOWS": MAX_DEBT_WINDOWS}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_no_placeholder_is_left_in_a_loaded_script(name: str) -> None:
    assert "${" not in SCRIPTS[name]


def test_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="NOPE"):
        scripts.render("local x = ${NOPE}")
    assert scripts.render("local w = ${WINDOW_MS}") == f"local w = {WINDOW_MS}"


def test_pyproject_ships_every_lua_file() -> None:
    """A non-editable install has only the files `package-data` names."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["gateway.billing.limits"]
    for name in LUA_FILES:
        assert any(fnmatch(f"lua/{name}", g) for g in globs), name


# -------------------------------------------------------------- on a real redis-server


async def test_lua_reads_the_python_constants(redis: RedisServer) -> None:
    source = scripts.render(scripts.lua_file("common") + "\nreturn {W, DEBT}\n")
    async with RedisClient(redis.url) as client:
        assert await client.register_script(source)() == [WINDOW_MS, MAX_DEBT_WINDOWS]


# (backlog in ms*units, limit): empty, ordinary, a remainder, at and past the debt cap.
CASES = [
    (-5, 10),
    (0, 10),
    (60_000, 1),
    (123_457, 7),
    (MAX_DEBT_WINDOWS * WINDOW_MS * 3, 3),
    (MAX_DEBT_WINDOWS * WINDOW_MS * 3 + 1, 3),
    (10**15, 1_000_000),
]


async def test_lua_stores_a_backlog_as_python_does(redis: RedisServer) -> None:
    """`put` (common.lua) and `store_backlog` clamp and split a backlog alike."""
    source = scripts.render(
        scripts.lua_file("common")
        + "\nput(KEYS[1], 'tt', 'tc', tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"
        + "\nreturn redis.call('HMGET', KEYS[1], 'tt', 'tc')\n"
    )
    now_ms = 1_800_000_000_000
    async with RedisClient(redis.url) as client:
        script = client.register_script(source)
        for value, limit in CASES:
            key = f"test-scripts:{value}:{limit}"
            tat, carry = await script(keys=[key], args=[value, now_ms, limit])
            await client.execute("DEL", key)
            state = RateState()
            store_backlog(state, value, now_ms, limit)
            assert (int(tat), int(carry)) == (state.tat_ms, state.carry), (value, limit)
