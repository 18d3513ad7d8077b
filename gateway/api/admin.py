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
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from quart import Blueprint, Response, request

from gateway.api.key_admin import (
    CREATE_FIELDS,
    TOPUP_FIELDS,
    KeyAdmin,
    LimitStatus,
)
from gateway.auth.cache import ManagedKeyStore
from gateway.auth.manage import UPDATE_FIELDS, key_json
from gateway.billing.ledger import Ledger
from gateway.billing.refusals import Refusals
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    GatewayUnavailable,
    InvalidRequest,
)
from gateway.store.base import AsyncStore
from gateway.store.records import StoreError

__all__ = ["LimitStatus", "admin_digest", "check_admin_key", "make_admin_blueprint"]

_NO_STORE: Final = {"cache-control": "no-store"}


def admin_digest(admin_key: str) -> bytes:
    """The digest `make_admin_blueprint` compares presented admin keys against."""
    return hashlib.sha256(admin_key.encode("utf-8")).digest()


def check_admin_key(presented: str, admin_key_digest: bytes) -> bool:
    """Whether `presented` is the admin key, compared in constant time."""
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(digest, admin_key_digest)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


async def _body(allowed: frozenset[str] | set[str]) -> dict[str, Any]:
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
    adds the limiter's live state (api/key_admin.py does the work)."""
    if len(admin_key_digest) != hashlib.sha256().digest_size:
        raise ValueError("admin_key_digest must be a SHA-256 digest")
    bp = Blueprint("admin", __name__, url_prefix="/admin")
    admin = KeyAdmin(
        db, keys, ledger=ledger, refusals=refusals, limit_status=limit_status, clock=clock
    )

    @bp.before_request
    async def require_admin_key() -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed(
                "The admin API needs the admin key: Authorization: Bearer ADMIN_KEY."
            )
        if not check_admin_key(token, admin_key_digest):
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

    @bp.post("/keys")
    async def create_key() -> Response:
        record, full_key = await admin.create(await _body(CREATE_FIELDS))
        return _json({**key_json(record, clock()), "key": full_key}, 201, _NO_STORE)

    @bp.get("/keys")
    async def list_keys() -> Response:
        now = clock()
        data = [key_json(r, now) for r in await admin.all_keys()]
        return _json({"object": "list", "data": data})

    @bp.get("/keys/<key_id>")
    async def show_key(key_id: str) -> Response:
        return _json(await admin.show(key_id, request.args.get("period", "month")))

    @bp.patch("/keys/<key_id>")
    async def update_key(key_id: str) -> Response:
        await admin.record(key_id)  # 404 before a body error, as before
        record = await admin.update(key_id, await _body(set(UPDATE_FIELDS)))
        return _json(key_json(record, clock()))

    @bp.get("/usage")
    async def usage() -> Response:
        return _json((await admin.usage(request.args)).to_json())

    @bp.delete("/keys/<key_id>")
    async def revoke_key(key_id: str) -> Response:
        record = await admin.revoke(key_id)
        return _json(key_json(record, clock()))

    @bp.post("/keys/<key_id>/topup")
    async def topup(key_id: str) -> Response:
        await admin.record(key_id)
        added, credit = await admin.topup(key_id, await _body(TOPUP_FIELDS))
        return _json(
            {
                "id": key_id,
                "object": "topup",
                "topup_id": added.topup_id,
                "micros": added.micros,
                "credit_micros": credit,
            }
        )

    return bp
