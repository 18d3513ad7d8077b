"""Key management that the admin API and the keys CLI share: one shape, one code path."""

from __future__ import annotations

from typing import Any

from gateway.auth.keys import redacted
from gateway.store.records import KeyRecord


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
