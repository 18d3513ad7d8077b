"""A small Redis client on trio: a connection pool, RESP2 commands, Lua scripts.

Why not coredis (used before): the limit backend makes two script calls per request,
and coredis spent 90-160 us of CPU on each (its anyio pool and command machinery);
this client spends ~25-40 us (docs/performance.md). It does exactly what the gateway
needs: one command, one reply, on a pooled connection; EVALSHA with a fallback to
EVAL when the server does not know the script (after a restart or SCRIPT FLUSH).

A command interrupted half way (a timeout or a cancel while the reply is unread)
leaves its connection in an unknown state, so that connection is closed, never
reused. A connection that breaks closes the idle ones too: after a Redis restart
they are all stale, and each would otherwise fail one more call. Every failure to
reach Redis is a `RedisConnectionError`; an error reply is a `ResponseError`; both
are `RedisError`. A failed AUTH is Redis's `ResponseError` (WRONGPASS ...).

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, verified
against the system's CAs; SSL_CERT_FILE names another bundle) and
``unix:///path/to/socket[?db=N]``.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import trio

from gateway.store.redis_url import parse_redis_url

__all__ = [
    "RedisClient",
    "RedisConnectionError",
    "RedisError",
    "ResponseError",
    "Script",
    "encode_command",
]

READ_SIZE = 65536


class RedisError(Exception):
    """Anything that went wrong talking to Redis."""


class RedisConnectionError(RedisError):
    """Redis could not be reached, or the connection broke or spoke nonsense."""


class ResponseError(RedisError):
    """Redis answered with an error reply (the connection stays usable)."""


def _arg(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("Redis has no booleans; send 0 or 1")
    if isinstance(value, int):
        return b"%d" % value  # an IntEnum too (its repr would be "<Level.HIGH: 3>")
    if isinstance(value, float):
        return float.__repr__(value).encode()
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def _reason(e: BaseException) -> str:
    """What went wrong: trio's BrokenResourceError says nothing, its cause does."""
    return str(e) or repr(e.__cause__ or e)


def encode_command(args: Sequence[object]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class _RedisConnection:
    """One connection and its read buffer."""

    __slots__ = ("buf", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(READ_SIZE)
        if not data:
            raise RedisConnectionError("Redis closed the connection")
        self.buf += data

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) == -1:
            await self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def reply(self) -> Any:
        """One reply; an error reply is returned as a ResponseError (not raised)."""
        line = await self._line()
        kind, rest = line[:1], line[1:]
        try:
            if kind == b"+":
                return rest
            if kind == b"-":
                return ResponseError(rest.decode(errors="replace"))
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                if size < 0:
                    return None
                while len(self.buf) < size + 2:
                    await self._fill()
                data = bytes(self.buf[:size])
                del self.buf[: size + 2]
                return data
            if kind == b"*":
                count = int(rest)
                if count < 0:
                    return None
                return [await self.reply() for _ in range(count)]
        except ValueError:
            pass
        raise RedisConnectionError(f"unexpected bytes from Redis: {line[:40]!r}")


class RedisClient:
    """A pool of at most `max_connections` connections to one Redis.

    Use as ``async with RedisClient(url) as client``; leaving closes the idle
    connections. Commands may run concurrently from many tasks.
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float = 1.0, max_connections: int = 64
    ) -> None:
        self.address = parse_redis_url(url)
        self._connect_timeout_s = connect_timeout_s
        self._slots = trio.Semaphore(max_connections)
        self._max_connections = max_connections
        self._idle: list[_RedisConnection] = []
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if self.address.tls else None
        )

    def congested(self) -> bool:
        """More callers wait for a connection than the pool holds: work that can wait
        (settlements) should, rather than time out in the queue and read as Redis down."""
        return self._slots.statistics().tasks_waiting >= self._max_connections

    async def __aenter__(self) -> RedisClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (also done when one breaks: the rest are stale)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)

    async def _connect(self) -> _RedisConnection:
        a = self.address
        where = a.unix_path or f"{a.host}:{a.port}"
        try:
            with trio.fail_after(self._connect_timeout_s):
                stream: trio.abc.Stream
                if a.unix_path is not None:
                    stream = await trio.open_unix_socket(a.unix_path)
                else:
                    stream = await trio.open_tcp_stream(a.host, a.port)
                try:
                    return await self._handshake(stream)
                except BaseException:  # refused (AUTH), broken, timed out or cancelled
                    await trio.aclose_forcefully(stream)
                    raise
        except trio.TooSlowError:
            raise RedisConnectionError(f"no connection to Redis at {where} in time") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as e:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {_reason(e)}") from e

    async def _handshake(self, stream: trio.abc.Stream) -> _RedisConnection:
        """TLS, AUTH and SELECT on a new connection, as the URL asks."""
        a = self.address
        if self._ssl is not None:
            tls = trio.SSLStream(stream, self._ssl, server_hostname=a.host)
            await tls.do_handshake()
            stream = tls
        conn = _RedisConnection(stream)
        if a.password is not None:
            auth: list[object] = ["AUTH", a.password]
            if a.username:
                auth.insert(1, a.username)
            await self._roundtrip(conn, encode_command(auth))
        if a.db:
            await self._roundtrip(conn, encode_command(["SELECT", a.db]))
        return conn

    @staticmethod
    async def _roundtrip(conn: _RedisConnection, command: bytes) -> Any:
        await conn.stream.send_all(command)
        reply = await conn.reply()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute(self, *args: object) -> Any:
        """Run one command; its reply (bytes, int, None or a list of those)."""
        command = encode_command(args)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            reusable = False
            try:
                await conn.stream.send_all(command)
                reply = await conn.reply()
                reusable = True
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                await self.aclose()
                raise RedisConnectionError(f"the connection to Redis broke: {_reason(e)}") from e
            except RedisConnectionError:  # closed by Redis, or nonsense on the wire
                await self.aclose()
                raise
            finally:
                if reusable:
                    self._idle.append(conn)
                else:  # interrupted half way: what comes next on it is unknown
                    await trio.aclose_forcefully(conn.stream)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def register_script(self, source: str) -> Script:
        return Script(self, source)


class Script:
    """A Lua script run by its SHA1, sent in full only when Redis does not know it."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self.client = client
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()

    async def __call__(self, keys: Sequence[object] = (), args: Sequence[object] = ()) -> Any:
        try:
            return await self.client.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.client.execute(b"EVAL", self.source, len(keys), *keys, *args)
