"""Console logins: signed session cookies, CSRF tokens and the login throttle.

A session is a random id signed with a timestamp (itsdangerous' `TimestampSigner`,
the signer Quart's own sessions use) under a secret derived from the admin key, so
every worker process accepts the others' cookies and changing the admin key ends
every session. The cookie holds no secret and no state; a session ends when its age
passes `[console] session_max_age_s`, or at logout: the worker that served the logout
refuses its id from then on (other workers until its age runs out; the cookie itself
is deleted in the browser).

A form's CSRF token is an HMAC of the session id (of the login nonce cookie, on the
login form), so a page of another site, which can neither read our cookies nor our
pages, cannot make one. Compared in constant time.

Pure module: no I/O; `now` comes from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from typing import Final

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

COOKIE: Final = "gateway_console"
LOGIN_COOKIE: Final = "gateway_console_login"  # the login form's CSRF nonce
MAX_REVOKED: Final = 10_000
MAX_CLIENTS: Final = 10_000
WINDOW_S: Final = 60.0


def console_secret(admin_key: str) -> bytes:
    """The signing secret: derived from the admin key, never the key itself."""
    return hmac.new(admin_key.encode("utf-8"), b"gateway console v1", hashlib.sha256).digest()


class Sessions:
    """Issues and checks session cookies and CSRF tokens."""

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        self._signer = TimestampSigner(secret, salt="gateway-console-session")
        self._csrf_key = hmac.new(secret, b"csrf", hashlib.sha256).digest()
        self.max_age_s = max_age_s
        self._revoked: OrderedDict[str, float] = OrderedDict()  # session id -> until

    def issue(self) -> str:
        """A new session's cookie value."""
        return self._signer.sign(secrets.token_hex(16)).decode("ascii")

    def check(self, cookie: str | None, now: float) -> str | None:
        """The session id of a valid cookie, else None (forged, expired, logged out)."""
        if not cookie or len(cookie) > 200:
            return None
        try:
            sid = self._signer.unsign(cookie, max_age=int(self.max_age_s)).decode("ascii")
        except (BadSignature, SignatureExpired, UnicodeDecodeError):
            return None
        until = self._revoked.get(sid)
        if until is not None and until > now:
            return None
        return sid

    def revoke(self, sid: str, now: float) -> None:
        """Log `sid` out in this process."""
        for old, until in list(self._revoked.items()):
            if until > now and len(self._revoked) < MAX_REVOKED:
                break
            del self._revoked[old]
        self._revoked[sid] = now + self.max_age_s

    def csrf(self, sid: str, purpose: str = "session") -> str:
        """The CSRF token for forms of session (or login nonce) `sid`."""
        msg = f"{purpose}:{sid}".encode()
        return hmac.new(self._csrf_key, msg, hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str | None, token: str | None, purpose: str = "session") -> bool:
        if not sid or not token:
            return False
        return hmac.compare_digest(self.csrf(sid, purpose), token)


class LoginThrottle:
    """At most `per_minute` login attempts per client address in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def attempt(self, client: str, now: float) -> float | None:
        """Count an attempt from `client`: None if allowed, else the seconds to wait."""
        times = self._seen.get(client)
        if times is None:
            if len(self._seen) >= MAX_CLIENTS:
                self._seen.popitem(last=False)
            times = self._seen[client] = deque()
        else:
            self._seen.move_to_end(client)
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            return max(1.0, times[0] + WINDOW_S - now)
        times.append(now)
        return None
