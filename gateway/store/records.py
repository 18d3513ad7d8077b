"""Durable state's records: managed keys, their limits, credit top-ups, usage rows.

Every backend (SQLite today) reads and writes these shapes; nothing here knows about
requests, auth or the limiter's arithmetic. Pure module.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.store.periods import PERIODS, SpendPeriod

PENDING = "pending"  # status of a row recorded at admission, replaced by the final row
MAX_NAME_LENGTH = 200


class StoreError(Exception):
    """The durable store failed (locked, full, corrupt): the message is for operators."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_LIMIT = 1_000_000_000  # largest RPM/TPM: keeps every limiter backlog below 2**53
MAX_MICROS = 10**15  # $1e9: largest single amount; sums stay exact in Lua doubles


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's limits; None means no limit. Periods are calendar periods in UTC."""

    rpm: int | None = None
    tpm: int | None = None
    spend_limit_micros: int | None = None
    spend_period: SpendPeriod | None = None
    prepaid: bool = False

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and not 1 <= value <= MAX_LIMIT:
                raise ValueError(f"{name} must be between 1 and {MAX_LIMIT}, got {value}")
        if self.spend_limit_micros is not None:
            if not 0 <= self.spend_limit_micros <= MAX_MICROS:
                raise ValueError(f"spend_limit_micros must be between 0 and {MAX_MICROS}")
            if self.spend_period is None:
                raise ValueError("a spend limit needs a spend_period ('day' or 'month')")
        if self.spend_period not in (None, "day", "month"):
            raise ValueError(f"spend_period must be 'day' or 'month', got {self.spend_period!r}")

    @property
    def needs_budget(self) -> bool:
        """True if admission must consult the key's budget state."""
        return self.spend_limit_micros is not None or self.prepaid

    @property
    def unlimited(self) -> bool:
        """True if nothing is limited: admission needs no state at all."""
        return self.rpm is None and self.tpm is None and not self.needs_budget


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly made key: `full_key` is shown to its owner once and never stored."""

    key_id: str
    full_key: str = field(repr=False)
    secret_hash: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewKey:
    """What to create: `credit_micros` set (even to 0) makes the key prepaid."""

    name: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    spend_limit_micros: int | None = None
    spend_period: SpendPeriod | None = None
    credit_micros: int | None = None
    expires_at: float | None = None

    def check(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("name: must be a non-empty string")
        if len(self.name) > MAX_NAME_LENGTH or not self.name.isprintable():
            raise ValueError(f"name: at most {MAX_NAME_LENGTH} printable characters")
        if self.models is not None and not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("models: must be a list of non-empty model ids")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_LIMIT):
                raise ValueError(f"{name}: must be an integer from 1 to {MAX_LIMIT}")
        for name in ("spend_limit_micros", "credit_micros"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value <= MAX_MICROS):
                raise ValueError(f"{name}: must be an integer from 0 to {MAX_MICROS}")
        if (self.spend_limit_micros is None) != (self.spend_period is None):
            raise ValueError(
                "spend_period: set it (day or month) with a spend limit, and only then"
            )
        if self.spend_period is not None and self.spend_period not in PERIODS:
            raise ValueError("spend_period: must be day or month")
        if self.expires_at is not None and (
            isinstance(self.expires_at, bool)
            or not isinstance(self.expires_at, int | float)
            or not math.isfinite(self.expires_at)
        ):
            raise ValueError("expires_at: must be unix seconds")


class Keep(enum.Enum):
    """The type of KEEP."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP  # a `KeyUpdate` field left as it is


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """What to change in a managed key: each field KEEP (unchanged), a value, or None
    to clear a limit (`models` None: every model; `expires_at` None: never). Clearing
    the spend limit clears its period too. Credit only changes by top-ups."""

    name: str | Keep = KEEP
    models: tuple[str, ...] | Keep | None = KEEP
    rpm: int | Keep | None = KEEP
    tpm: int | Keep | None = KEEP
    spend_limit_micros: int | Keep | None = KEEP
    spend_period: SpendPeriod | Keep | None = KEEP
    expires_at: float | Keep | None = KEEP

    def changes(self) -> dict[str, Any]:
        """The fields given (name -> new value)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not KEEP
        }

    def applied_to(self, record: KeyRecord) -> KeyRecord:
        """`record` with these changes; ValueError naming the first invalid field."""
        changes = self.changes()
        if changes.get("spend_limit_micros", KEEP) is None and "spend_period" not in changes:
            changes["spend_period"] = None
        new = dataclasses.replace(record, **changes)
        NewKey(  # the rules a new key's fields follow hold for a changed key's too
            name=new.name,
            models=new.models,
            rpm=new.rpm,
            tpm=new.tpm,
            spend_limit_micros=new.spend_limit_micros,
            spend_period=new.spend_period,
            expires_at=new.expires_at,
        ).check()
        return new


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A managed key as stored: everything but its secret, of which only the hash."""

    key_id: str
    name: str
    secret_hash: bytes = field(repr=False)
    models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    spend_limit_micros: int | None
    spend_period: SpendPeriod | None
    prepaid: bool
    expires_at: float | None
    revoked_at: float | None
    created_at: float
    version: int  # commit order of the last change: the refresher's watermark

    @property
    def limits(self) -> KeyLimits:
        return KeyLimits(
            rpm=self.rpm,
            tpm=self.tpm,
            spend_limit_micros=self.spend_limit_micros,
            spend_period=self.spend_period,
            prepaid=self.prepaid,
        )

    def state(self, now: float) -> str:
        """ "active", "revoked" or "expired"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class Topup:
    """Credit added to a prepaid key; ids grow in commit order."""

    topup_id: int
    key_id: str
    micros: int
    created_at: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One admitted request in the ledger (R23). `status` is "ok", "pending" (written at
    admission, replaced by the final row), "client_gone", "partial" or an error code.
    `model` is the id the client asked for; `deployment` the routable id that served it
    (or was tried last), `provider` that deployment's, `attempts` how many it took.

    `request_id` is the row's key: the gateway's completion id (`chatcmpl-...`, the `id`
    of the chat completion), unique per request. `x_request_id` is the request id of its
    `x-request-id` header and log lines (the client's own, if it sent one, so it may
    repeat); None in rows written before it was kept. `key_name` is the key's name when
    the request was made: a config key's only name (None in rows written before it)."""

    request_id: str
    key_id: str | None  # None: a key from the config file (named by key_name)
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int
    status: str
    latency_ms: int
    created_at: float  # when the request was admitted: the period it is billed to
    deployment: str = ""  # "" in rows written before routing existed
    attempts: int = 1
    x_request_id: str | None = None
    key_name: str | None = None  # None in rows written before it was recorded

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageRow:
        """A row from its JSON form; ValueError if anything is missing or mistyped.
        The fields added later (`deployment`, `attempts`, `x_request_id`, `key_name`)
        may be missing (journals written before them)."""
        try:
            values = {
                f.name: data[f.name] if f.name in _REQUIRED else data.get(f.name, f.default)
                for f in dataclasses.fields(cls)
            }
        except KeyError as e:
            raise ValueError(f"usage row without {e.args[0]}") from None
        if not isinstance(values["deployment"], str):
            raise ValueError("usage row deployment: expected a string")
        if not _is_int(values["attempts"]) or values["attempts"] < 1:
            raise ValueError("usage row attempts: expected a positive integer")
        if values["x_request_id"] is not None and not isinstance(values["x_request_id"], str):
            raise ValueError("usage row x_request_id: expected a string or null")
        if values["key_name"] is not None and not isinstance(values["key_name"], str):
            raise ValueError("usage row key_name: expected a string or null")
        for name in ("request_id", "model", "provider", "status"):
            if not isinstance(values[name], str):
                raise ValueError(f"usage row {name}: expected a string")
        if values["key_id"] is not None and not isinstance(values["key_id"], str):
            raise ValueError("usage row key_id: expected a string or null")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros"):
            if not _is_int(values[name]) or values[name] < 0:
                raise ValueError(f"usage row {name}: expected a non-negative integer")
        if not _is_int(values["latency_ms"]):
            raise ValueError("usage row latency_ms: expected an integer")
        if isinstance(values["created_at"], bool) or not isinstance(
            values["created_at"], int | float
        ):
            raise ValueError("usage row created_at: expected a number")
        values["created_at"] = float(values["created_at"])
        return cls(**values)


# Fields every journaled row has; the later ones have defaults (older journals lack them).
_REQUIRED = frozenset(
    f.name for f in dataclasses.fields(UsageRow) if f.default is dataclasses.MISSING
)


@dataclass(frozen=True, slots=True)
class RefusalCount:
    """Requests refused before admission (401, 402, 403, 429) in one minute, counted
    together: one row per minute and (key, model, status), however many there were.
    "" stands for what was not known (a 401 has no key; it is refused before its
    body, and so its model, is read)."""

    minute: int  # unix seconds at the start of the minute
    key_id: str  # a managed key's id, "" for a config key or none
    key_name: str  # the key's name, "" for none
    model: str
    provider: str
    status: int  # the HTTP status
    code: str  # the error code (rate_limit_exceeded, invalid_api_key...)
    count: int


USAGE_GROUPS = ("key", "model", "provider", "day", "status")  # what `usage_report` groups by


@dataclass(slots=True)
class UsageTotals:
    """What a group of requests added up to. `requests` counts every request, admitted
    or `refused` (401/402/403/429 before admission); `errors` the admitted ones that
    ended in an error (not ok, not gone with their client, not still running)."""

    requests: int = 0
    refused: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_micros: int = 0

    def add(self, other: UsageTotals) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One group of a usage report: its value (None: not known, see `RefusalCount`)
    and, grouped by key, the key's name (a managed key's current one)."""

    group: str | None
    name: str | None
    totals: UsageTotals


@dataclass(slots=True)
class ModelUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_micros: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A key's usage over [since, until): totals, per model and per status."""

    key_id: str
    since: float | None
    until: float | None
    total: ModelUsage
    by_model: dict[str, ModelUsage]
    by_status: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "since": self.since,
            "until": self.until,
            **self.total.to_dict(),
            "by_model": {m: u.to_dict() for m, u in sorted(self.by_model.items())},
            "by_status": dict(sorted(self.by_status.items())),
        }


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A key's budget as the ledger knows it, read on one snapshot (journaled rows
    merged in): what seeds the limiter and what a reconcile compares it with.

    `cost_micros` is the cost of all the key's rows (a pending row at its reserved
    worst case), `period_cost_micros` that of the rows created in the period asked
    for (0 without one). `rows` are the key's rows the caller named: created since a
    time, pending and created since another, or by request id."""

    topups_micros: int
    last_topup_id: int
    cost_micros: int
    period_cost_micros: int
    rows: tuple[UsageRow, ...]
