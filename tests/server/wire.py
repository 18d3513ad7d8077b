"""A raw-socket HTTP/1.1 client for the server tests: it reads responses strictly.

Each response is read exactly as framed (Content-Length, chunks, or the close), so a
byte too many or too few on the wire fails the test instead of being smoothed over.
Its sockets are closed after each test by tests/server/conftest.py.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import trio

TIMEOUT_S = 3.0  # any single client step; the suite's tests take well under a second


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes
    chunks: list[bytes] | None  # the chunks as framed, for a chunked body

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, f"{name!r} sent {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One connection, read strictly: exactly the bytes each response frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int) -> Client:
        sock = socket.socket()  # ours to close after the test, outside its trio run
        client_sockets.append(sock)
        trio_sock = trio.socket.from_stdlib_socket(sock)
        await trio_sock.connect(("127.0.0.1", port))
        return cls(trio.SocketStream(trio_sock))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            raise EOFError(f"connection closed; unread: {bytes(self.buf[:200])!r}")
        self.buf += data

    async def _until(self, sep: bytes) -> bytes:
        while (i := self.buf.find(sep)) == -1:
            await self._more()
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def response(self, *, head: bool = False) -> Response:
        """The next response (a 1xx included); `head` for a response to HEAD."""
        with trio.fail_after(TIMEOUT_S):
            raw = await self._until(b"\r\n\r\n")
            status_line, *lines = raw.split(b"\r\n")
            version, status, _ = status_line.split(b" ", 2)
            assert version == b"HTTP/1.1", status_line
            headers = []
            for line in lines:
                name, _, value = line.partition(b": ")
                assert name and name == name.strip(), line
                headers.append((name.lower(), value))
            r = Response(int(status), headers, b"", None)
            te = r.header(b"transfer-encoding")
            length = r.header(b"content-length")
            if r.status < 200 or r.status in (204, 304) or head:
                pass
            elif te is not None:
                assert te == b"chunked" and length is None
                r.chunks = await self._chunks()
                r.body = b"".join(r.chunks)
            elif length is not None:
                r.body = await self._exactly(int(length))
            else:  # delimited by the close
                r.body = await self.until_close()
            return r

    async def _chunks(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            size_line = await self._until(b"\r\n")
            assert size_line and all(c in b"0123456789abcdef" for c in size_line), size_line
            size = int(size_line, 16)
            if size == 0:
                assert await self._exactly(2) == b"\r\n"  # no trailers
                return chunks
            chunks.append(await self._exactly(size))
            assert await self._exactly(2) == b"\r\n"

    async def request(
        self, method: str = "GET", path: str = "/", headers: tuple[str, ...] = (), body: bytes = b""
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        await self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        return await self.response(head=method == "HEAD")

    async def closed(self, within_s: float = 1.0, *, reset_ok: bool = True) -> bool:
        """True if the server closes the connection with nothing more sent: with a FIN,
        or (if `reset_ok`) a RST."""
        with trio.move_on_after(within_s):
            try:
                while True:
                    await self._more()
            except EOFError:
                return not self.buf
            except trio.BrokenResourceError:
                return reset_ok and not self.buf
        return False

    async def until_close(self) -> bytes:
        """Everything left until the server closes the connection (FIN or RST)."""
        with trio.fail_after(TIMEOUT_S):
            try:
                while True:
                    await self._more()
            except (EOFError, trio.BrokenResourceError):
                self.eof = True
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()


client_sockets: list[socket.socket] = []  # closed after each test (tests/server/conftest.py)
