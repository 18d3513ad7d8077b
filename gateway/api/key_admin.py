"""What the admin API and the console do to managed keys and read of usage: one code path.

`KeyAdmin` takes request data as plain mappings (a JSON body, or a form the console
turned into the same fields) and answers with store records and reports, raising the
gateway's OpenAI-shaped errors naming the field at fault. The admin API
(api/admin.py) renders its answers as JSON, the console (gateway/console/) as pages;
neither checks a field the other does not.

Every change is applied to this process's key cache at once (`ManagedKeyStore.refresh`);
other processes see it at their next refresh (a second at most).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.keys import new_key
from gateway.auth.manage import UPDATE_FIELDS, check_update, key_json, update_from_json
from gateway.billing.ledger import Ledger
from gateway.billing.refusals import Refusals
from gateway.billing.report import USAGE_GROUPS, Report, parse_when
from gateway.errors import InvalidRequest, NotFound
from gateway.store.base import AsyncStore
from gateway.store.periods import PERIODS, SpendPeriod, period_bounds
from gateway.store.records import KeyLimits, KeyRecord, NewKey, Topup, UsageRow

LimitStatus = Callable[[str, float, KeyLimits], Awaitable[dict[str, Any]]]

KEY_ID: Final = re.compile(r"[a-z0-9]{12}", re.ASCII)
CREATE_FIELDS: Final = frozenset({*UPDATE_FIELDS, "credit_micros"})  # credit: top-ups after
TOPUP_FIELDS: Final = frozenset({"micros", "note"})
USAGE_ARGS: Final = frozenset({"by", "since", "until", "key"})
PERIOD: Final[dict[str, SpendPeriod]] = {p: p for p in PERIODS}
MAX_RECENT: Final = 200


def new_key_spec(body: Mapping[str, Any], now: float) -> NewKey:
    """A key spec from a create body; 400 naming the first bad field."""
    for name in body:
        if name not in CREATE_FIELDS:
            raise InvalidRequest(f"Unknown field '{name}'.", param=name)
    models = body.get("models")
    if models is not None and not isinstance(models, list):
        raise InvalidRequest("models: must be a list of model ids or null.", param="models")
    spec = NewKey(
        name=body.get("name", ""),  # every field is type-checked by spec.check()
        models=None if models is None else tuple(models),
        rpm=body.get("rpm"),
        tpm=body.get("tpm"),
        spend_limit_micros=body.get("spend_limit_micros"),
        spend_period=body.get("spend_period"),
        credit_micros=body.get("credit_micros"),
        expires_at=body.get("expires_at"),
    )
    try:
        spec.check()
    except ValueError as e:
        field, _, _ = str(e).partition(":")
        raise InvalidRequest(str(e), param=field) from None
    if spec.expires_at is not None and spec.expires_at <= now:
        raise InvalidRequest("expires_at: must be in the future.", param="expires_at")
    return spec


def _invalid(e: ValueError, fields: tuple[str, ...]) -> InvalidRequest:
    """A 400 from a "field: why" ValueError, `param` naming the field if it is one."""
    field, _, _ = str(e).partition(":")
    return InvalidRequest(str(e), param=field if field in fields else None)


class KeyAdmin:
    """Create, change, revoke, top up and show managed keys; usage reports.

    With a `ledger` (and `refusals`), summaries and reports include what was not yet
    flushed and credit/spend count journaled rows; `limit_status(key_id, now, limits)`
    adds the limiter's live state to `show`."""

    def __init__(
        self,
        db: AsyncStore,
        keys: ManagedKeyStore,
        *,
        ledger: Ledger | None = None,
        refusals: Refusals | None = None,
        limit_status: LimitStatus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.keys = keys
        self.ledger = ledger
        self.refusals = refusals
        self.limit_status = limit_status
        self.clock = clock

    async def record(self, key_id: str) -> KeyRecord:
        """The key's record, or 404 `key_not_found` (an id not of the key-id form is
        not echoed back)."""
        record = await self.db.get_key(key_id) if KEY_ID.fullmatch(key_id) else None
        if record is None:
            shown = key_id if KEY_ID.fullmatch(key_id) else "given"
            raise NotFound(f"No key with the id {shown!r}.", code="key_not_found")
        return record

    async def credit(self, key_id: str) -> int:
        if self.ledger is not None:
            return await self.ledger.credit_balance(key_id)
        return await self.db.credit_balance(key_id)

    async def spent(self, record: KeyRecord, now: float) -> int:
        assert record.spend_period is not None
        if self.ledger is not None:
            return await self.ledger.spent_in_period(record.key_id, record.spend_period, now)
        db = self.db
        return await db.spent_in_period(record.key_id, record.spend_period, now)

    async def flush(self) -> None:
        """Every request answered so far into the store, before a report reads it."""
        if self.ledger is not None:
            await self.ledger.flush()
        if self.refusals is not None:
            await self.refusals.flush()

    # -- changes ------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        """A new key from a create body, and the full key (shown once, never stored)."""
        now = self.clock()
        spec = new_key_spec(body, now)
        record, full_key = await self.db.create_key(spec, now, new_key())
        await self.keys.refresh()
        return record, full_key

    async def update(self, key_id: str, body: Mapping[str, Any]) -> KeyRecord:
        """Change the fields `body` names (null clears one)."""
        now = self.clock()
        await self.record(key_id)
        try:
            update = update_from_json(body)
            check_update(update, now)
            record = await self.db.update_key(key_id, update)
        except ValueError as e:
            raise _invalid(e, UPDATE_FIELDS) from None
        if record is None:  # revoked keys stay; only a deleted row could do this
            raise NotFound(f"No key with the id {key_id!r}.", code="key_not_found")
        await self.keys.refresh()  # this worker at once; the others at their next refresh
        return record

    async def revoke(self, key_id: str) -> KeyRecord:
        now = self.clock()
        await self.record(key_id)
        record = await self.db.revoke_key(key_id, now)
        assert record is not None
        await self.keys.refresh()
        return record

    async def topup(self, key_id: str, body: Mapping[str, Any]) -> tuple[Topup, int]:
        """Add `micros` of credit to a prepaid key: the top-up and the credit now."""
        now = self.clock()
        record = await self.record(key_id)
        for name in body:
            if name not in TOPUP_FIELDS:
                raise InvalidRequest(f"Unknown field '{name}'.", param=name)
        micros = body.get("micros")
        note = body.get("note", "")
        if isinstance(micros, bool) or not isinstance(micros, int) or micros <= 0:
            raise InvalidRequest("micros: must be a positive integer.", param="micros")
        if not isinstance(note, str) or len(note) > 500:
            raise InvalidRequest("note: must be a string of at most 500 characters.", param="note")
        if not record.prepaid:
            raise InvalidRequest(
                f"The key {key_id!r} is not prepaid: it has no credit to top up.",
                code="key_not_prepaid",
            )
        added = await self.db.add_topup(key_id, micros, now, note)
        await self.keys.refresh()
        return added, await self.credit(key_id)

    # -- reading ------------------------------------------------------------------------

    async def all_keys(self) -> list[KeyRecord]:
        return await self.db.list_keys()

    async def show(self, key_id: str, period: str = "month") -> dict[str, Any]:
        """One key as JSON: its settings, usage over `period` (day, month, all), spend,
        credit and the limiter's live state."""
        now = self.clock()
        record = await self.record(key_id)
        if period != "all" and period not in PERIOD:
            raise InvalidRequest("period: must be day, month or all.", param="period")
        since, until = (None, None) if period == "all" else period_bounds(PERIOD[period], now)
        if self.ledger is not None:
            await self.ledger.flush()  # the summary then includes every request so far
        summary = await self.db.usage_summary(record.key_id, since, until)
        out: dict[str, Any] = {
            **key_json(record, now),
            "usage": {"period": period, **summary.to_dict()},
        }
        out.update(await self.money_and_limits(record, now))
        return out

    async def money_and_limits(self, record: KeyRecord, now: float) -> dict[str, Any]:
        """What the key spent this period (with a spend limit), its credit (prepaid)
        and the limiter's live state: `spent_micros`, `credit_micros`, `limits`."""
        out: dict[str, Any] = {}
        if record.spend_period is not None:
            out["spent_micros"] = await self.spent(record, now)
        if record.prepaid:
            out["credit_micros"] = await self.credit(record.key_id)
        if self.limit_status is not None:
            out["limits"] = await self.limit_status(record.key_id, now, record.limits)
        return out

    async def usage(self, args: Mapping[str, str], *, flush: bool = True) -> Report:
        """A usage report from query arguments: `by` (a USAGE_GROUPS name, key by
        default), `since` and `until` (parse_when), `key`. `flush=False`: the caller
        flushed just before (several reports for one page)."""
        now = self.clock()
        unknown = set(args) - USAGE_ARGS
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidRequest(f"Unknown query parameter '{name}'.", param=name)
        by = args.get("by", "key")
        if by not in USAGE_GROUPS:
            raise InvalidRequest(f"by: must be one of {', '.join(USAGE_GROUPS)}.", param="by")
        bounds: dict[str, float | None] = {}
        for name in ("since", "until"):
            text = args.get(name)
            try:
                bounds[name] = None if text is None else parse_when(text, now)
            except ValueError as e:
                raise InvalidRequest(f"{name}: {e}", param=name) from None
        if flush:
            await self.flush()
        key = args.get("key") or None
        lines = await self.db.usage_report(by, bounds["since"], bounds["until"], key)
        return Report(by, bounds["since"], bounds["until"], key, lines)

    async def recent(self, key_id: str, limit: int = 50, *, flush: bool = True) -> list[UsageRow]:
        """The key's newest ledger rows, newest first (what is journaled included)."""
        if flush and self.ledger is not None:
            await self.ledger.flush()
        return await self.db.recent_usage(key_id, min(limit, MAX_RECENT))
