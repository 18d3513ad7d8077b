"""CORS, for browser clients: off unless `[server] cors_origins` lists origins.

A browser calling the gateway from a page of another origin first sends a preflight
(`OPTIONS` with `Origin` and `Access-Control-Request-Method`) and then the request;
it lets the page read the answer only if the gateway names the page's origin (or
`*`). With `cors_origins` set, `GatewayApp` answers every preflight from an allowed
origin itself, on every path (the raw-ASGI chat route included), before admission
control, and adds `access-control-allow-origin` to every response to one, errors and
sheds included, exposing the headers a client reads (request id, rate limits, retry
hints). A request from an origin not listed gets no CORS header: the browser then
keeps the answer from the page, as it should. Without `cors_origins` nothing here runs.

The bearer key travels in `Authorization`, not in cookies, so credentials
(`access-control-allow-credentials`) are never allowed.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.api.asgi import Message, Scope, Send, header

__all__ = ["Cors"]

ALLOW_METHODS: Final = b"GET, POST, PATCH, DELETE, OPTIONS"
DEFAULT_HEADERS: Final = b"authorization, content-type"
EXPOSE: Final = (
    b"x-request-id, openai-processing-ms, retry-after, retry-after-ms, "
    b"x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    b"x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
MAX_AGE_S: Final = b"600"  # browsers cache a preflight this long (Chrome caps it at 2 h)
_HEADER_LIST: Final = re.compile(
    rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*"
)


class Cors:
    """The CORS policy of `[server] cors_origins` (("*",): any origin)."""

    __slots__ = ("_any", "_origins")

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = origins == ("*",)
        self._origins = frozenset(o.lower().encode("latin-1") for o in origins)

    def allow(self, scope: Scope) -> bytes | None:
        """The `access-control-allow-origin` for this request, None if it gets none."""
        origin = header(scope, b"origin")
        if origin is None:
            return None
        if self._any:
            return b"*"
        return origin if origin.lower() in self._origins else None

    def _vary(self, headers: list[tuple[bytes, bytes]], what: bytes) -> None:
        if not self._any:  # the answer depends on the origin: caches must know
            headers.append((b"vary", what))

    @staticmethod
    def is_preflight(scope: Scope) -> bool:
        return (
            scope["method"] == "OPTIONS"
            and header(scope, b"access-control-request-method") is not None
        )

    async def preflight(self, scope: Scope, send: Send, allow: bytes) -> None:
        """204 to a preflight from an allowed origin: any route, the methods the API
        has, the headers asked for."""
        asked = header(scope, b"access-control-request-headers")
        wanted = asked.strip() if asked and _HEADER_LIST.fullmatch(asked.strip()) else None
        headers = [
            (b"access-control-allow-origin", allow),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", wanted or DEFAULT_HEADERS),
            (b"access-control-max-age", MAX_AGE_S),
        ]
        self._vary(headers, b"origin, access-control-request-headers")
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def wrap(self, send: Send, allow: bytes) -> Send:
        """`send` adding the CORS headers of an actual response to its head."""
        extra = [
            (b"access-control-allow-origin", allow),
            (b"access-control-expose-headers", EXPOSE),
        ]
        self._vary(extra, b"origin")

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors
