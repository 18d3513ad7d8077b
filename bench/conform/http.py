"""One HTTP exchange with the endpoint under test, kept byte for byte.

`Endpoint.post` sends a body to ``<base URL>/chat/completions`` and keeps what came
back: the status, the headers and the body bytes as they arrived (after transfer and
content decoding), and a transport error when the connection broke mid-answer (the
bytes before it are kept: a stream cut short is evidence). `Exchange.curl` renders a
curl line that sends the same request; the endpoint's key is written as
``$CONFORM_KEY`` so that reports do not hold it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

__all__ = ["KEY_VARIABLE", "Endpoint", "Exchange", "encode_json"]

KEY_VARIABLE = "CONFORM_KEY"
_MAX_BODY_BYTES = 8 * 1024 * 1024


def encode_json(value: Any, indent: bool = False) -> bytes:
    """`value` as JSON; the stdlib takes what orjson refuses (integers past 64 bits, as
    an out-of-range `seed` has)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else None)
    except TypeError:
        separators = (",", ": ") if indent else (",", ":")
        text = json.dumps(value, ensure_ascii=False, indent=2 if indent else None,
                          separators=separators)  # fmt: skip
        return text.encode()


@dataclass
class Exchange:
    """A request sent and what came back."""

    url: str
    headers: list[tuple[str, str]]  # as sent; the endpoint's key shown as $CONFORM_KEY
    body: bytes
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response: bytes = b""
    transport_error: str | None = None  # the connection failed before the answer ended

    def header(self, name: str) -> str | None:
        """A response header's value (the first), by case-insensitive name."""
        for key, value in self.response_headers:
            if key.lower() == name:
                return value
        return None

    def curl(self) -> str:
        """A shell line that sends this request again."""
        argv = ["curl", "-sS", "-N", self.url]
        for name, value in self.headers:
            argv += ["-H", f"{name}: {value}"]
        argv += ["--data-binary", self.body.decode("utf-8", errors="replace")]
        line = " ".join(shlex.quote(arg) for arg in argv)
        secret = shlex.quote(f"Authorization: Bearer ${KEY_VARIABLE}")
        return line.replace(secret, f'"Authorization: Bearer ${KEY_VARIABLE}"')

    def head_text(self) -> str:
        """The status line and headers, as text."""
        lines = [f"HTTP {self.status}"] + [f"{k}: {v}" for k, v in self.response_headers]
        return "\n".join(lines)


@dataclass
class Endpoint:
    """The endpoint under test: its base URL, key and extra headers (`--header`)."""

    base_url: str
    key: str | None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    timeout_s: float = 60.0
    _client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, trust_env=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def post(
        self,
        body: bytes,
        *,
        auth: str | bool | None = True,
        content_type: str = "application/json",
    ) -> Exchange:
        """POST `body`. `auth` True sends the endpoint's key, False or None none, a
        string that whole Authorization header value instead."""
        shown: list[tuple[str, str]] = [("Content-Type", content_type)]
        sent: list[tuple[str, str]] = list(shown)
        if auth is True and self.key is not None:
            shown.append(("Authorization", f"Bearer ${KEY_VARIABLE}"))
            sent.append(("Authorization", f"Bearer {self.key}"))
        elif isinstance(auth, str):
            shown.append(("Authorization", auth))
            sent.append(("Authorization", auth))
        shown += self.extra_headers
        sent += self.extra_headers
        exchange = Exchange(self.url, shown, body)
        received = bytearray()
        try:
            with self.client().stream("POST", self.url, content=body, headers=sent) as answer:
                exchange.status = answer.status_code
                exchange.response_headers = list(answer.headers.items())
                for piece in answer.iter_bytes():
                    received += piece
                    if len(received) > _MAX_BODY_BYTES:
                        exchange.transport_error = f"answer larger than {_MAX_BODY_BYTES} bytes"
                        break
        except httpx.HTTPError as exc:
            exchange.transport_error = f"{type(exc).__name__}: {exc}"
        exchange.response = bytes(received)
        return exchange
