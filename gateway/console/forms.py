"""The console's forms, turned into the bodies the admin API takes (api/key_admin.py
checks them: one set of rules). Money is typed in dollars and stored in micro-dollars;
an expiry is a UTC date; a scope is a comma- or space-separated list of model ids.

A ValueError names the form field ("rpm: must be a whole number"); the errors
`KeyAdmin` raises name the body field (`param`), which `FIELD_OF_PARAM` maps back.

Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from gateway.store.records import KeyRecord

FIELD_OF_PARAM: Final = {
    "spend_limit_micros": "spend_limit_usd",
    "credit_micros": "credit_usd",
    "micros": "amount_usd",
    "expires_at": "expires",
}
_SPLIT: Final = re.compile(r"[\s,]+")
MAX_USD: Final = Decimal(10) ** 9


class FormError(ValueError):
    """A form field's value is not what it should be."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


def _text(form: Mapping[str, str], name: str) -> str:
    return (form.get(name) or "").strip()


def _int(form: Mapping[str, str], name: str) -> int | None:
    text = _text(form, name)
    if not text:
        return None
    if not text.isdigit():
        raise FormError(name, "must be a whole number, or empty for no limit")
    return int(text)


def _micros(form: Mapping[str, str], name: str) -> int | None:
    text = _text(form, name).removeprefix("$").replace(",", "")
    if not text:
        return None
    try:
        usd = Decimal(text)
    except InvalidOperation:
        raise FormError(name, "must be an amount in US dollars, such as 25 or 0.50") from None
    if not usd.is_finite() or usd < 0 or usd > MAX_USD:
        raise FormError(name, "must be an amount in US dollars, such as 25 or 0.50")
    return int(usd * 1_000_000)


def _models(form: Mapping[str, str]) -> list[str] | None:
    ids = [m for m in _SPLIT.split(_text(form, "models")) if m]
    return ids or None


def _expiry(form: Mapping[str, str]) -> float | None:
    text = _text(form, "expires")
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise FormError("expires", "must be a date (YYYY-MM-DD), or empty for never") from None
    return day.timestamp()


def create_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The admin API's create body from the create form (empty fields left out)."""
    body: dict[str, Any] = {"name": _text(form, "name")}
    values: dict[str, Any] = {
        "models": _models(form),
        "rpm": _int(form, "rpm"),
        "tpm": _int(form, "tpm"),
        "spend_limit_micros": _micros(form, "spend_limit_usd"),
        "credit_micros": _micros(form, "credit_usd"),
        "expires_at": _expiry(form),
    }
    if values["spend_limit_micros"] is not None:
        values["spend_period"] = _text(form, "spend_period") or "month"
    body.update({k: v for k, v in values.items() if v is not None})
    return body


def update_body(form: Mapping[str, str], record: KeyRecord) -> dict[str, Any]:
    """The admin API's PATCH body from the edit form: the fields that changed (an
    emptied field clears its setting)."""
    wanted: dict[str, Any] = {
        "name": _text(form, "name"),
        "models": _models(form),
        "rpm": _int(form, "rpm"),
        "tpm": _int(form, "tpm"),
        "spend_limit_micros": _micros(form, "spend_limit_usd"),
        "expires_at": _expiry(form),
    }
    wanted["spend_period"] = (
        (_text(form, "spend_period") or "month")
        if wanted["spend_limit_micros"] is not None
        else None
    )
    current: dict[str, Any] = {
        "name": record.name,
        "models": None if record.models is None else list(record.models),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "spend_limit_micros": record.spend_limit_micros,
        "spend_period": record.spend_period,
        "expires_at": record.expires_at,
    }
    changed = {k: v for k, v in wanted.items() if v != current[k]}
    new_expiry = changed.get("expires_at")
    if record.expires_at is not None and new_expiry and _day(record.expires_at) == _day(new_expiry):
        del changed["expires_at"]  # the same day as shown: keep the instant the key was given
    return changed


def topup_body(form: Mapping[str, str]) -> dict[str, Any]:
    micros = _micros(form, "amount_usd")
    if not micros:
        raise FormError("amount_usd", "must be an amount in US dollars above zero")
    body: dict[str, Any] = {"micros": micros}
    note = _text(form, "note")
    if note:
        body["note"] = note
    return body


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def day(at: float | None) -> str:
    """A unix time as its UTC date, for a date field."""
    return "" if at is None else _day(at)


def when(at: float | None) -> str:
    """A unix time for people, UTC."""
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def usd(micros: int | None) -> str:
    """Micro-dollars for people: cents for sums of a cent or more, else six places."""
    if micros is None:
        return "—"
    if micros == 0:
        return "$0"
    if abs(micros) >= 10_000:
        return f"${micros / 1_000_000:,.2f}"
    return f"${micros / 1_000_000:,.6f}"


def usd_input(micros: int | None) -> str:
    """Micro-dollars as a form field's value."""
    if micros is None:
        return ""
    return f"{Decimal(micros) / 1_000_000:f}".rstrip("0").rstrip(".") or "0"
