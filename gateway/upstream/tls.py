"""TLS for the upstream pool over a raw socket, readable without waiting.

`trio.SSLStream` decrypts only inside `receive_some`, an await: a stream whose chunks
come over TLS (every vendor's cloud) could not be relayed by the pump
(gateway/upstream/pump.py), which reads a ready socket in a plain call. This is the
same machinery trio's `SSLStream` is built on, an `ssl.SSLObject` between two
`ssl.MemoryBIO`s, fed by `os.read` and drained by `os.write` on the pool's socket, so
that `read_now` can decrypt what the socket holds synchronously.

It serves the pool's sequential use only (one request at a time on a connection, a
send or a receive at any moment) and behaves as `SSLStream(https_compatible=True)`
does there: an EOF without close_notify is an EOF (HTTP's framing says whether the body
was whole), no close_notify is sent on close, and any TLS failure is
`trio.BrokenResourceError`. Every read decrypts all the complete records it has, so
no plaintext is ever left inside the `SSLObject`: a socket that is not readable means
there is nothing to relay, which is what the pump's epoll wait relies on. The one
exception is the end: a close_notify (or a TLS failure) read with the last records
leaves nothing on the socket, which may then stay unreadable; `ended` says so.
tests/upstream/test_tls.py holds it to trio's `SSLStream` on a real handshake.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

import trio

from gateway.upstream import tcp_io

__all__ = ["TLSConnection"]

RAW_READ_BYTES: Final = 64 * 1024  # ciphertext read from the socket at once
_PLAIN_READ_BYTES: Final = 64 * 1024  # plaintext asked of the SSLObject at once


class TLSConnection:
    """A client TLS session on `tcp`'s socket (`handshake` first)."""

    __slots__ = ("_eof", "_failed", "_incoming", "_obj", "_outgoing", "_tcp", "_unsent", "fd")

    def __init__(self, tcp: trio.SocketStream, context: ssl.SSLContext, hostname: str) -> None:
        self._tcp = tcp
        self.fd = tcp.socket.fileno()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        self._eof = False  # the peer closed (or ended the TLS session)
        self._unsent = b""  # for the peer, produced by a read, not yet written
        # A TLS failure met behind records that decrypted: raised by the next read,
        # after their plaintext has been returned (as SSLStream, a record at a time).
        self._failed = ""

    def close(self) -> None:
        """Close the socket now, without close_notify (HTTP's framing does not need it,
        and a peer that stopped reading must not block us)."""
        self._tcp.socket.close()

    @property
    def ended(self) -> bool:
        """The end of the stream (close_notify, or the socket's EOF) or a TLS failure
        has been read, and the next read says so without waiting. It may come with the
        last records, and the socket may then never be readable again (after a
        close_notify, a peer awaiting ours): a reader waiting for the socket must
        check this first."""
        return self._eof or bool(self._failed)

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    async def handshake(self) -> None:
        """The TLS handshake; BrokenResourceError if it fails (a certificate refused,
        the peer gone)."""
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass  # the peer's next flight is needed
            except ssl.SSLError as e:
                raise trio.BrokenResourceError(f"TLS handshake failed: {e}") from e
            await self._flush()
            if not await self._fill():
                raise trio.BrokenResourceError("the connection closed during the TLS handshake")
        await self._flush()

    async def send_all(self, data: bytes) -> None:
        """Encrypt `data` and write it all."""
        try:
            self._obj.write(data)
        except ssl.SSLError as e:
            raise trio.BrokenResourceError(f"TLS failed: {e}") from e
        await self._flush()

    async def receive_some(self, max_bytes: int = 0) -> bytes:
        """The plaintext that arrived next (all of it that can be decrypted, whatever
        `max_bytes` says), waiting for it; b"" at the end of the stream."""
        while True:
            data = self._decrypt()
            if data or self._eof:
                return data
            await self._fill()

    def read_now(self) -> bytes | None:
        """What the socket holds, decrypted, without waiting: b"" if nothing (or only
        part of a record) came, None at the end of the stream. Raises OSError for a
        failed read and BrokenResourceError for a TLS failure."""
        if not self._eof and not self._failed:
            try:
                raw = os.read(self.fd, RAW_READ_BYTES)
            except BlockingIOError:
                raw = None
            if raw is not None:
                self._feed(raw)
        data = self._decrypt()
        if data or not self._eof:
            return data
        return None

    # -- internals ---------------------------------------------------------------------

    def _feed(self, raw: bytes) -> None:
        if raw:
            self._incoming.write(raw)
        else:
            self._incoming.write_eof()
            self._eof = True

    def _decrypt(self) -> bytes:
        """Every complete record's plaintext; sends what reading produced for the
        peer (a key update's answer) if the socket takes it at once."""
        if self._failed:
            raise trio.BrokenResourceError(self._failed)
        parts: list[bytes] = []
        obj, incoming = self._obj, self._incoming
        while True:
            try:
                part = obj.read(_PLAIN_READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True  # close_notify, or an EOF without it (https_compatible)
                break
            except ssl.SSLError as e:
                if not parts:
                    raise trio.BrokenResourceError(f"TLS failed: {e}") from e
                self._failed = f"TLS failed: {e}"
                break
            if not part:
                self._eof = True
                break
            parts.append(part)
            if not (obj.pending() or incoming.pending or incoming.eof):
                break  # all read: asking again would only raise SSLWantReadError (~1.5 us)
        if self._outgoing.pending:
            self._send_at_once()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _send_at_once(self) -> None:
        """Write what is pending for the peer if the socket takes it now; the rest waits
        for the next send (a failed write shows again on the next read)."""
        data = self._unsent + self._outgoing.read()
        try:
            sent = os.write(self.fd, data)
        except OSError:
            sent = 0
        self._unsent = data[sent:]

    async def _flush(self) -> None:
        data = self._unsent + self._outgoing.read()
        self._unsent = b""
        if data:
            await tcp_io.send(self._tcp, data)

    async def _fill(self) -> bool:
        """Wait for the socket, read what came into the incoming BIO; False at EOF."""
        raw = await tcp_io.receive(self._tcp.socket, RAW_READ_BYTES)
        self._feed(raw)
        return bool(raw)
