"""What the Redis limit backend's calls share: reply decoding and its failures.

Pure module: no I/O.
"""

from __future__ import annotations

from gateway.errors import GatewayUnavailable, InternalError

__all__ = ["StoreDown", "budget_unavailable", "only", "reply_int", "reply_text"]


def budget_unavailable() -> GatewayUnavailable:
    """503 for a budgeted key while the store cannot answer: spend is never risked."""
    return GatewayUnavailable(
        "The budget service is unavailable, so requests on a key with a spend limit or "
        "prepaid credit are refused rather than risk overspending. Retry shortly.",
        code="budget_unavailable",
    )


def reply_int(value: object) -> int:
    """An integer the store replied (as an int, or as digits)."""
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        return int(value)
    raise InternalError(f"Unexpected reply from the limit store: {value!r}")


def reply_text(value: object) -> str:
    """A string the store replied (bytes are ASCII)."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    return str(value)


class StoreDown(Exception):
    """Internal: the state store did not answer (or the breaker is open)."""

    def __init__(self, *, sent: bool) -> None:
        super().__init__()
        self.sent = sent  # False: the breaker was open, nothing was sent


def only(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The single exception at the bottom of nested one-member groups, if that is all."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc
