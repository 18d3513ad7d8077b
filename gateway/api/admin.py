"""The admin HTTP API under `/admin/`: create, list, show, revoke and top up managed keys.

    POST   /admin/keys                 create; the answer holds the full key, once
    GET    /admin/keys                 list (never a secret)
    GET    /admin/keys/<id>            one key, its usage summary, spend, credit and live limits
    PATCH  /admin/keys/<id>            change its name, scope, limits or expiry
    DELETE /admin/keys/<id>            revoke
    POST   /admin/keys/<id>/topup      add credit to a prepaid key
    GET    /admin/usage                requests, refusals, errors, tokens and cost, grouped

Every route requires `Authorization: Bearer <admin key>`, a key of its own that is
held here only as a SHA-256 digest and compared in constant time. It is not a
`/v1/` key: the admin key is in no `KeyStore`, so `/v1/` refuses it, and `/v1/`
keys never match it here (docs/reliability.md R19). Changes made here are applied to this
process's key cache at once; other processes see them at their next refresh.

Bodies are JSON; money is integer micro-dollars (`*_micros`). Every error is an
OpenAI-shaped error from gateway/errors.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from quart import Blueprint, Response, request

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.keys import new_key
from gateway.auth.manage import UPDATE_FIELDS, check_update, key_json, update_from_json
from gateway.billing.ledger import Ledger
from gateway.billing.refusals import Refusals
from gateway.billing.report import USAGE_GROUPS, Report, parse_when
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    GatewayUnavailable,
    InvalidRequest,
    NotFound,
)
from gateway.store.base import AsyncStore
from gateway.store.periods import PERIODS, SpendPeriod, period_bounds
from gateway.store.records import KeyLimits, KeyRecord, NewKey, StoreError

LimitStatus = Callable[[str, float, KeyLimits], Awaitable[dict[str, Any]]]

_KEY_ID: Final = re.compile(r"[a-z0-9]{12}", re.ASCII)
_CREATE_FIELDS: Final = {*UPDATE_FIELDS, "credit_micros"}  # credit changes by top-ups after
_TOPUP_FIELDS: Final = {"micros", "note"}
_PERIOD: Final[dict[str, SpendPeriod]] = {p: p for p in PERIODS}
_NO_STORE: Final = {"cache-control": "no-store"}


def admin_digest(admin_key: str) -> bytes:
    """The digest `make_admin_blueprint` compares presented admin keys against."""
    return hashlib.sha256(admin_key.encode("utf-8")).digest()


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


async def _body(allowed: set[str]) -> dict[str, Any]:
    """The JSON object body, with no fields but `allowed`; else 400 naming the problem."""
    raw = await request.get_data(as_text=False)
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"The body is not valid JSON ({e.msg}).") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    for name in body:
        if name not in allowed:
            raise InvalidRequest(f"Unknown field '{name}'.", param=name)
    return body


def _new_key(body: dict[str, Any], now: float) -> NewKey:
    """A key spec from a create body; 400 naming the first bad field."""
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


def make_admin_blueprint(
    db: AsyncStore,
    keys: ManagedKeyStore,
    admin_key_digest: bytes,
    *,
    ledger: Ledger | None = None,
    refusals: Refusals | None = None,
    limit_status: LimitStatus | None = None,
    clock: Callable[[], float] = time.time,
) -> Blueprint:
    """The `/admin/` routes. `admin_key_digest` is `admin_digest(config.state.admin_key)`.
    With a `ledger` (and `refusals`), summaries and reports include what was not yet
    flushed and credit/spend count journaled rows; `limit_status(key_id, now, limits)`
    adds the limiter's live state."""
    if len(admin_key_digest) != hashlib.sha256().digest_size:
        raise ValueError("admin_key_digest must be a SHA-256 digest")
    bp = Blueprint("admin", __name__, url_prefix="/admin")

    @bp.before_request
    async def require_admin_key() -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed(
                "The admin API needs the admin key: Authorization: Bearer ADMIN_KEY."
            )
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(presented, admin_key_digest):
            raise AuthenticationFailed("Incorrect admin key provided.")

    @bp.errorhandler(GatewayError)
    async def gateway_error(e: GatewayError) -> Response:
        return Response(
            e.body(), status=e.http_status, content_type="application/json", headers=e.headers
        )

    @bp.errorhandler(StoreError)
    async def store_error(e: StoreError) -> Response:
        error = GatewayUnavailable(
            "The key store is unavailable; try again.", code="store_unavailable"
        )
        return await gateway_error(error)

    async def record_or_404(key_id: str) -> KeyRecord:
        record = await db.get_key(key_id) if _KEY_ID.fullmatch(key_id) else None
        if record is None:
            shown = key_id if _KEY_ID.fullmatch(key_id) else "given"
            raise NotFound(f"No key with the id {shown!r}.", code="key_not_found")
        return record

    async def credit(key_id: str) -> int:
        if ledger is not None:
            return await ledger.credit_balance(key_id)
        return await db.credit_balance(key_id)

    async def spent(record: KeyRecord, now: float) -> int:
        assert record.spend_period is not None
        if ledger is not None:
            return await ledger.spent_in_period(record.key_id, record.spend_period, now)
        return await db.spent_in_period(record.key_id, record.spend_period, now)

    @bp.post("/keys")
    async def create_key() -> Response:
        now = clock()
        spec = _new_key(await _body(_CREATE_FIELDS), now)
        record, full_key = await db.create_key(spec, now, new_key())
        await keys.refresh()
        return _json({**key_json(record, now), "key": full_key}, 201, _NO_STORE)

    @bp.get("/keys")
    async def list_keys() -> Response:
        now = clock()
        data = [key_json(r, now) for r in await db.list_keys()]
        return _json({"object": "list", "data": data})

    @bp.get("/keys/<key_id>")
    async def show_key(key_id: str) -> Response:
        now = clock()
        record = await record_or_404(key_id)
        period = request.args.get("period", "month")
        if period != "all" and period not in _PERIOD:
            raise InvalidRequest("period: must be day, month or all.", param="period")
        since, until = (None, None) if period == "all" else period_bounds(_PERIOD[period], now)
        if ledger is not None:
            await ledger.flush()  # the summary then includes every request so far
        summary = await db.usage_summary(record.key_id, since, until)
        out: dict[str, Any] = {
            **key_json(record, now),
            "usage": {"period": period, **summary.to_dict()},
        }
        if record.spend_period is not None:
            out["spent_micros"] = await spent(record, now)
        if record.prepaid:
            out["credit_micros"] = await credit(record.key_id)
        if limit_status is not None:
            out["limits"] = await limit_status(record.key_id, now, record.limits)
        return _json(out)

    @bp.patch("/keys/<key_id>")
    async def update_key(key_id: str) -> Response:
        now = clock()
        await record_or_404(key_id)
        try:
            update = update_from_json(await _body(set(UPDATE_FIELDS)))
            check_update(update, now)
            record = await db.update_key(key_id, update)
        except ValueError as e:
            raise _invalid(e, UPDATE_FIELDS) from None
        if record is None:  # revoked keys stay; only a deleted row could do this
            raise NotFound(f"No key with the id {key_id!r}.", code="key_not_found")
        await keys.refresh()  # this worker at once; the others at their next refresh
        return _json(key_json(record, now))

    @bp.get("/usage")
    async def usage() -> Response:
        now = clock()
        args = request.args
        unknown = set(args) - {"by", "since", "until", "key"}
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
        if ledger is not None:
            await ledger.flush()  # every request answered so far
        if refusals is not None:
            await refusals.flush()
        key = args.get("key") or None
        lines = await db.usage_report(by, bounds["since"], bounds["until"], key)
        return _json(Report(by, bounds["since"], bounds["until"], key, lines).to_json())

    @bp.delete("/keys/<key_id>")
    async def revoke_key(key_id: str) -> Response:
        now = clock()
        await record_or_404(key_id)
        record = await db.revoke_key(key_id, now)
        assert record is not None
        await keys.refresh()
        return _json(key_json(record, now))

    @bp.post("/keys/<key_id>/topup")
    async def topup(key_id: str) -> Response:
        now = clock()
        record = await record_or_404(key_id)
        body = await _body(_TOPUP_FIELDS)
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
        added = await db.add_topup(key_id, micros, now, note)
        await keys.refresh()
        return _json(
            {
                "id": key_id,
                "object": "topup",
                "topup_id": added.topup_id,
                "micros": added.micros,
                "credit_micros": await credit(key_id),
            }
        )

    return bp
