"""`gateway keys ...`: create, list, show, revoke, topup; human and JSON output."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.keys import parse_key
from gateway.cli import keys as keys_cli
from gateway.store.records import UsageRow
from gateway.store.sqlite import SqliteStore


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cli.add_parser(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "keys.sqlite3")


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_create_prints_the_key_once_and_stores_its_limits(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    code = cli(
        "keys", "create", "--db", db, "--name", "alice", "--models", "gpt-test, openai/*",
        "--rpm", "60", "--tpm", "10000", "--spend-limit", "12.5", "--period", "month",
        "--credit", "0.1", "--expires", "30",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    (full_key,) = [w for w in out.split() if w.startswith("sk-gw-")]
    parsed = parse_key(full_key)
    assert parsed is not None
    assert "only time" in out
    store = SqliteStore(db)
    record = store.get_key(parsed[0])
    assert record is not None
    assert record.models == ("gpt-test", "openai/*")
    assert (record.rpm, record.tpm) == (60, 10000)
    assert (record.spend_limit_micros, record.spend_period) == (12_500_000, "month")
    assert record.prepaid and store.credit_balance(record.key_id) == 100_000
    assert record.expires_at is not None
    assert before + 30 * 86400 <= record.expires_at <= time.time() + 30 * 86400
    store.close()

    # Nothing shows the key again.
    for argv in (("list",), ("show", parsed[0])):
        assert cli("keys", *argv, "--db", db) == 0
        assert cli("keys", *argv, "--db", db, "--json") == 0
        shown = capsys.readouterr().out
        assert full_key not in shown and parsed[1] not in shown


def test_json_create_list_show_revoke_topup(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(capsys, "keys", "create", "--db", db, "--name", "p", "--credit", "1")
    key_id = created["id"]
    assert parse_key(created["key"]) is not None
    assert created["prepaid"] is True and created["models"] is None

    listed = run_json(capsys, "keys", "list", "--db", db)
    assert [(k["id"], k["credit_micros"]) for k in listed["data"]] == [(key_id, 1_000_000)]

    topped = run_json(capsys, "keys", "topup", key_id, "2.000001", "--db", db)
    assert topped["micros"] == 2_000_001 and topped["credit_micros"] == 3_000_001

    store = SqliteStore(db)
    store.write_usage(
        [UsageRow("r1", key_id, "gpt-test", "fake", 100, 20, 10, 1_000, "ok", 30, time.time())]
    )
    store.close()
    shown = run_json(capsys, "keys", "show", key_id, "--db", db, "--period", "day")
    assert shown["credit_micros"] == 3_000_001 - 1_000
    assert (
        shown["usage"]["requests"] == 1
        and shown["usage"]["by_model"]["gpt-test"]["cost_micros"] == 1_000
    )
    assert "spent_micros" not in shown  # no spend limit

    revoked = run_json(capsys, "keys", "revoke", key_id, "--db", db)
    assert revoked["state"] == "revoked"


def test_human_output(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    SqliteStore(db).close()  # a database without keys
    assert cli("keys", "list", "--db", db) == 0
    assert "no keys" in capsys.readouterr().out
    created = run_json(
        capsys, "keys", "create", "--db", db, "--name", "bob", "--spend-limit", "5",
        "--period", "day",
    )  # fmt: skip
    assert cli("keys", "list", "--db", db) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert created["id"] in listing[1] and "$5.000000/day" in listing[1]
    assert cli("keys", "show", created["id"], "--db", db) == 0
    shown = capsys.readouterr().out
    assert "spent:       $0.000000 this day" in shown
    assert "requests 0" in shown
    assert cli("keys", "revoke", created["id"], "--db", db) == 0
    assert "revoked key" in capsys.readouterr().out


def test_update_changes_what_it_is_told_and_says_what_changed(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = run_json(
        capsys, "keys", "create", "--db", db, "--name", "carol", "--rpm", "60",
        "--spend-limit", "5", "--period", "day",
    )  # fmt: skip
    key_id = created["id"]
    assert cli("keys", "update", key_id, "--db", db, "--rpm", "120", "--models", "a, b/*") == 0
    out, err = capsys.readouterr()
    assert f"updated key {key_id} (carol): models all -> a, b/*; rpm 60 -> 120" in out
    assert f"gateway keys: database {db} (--db)" in err
    before = time.time()
    updated = run_json(
        capsys, "keys", "update", key_id, "--db", db, "--name", "carol2", "--rpm", "none",
        "--tpm", "5000", "--spend-limit", "none", "--expires", "2", "--models", "all",
    )  # fmt: skip
    assert (updated["name"], updated["rpm"], updated["tpm"]) == ("carol2", None, 5000)
    assert updated["models"] is None
    assert (updated["spend_limit_micros"], updated["spend_period"]) == (None, None)
    assert before + 2 * 86400 <= updated["expires_at"] <= time.time() + 2 * 86400
    again = run_json(capsys, "keys", "update", key_id, "--db", db, "--expires", "never")
    assert again["expires_at"] is None
    assert cli("keys", "update", key_id, "--db", db, "--spend-limit", "1.5") == 2
    assert "spend_period: set it (day or month) with a spend limit" in capsys.readouterr().err
    limited = run_json(
        capsys, "keys", "update", key_id, "--db", db, "--spend-limit", "1.5", "--period", "month"
    )
    assert (limited["spend_limit_micros"], limited["spend_period"]) == (1_500_000, "month")
    for wrong, message in (("--rpm", "x"), ("--expires", "0"), ("--expires", "soon")):
        assert cli("keys", "update", key_id, "--db", db, wrong, message) == 2
        assert wrong in capsys.readouterr().err
    assert cli("keys", "update", key_id, "--db", db) == 2
    assert "Nothing to change" in capsys.readouterr().err
    assert cli("keys", "update", "nosuchkey000", "--db", db, "--rpm", "1") == 1
    assert "no key with the id" in capsys.readouterr().err
    store = SqliteStore(db)
    record = store.get_key(key_id)
    store.close()
    assert record is not None and record.name == "carol2"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("create", "--name", "x", "--spend-limit", "5"), 2, "--period go together"),
        (("create", "--name", "x", "--period", "day"), 2, "--period go together"),
        (("create", "--name", "x", "--credit", "abc"), 2, "not an amount"),
        (("create", "--name", "x", "--credit", "-1"), 2, "not an amount"),
        (("create", "--name", "x", "--credit", "NaN"), 2, "not an amount"),
        (("create", "--name", "x", "--credit", "0.0000001"), 2, "6 decimals"),
        (("create", "--name", "x", "--rpm", "0"), 2, "rpm"),
        (("create", "--name", "x", "--expires", "0"), 2, "--expires"),
        (("create", "--name", ""), 2, "name"),
        (("show", "nosuchkey000"), 1, "no key"),
        (("revoke", "nosuchkey000"), 1, "no key"),
        (("topup", "nosuchkey000", "1"), 1, "no key"),
    ],
)
def test_mistakes_are_one_line_and_a_status(
    db: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, message: str
) -> None:
    SqliteStore(db).close()
    assert cli("keys", *argv, "--db", db) == code
    used, mistake = capsys.readouterr().err.strip().splitlines()
    assert used.startswith("gateway keys: database ") and used.endswith(f"{db} (--db)")
    assert mistake.startswith("gateway keys: ") and message in mistake


def test_topup_of_a_postpaid_key_or_zero_is_refused(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    postpaid = run_json(capsys, "keys", "create", "--db", db, "--name", "q")
    assert cli("keys", "topup", postpaid["id"], "1", "--db", db) == 2
    assert "not prepaid" in capsys.readouterr().err
    prepaid = run_json(capsys, "keys", "create", "--db", db, "--name", "p", "--credit", "0")
    assert cli("keys", "topup", prepaid["id"], "0", "--db", db) == 2
    assert "more than $0" in capsys.readouterr().err


def test_the_database_comes_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    target = tmp_path / "state" / "from-config.sqlite3"
    config.write_text(f'[state]\nsqlite_path = "{target}"\n')
    run_json(capsys, "keys", "create", "--config", str(config), "--name", "a")
    assert target.exists()
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    assert cli("keys", "list", "--json") == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)["data"]) == 1  # stdout holds the JSON alone
    assert f"database {target} ([state] sqlite_path of {config})" in err
    monkeypatch.delenv("GATEWAY_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert cli("keys", "list") == 1  # ./gateway.sqlite3, which does not exist
    err = capsys.readouterr().err
    assert f"database {tmp_path / 'gateway.sqlite3'} (the default: no --config" in err
    assert f"no database at {tmp_path / 'gateway.sqlite3'}" in err
    assert not (tmp_path / "gateway.sqlite3").exists()  # not created empty
    config.write_text("[state\n")
    assert cli("keys", "list", "--config", str(config)) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert cli("keys", "list", "--config", str(tmp_path / "missing.toml")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_file_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"this is not sqlite" * 100)
    assert cli("keys", "list", "--db", str(bogus)) == 2
    assert "cannot open the database" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0", 0), ("1", 1_000_000), ("0.1", 100_000), ("$2.50", 2_500_000), ("0.000001", 1)],
)
def test_usd_to_micros_is_exact(text: str, micros: int) -> None:
    assert keys_cli.usd_to_micros(text) == micros
