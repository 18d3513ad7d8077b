"""Key management that the admin API and the keys CLI share: one shape, one code path.

Both turn what they were given into the store's specs (`NewKey`, `KeyUpdate`), check
them here, and show keys with `key_json`; the store applies them. A change reaches
every process's key cache (gateway/auth/cache.py) at its next refresh.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.auth.keys import redacted
from gateway.store.records import KEEP, KeyRecord, KeyUpdate

UPDATE_FIELDS: Final = (
    "name",
    "models",
    "rpm",
    "tpm",
    "spend_limit_micros",
    "spend_period",
    "expires_at",
)


def key_json(record: KeyRecord, now: float) -> dict[str, Any]:
    """The JSON shape shown by the admin API and `gateway keys --json`: no secret."""
    return {
        "id": record.key_id,
        "object": "api_key",
        "name": record.name,
        "key_hint": redacted(record.key_id),
        "models": None if record.models is None else list(record.models),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "spend_limit_micros": record.spend_limit_micros,
        "spend_period": record.spend_period,
        "prepaid": record.prepaid,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "created_at": record.created_at,
        "state": record.state(now),
    }


def update_from_json(body: Mapping[str, Any]) -> KeyUpdate:
    """A key update from JSON (the admin API's PATCH body): the fields to change, null
    to clear one. ValueError naming the field ("field: why"); the values themselves
    are checked by `check_update` and the store."""
    for name in body:
        if name not in UPDATE_FIELDS:
            raise ValueError(f"{name}: not a field a key update changes")
    models = body.get("models", KEEP)
    if models is not KEEP and models is not None:
        if not isinstance(models, list):
            raise ValueError("models: must be a list of model ids or null")
        models = tuple(models)
    return KeyUpdate(**{**body, "models": models})


def check_update(update: KeyUpdate, now: float) -> None:
    """What a key update must be, whoever asks: something to change, and an expiry in
    the future. ValueError naming the field ("field: why")."""
    if not update.changes():
        raise ValueError(f"Nothing to change; give any of {', '.join(UPDATE_FIELDS)}")
    expires = update.expires_at
    if expires is KEEP or expires is None:
        return
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not expires > now:
        raise ValueError("expires_at: must be in the future (unix seconds), or null for never")
