"""Redis addresses: redis://, rediss:// (TLS) and unix:// URLs taken apart. Pure module."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool = False
    unix_path: str | None = None


def parse_redis_url(url: str) -> RedisAddress:
    """The parts of a redis://, rediss:// or unix:// URL; ValueError says what is wrong."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    db_text = query.get("db", [""])[0]
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a redis:// URL needs a host")
        path = parts.path.strip("/")
        db_text = path or db_text
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port of the Redis URL is not a number from 0 to 65535") from None
        host, unix_path = parts.hostname, None
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket's path")
        host, port, unix_path = "", 0, parts.path
    else:
        raise ValueError("must start with redis://, rediss:// or unix://")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"the database number {db_text!r} is not an integer") from None
    if db < 0:
        raise ValueError("the database number must not be negative")
    return RedisAddress(host, port, db, username, password, parts.scheme == "rediss", unix_path)
