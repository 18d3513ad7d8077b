"""The responses the built-in server gives itself rather than the app: refusals of
requests it will not pass on (400, 408, 431, 501, 505), the 503 past its connection
cap, and the last-resort 500, in the app's error shape and types (gateway/errors.py).
"""

from __future__ import annotations

import email.utils
import time

from gateway.errors import GatewayError, GatewayUnavailable, InternalError, RequestTimeout
from gateway.server.framing import refusal

__all__ = ["date_line", "error", "error_response"]


class _Date:
    """The Date header, formatted once per second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


_date = _Date()
date_line = _date.line


def error(status: int, message: str) -> GatewayError:
    """The error of a response the server gives itself, in the app's error tree: one
    type per status everywhere (a 500 is `internal_server_error`, errors.py)."""
    if status == 500:
        return InternalError(message)
    if status == 408:
        return RequestTimeout(message)
    if status == 503:
        return GatewayUnavailable(message, code="overloaded")
    return GatewayError(message, status=status, error_type="invalid_request_error")


def error_response(status: int, message: str, stamp: bytes | None = None) -> bytes:
    """The whole response; `stamp` is the rendered `date:` (and `server:`) header lines,
    by default the date alone."""
    e = error(status, message)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in e.headers.items()]
    return refusal(status, e.body(), _date.line() if stamp is None else stamp, headers)
