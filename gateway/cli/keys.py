"""`gateway keys create|list|show|update|revoke|topup`: managed keys from the command line.

The CLI opens the database directly (SQLite's WAL lets it write while a gateway
serves from the same file; PostgreSQL is shared anyway); a running gateway sees the
change at its next key refresh, within a few seconds (at once on PostgreSQL). The
database is `--db PATH|URL`, else the `[state] postgres_url` or `sqlite_path` of the
config file (`--config`, or $GATEWAY_CONFIG), else `./gateway.sqlite3`. Amounts are
given in USD and stored as integer micro-dollars, parsed as decimals so that "0.1" is
exactly 100000 micros. `--json` prints
machine-readable output; a new key is printed once, and can never be shown again.
Every command says which database it used (on stderr); only `create` makes one.
`update` shares its checks with the admin API's PATCH (gateway/auth/manage.py).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from gateway.auth.keys import new_key
from gateway.auth.manage import check_update, key_json
from gateway.billing.spend import usd
from gateway.cli.common import (
    CONFIG_ENV,
    DEFAULT_DB,
    CliError,
    config_path,
    open_database,
    sqlite_path,
)
from gateway.store.periods import PERIODS, SpendPeriod, period_bounds
from gateway.store.records import KEEP, Keep, KeyRecord, KeyUpdate, NewKey, StoreError

if TYPE_CHECKING:  # the store (and trio) only once a command opens it
    from gateway.store.base import Store

T = TypeVar("T")
MICROS_PER_USD: Final = Decimal(1_000_000)
_PERIOD: Final[dict[str, SpendPeriod]] = {p: p for p in PERIODS}


def usd_to_micros(text: str) -> int:
    """'1.25' -> 1250000; at most 6 decimals, not negative."""
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise CliError(f"not an amount in USD: {text!r}", 2) from None
    if not amount.is_finite() or amount < 0:
        raise CliError(f"not an amount in USD: {text!r}", 2)
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise CliError(f"{text!r}: amounts are counted in whole micro-dollars (6 decimals)", 2)
    return int(micros)


def db_path(args: argparse.Namespace) -> tuple[str, str]:
    """--db, else the config's [state] sqlite_path, else ./gateway.sqlite3; and where
    that came from."""
    if args.db:
        return str(args.db), "--db"
    return sqlite_path(config_path(args.config))


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `keys` and its subcommands to the `gateway` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH|URL",
        help=f"SQLite file or postgresql:// URL (default: config's or ./{DEFAULT_DB})",
    )
    common.add_argument(
        "--config", metavar="PATH", help=f"config to read [state] sqlite_path from (${CONFIG_ENV})"
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    keys = subparsers.add_parser("keys", help="manage API keys, their limits and credit")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", parents=[common], help="create a key (printed once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--models", help="comma-separated model ids or PROVIDER/* (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--spend-limit", metavar="USD", help="spend limit per --period")
    create.add_argument("--period", choices=PERIODS, help="calendar UTC period of --spend-limit")
    create.add_argument("--credit", metavar="USD", help="prepaid credit: the key stops at 0")
    create.add_argument("--expires", type=float, metavar="DAYS", help="expire after DAYS")

    sub.add_parser("list", parents=[common], help="list keys (never their secrets)")

    show = sub.add_parser("show", parents=[common], help="a key, its usage, spend and credit")
    show.add_argument("key_id", metavar="ID")
    show.add_argument(
        "--period", choices=(*PERIODS, "all"), default="month", help="usage period shown"
    )

    update = sub.add_parser(
        "update", parents=[common], help="change a key's name, models, limits or expiry"
    )
    update.add_argument("key_id", metavar="ID")
    update.add_argument("--name", help="a new name")
    update.add_argument("--models", help="comma-separated model ids or PROVIDER/*, or 'all'")
    update.add_argument("--rpm", metavar="N|none", help="requests per minute, or none")
    update.add_argument("--tpm", metavar="N|none", help="tokens per minute, or none")
    update.add_argument("--spend-limit", metavar="USD|none", help="spend limit per period, or none")
    update.add_argument("--period", choices=PERIODS, help="calendar UTC period of the spend limit")
    update.add_argument("--expires", metavar="DAYS|never", help="expire DAYS from now, or never")

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id", metavar="ID")

    topup = sub.add_parser("topup", parents=[common], help="add credit to a prepaid key")
    topup.add_argument("key_id", metavar="ID")
    topup.add_argument("amount", metavar="USD")

    keys.set_defaults(func=run)
    return keys


def run(args: argparse.Namespace) -> int:
    """Run one `gateway keys` subcommand; the exit status."""
    command = args.keys_command
    try:
        path, origin = db_path(args)
        store = open_database(path, origin, create=command == "create", command="gateway keys")
    except (CliError, StoreError) as e:
        return _fail(e)
    try:
        return _COMMANDS[command](store, args, time.time())
    except (CliError, StoreError) as e:
        return _fail(e)
    except sqlite3.Error as e:  # locked for longer than the busy timeout, disk full...
        return _fail(CliError(f"{path}: {e}"))
    finally:
        store.close()


def _fail(e: Exception) -> int:
    print(f"gateway keys: {e}", file=sys.stderr)
    return e.code if isinstance(e, CliError) else 1


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(text)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _describe(record: KeyRecord, now: float) -> list[str]:
    spend = "-"
    if record.spend_limit_micros is not None:
        spend = f"{usd(record.spend_limit_micros)} per {record.spend_period}"
    return [
        f"id:          {record.key_id}",
        f"name:        {record.name}",
        f"state:       {record.state(now)}",
        f"models:      {'all' if record.models is None else ', '.join(record.models)}",
        f"rpm:         {_limit(record.rpm)}",
        f"tpm:         {_limit(record.tpm)}",
        f"spend limit: {spend}",
        f"prepaid:     {'yes' if record.prepaid else 'no'}",
        f"created:     {_when(record.created_at)}",
        f"expires:     {_when(record.expires_at)}",
        f"revoked:     {_when(record.revoked_at)}",
    ]


def _model_list(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _create(store: Store, args: argparse.Namespace, now: float) -> int:
    if (args.spend_limit is None) != (args.period is None):
        raise CliError("--spend-limit and --period go together", 2)
    if args.expires is not None and not args.expires > 0:
        raise CliError("--expires must be a positive number of days", 2)
    models = None if args.models is None else _model_list(args.models)
    spec = NewKey(
        name=args.name,
        models=models,
        rpm=args.rpm,
        tpm=args.tpm,
        spend_limit_micros=None if args.spend_limit is None else usd_to_micros(args.spend_limit),
        spend_period=args.period,
        credit_micros=None if args.credit is None else usd_to_micros(args.credit),
        expires_at=None if args.expires is None else now + args.expires * 86400,
    )
    try:
        spec.check()
    except ValueError as e:
        raise CliError(str(e), 2) from None
    record, full_key = store.create_key(spec, now, new_key())
    text = "\n".join(
        [
            f"created key {record.key_id} ({record.name})",
            "",
            f"  {full_key}",
            "",
            "This is the only time the key is shown: store it now.",
        ]
    )
    _emit(args, {**key_json(record, now), "key": full_key}, text)
    return 0


def _list(store: Store, args: argparse.Namespace, now: float) -> int:
    records = store.list_keys()
    credit = {r.key_id: store.credit_balance(r.key_id) for r in records if r.prepaid}
    if args.json:
        data = [
            {**key_json(r, now), **({"credit_micros": credit[r.key_id]} if r.prepaid else {})}
            for r in records
        ]
        _emit(args, {"object": "list", "data": data}, "")
        return 0
    if not records:
        print("no keys (create one with: gateway keys create --name NAME)")
        return 0
    rows = [("ID", "NAME", "STATE", "MODELS", "RPM", "TPM", "SPEND LIMIT", "CREDIT")]
    for r in records:
        spend = (
            "-" if r.spend_limit_micros is None else f"{usd(r.spend_limit_micros)}/{r.spend_period}"
        )
        rows.append(
            (
                r.key_id,
                r.name,
                r.state(now),
                "all" if r.models is None else ",".join(r.models),
                _limit(r.rpm),
                _limit(r.tpm),
                spend,
                usd(credit[r.key_id]) if r.prepaid else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _get(store: Store, key_id: str) -> KeyRecord:
    record = store.get_key(key_id)
    if record is None:
        raise CliError(f"no key with the id {key_id!r}")
    return record


def _show(store: Store, args: argparse.Namespace, now: float) -> int:
    record = _get(store, args.key_id)
    period: str = args.period
    since, until = (None, None) if period == "all" else period_bounds(_PERIOD[period], now)
    summary = store.usage_summary(record.key_id, since, until)
    out: dict[str, Any] = {
        **key_json(record, now),
        "usage": {"period": period, **summary.to_dict()},
    }
    lines = _describe(record, now)
    if record.spend_period is not None:
        out["spent_micros"] = store.spent_in_period(record.key_id, record.spend_period, now)
        lines.append(f"spent:       {usd(out['spent_micros'])} this {record.spend_period}")
    if record.prepaid:
        out["credit_micros"] = store.credit_balance(record.key_id)
        lines.append(f"credit:      {usd(out['credit_micros'])}")
    total = summary.total
    lines += [
        "",
        f"usage ({'all time' if period == 'all' else 'this ' + period}):",
        f"  requests {total.requests}, tokens in {total.prompt_tokens} "
        f"(cached {total.cached_tokens}), out {total.completion_tokens}, "
        f"cost {usd(total.cost_micros)}",
    ]
    for model, u in sorted(summary.by_model.items()):
        lines.append(
            f"  {model}: {u.requests} requests, {u.prompt_tokens} in, "
            f"{u.completion_tokens} out, {usd(u.cost_micros)}"
        )
    if summary.by_status:
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(summary.by_status.items()))
        lines.append(f"  by status: {statuses}")
    _emit(args, out, "\n".join(lines))
    return 0


def _or_none(text: str | None, parse: Callable[[str], T], none: str = "none") -> T | Keep | None:
    """An option's value: KEEP when not given, None for `none`, else parsed."""
    if text is None:
        return KEEP
    return None if text.strip().lower() == none else parse(text)


def _count(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise CliError(f"{flag}: expected a whole number or 'none', got {text!r}", 2) from None

    return parse


def _days_from(now: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            days = float(text)
        except ValueError:
            days = math.nan
        if not days > 0 or math.isinf(days):
            raise CliError(
                f"--expires: expected a positive number of days or 'never', got {text!r}", 2
            )
        return now + days * 86400

    return parse


def _update(store: Store, args: argparse.Namespace, now: float) -> int:
    models: tuple[str, ...] | Keep | None = KEEP
    if args.models is not None:
        models = _or_none(
            args.models, lambda t: tuple(m.strip() for m in t.split(",") if m.strip()), "all"
        )
    update = KeyUpdate(
        name=KEEP if args.name is None else args.name,
        models=models,
        rpm=_or_none(args.rpm, _count("--rpm")),
        tpm=_or_none(args.tpm, _count("--tpm")),
        spend_limit_micros=_or_none(args.spend_limit, usd_to_micros),
        spend_period=KEEP if args.period is None else args.period,
        expires_at=_or_none(args.expires, _days_from(now), "never"),
    )
    before = _get(store, args.key_id)
    try:
        check_update(update, now)
        record = store.update_key(args.key_id, update)
    except ValueError as e:
        raise CliError(str(e), 2) from None
    assert record is not None  # it existed a moment ago; keys are never deleted
    changed = [
        f"{label.strip()} {old} -> {new}"
        for (label, old), (_, new) in zip(_fields(before), _fields(record), strict=True)
        if old != new
    ]
    text = f"updated key {record.key_id} ({record.name}): " + ("; ".join(changed) or "no change")
    _emit(args, key_json(record, now), text)
    return 0


def _fields(record: KeyRecord) -> list[tuple[str, str]]:
    """The fields `update` changes, as `keys show` writes them."""
    lines = _describe(record, 0.0)
    wanted = ("name:", "models:", "rpm:", "tpm:", "spend limit:", "expires:")
    return [
        (label, value.strip())
        for label, _, value in (line.partition(":") for line in lines)
        if label + ":" in wanted
    ]


def _revoke(store: Store, args: argparse.Namespace, now: float) -> int:
    record = store.revoke_key(args.key_id, now)
    if record is None:
        raise CliError(f"no key with the id {args.key_id!r}")
    _emit(args, key_json(record, now), f"revoked key {record.key_id} ({record.name})")
    return 0


def _topup(store: Store, args: argparse.Namespace, now: float) -> int:
    micros = usd_to_micros(args.amount)
    record = _get(store, args.key_id)
    if not record.prepaid:
        raise CliError(f"key {record.key_id} is not prepaid: it has no credit to top up", 2)
    if micros <= 0:
        raise CliError("a top-up must be more than $0", 2)
    topup = store.add_topup(record.key_id, micros, now, "cli")
    balance = store.credit_balance(record.key_id)
    out = {
        "id": record.key_id,
        "object": "topup",
        "topup_id": topup.topup_id,
        "micros": micros,
        "credit_micros": balance,
    }
    _emit(args, out, f"added {usd(micros)} to key {record.key_id}: credit now {usd(balance)}")
    return 0


_COMMANDS: Final = {
    "create": _create,
    "list": _list,
    "show": _show,
    "update": _update,
    "revoke": _revoke,
    "topup": _topup,
}
