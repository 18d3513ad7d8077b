"""The pool's own TLS (gateway/upstream/tls.py) against trio's `SSLStream` on a real
handshake: the same plaintext both ways, the same ends, and nothing left undecrypted
behind a socket that is no longer readable (what the pump's epoll wait relies on)."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.upstream.tls import TLSConnection
from tests.tls import tls_server


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["http/1.1"])
    return context


@asynccontextmanager
async def connect(
    port: int, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> AsyncIterator[TLSConnection]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = TLSConnection(tcp, context, host)
    try:
        with trio.fail_after(10):
            await tls.handshake()
        yield tls
    finally:
        tls.close()


async def read_all_now(tls: TLSConnection) -> bytes:
    """The stream to its end read only the pump's way: wait for the socket, `read_now`."""
    out: list[bytes] = []
    with trio.fail_after(10):
        while True:
            await trio.lowlevel.wait_readable(tls.fd)
            data = tls.read_now()
            if data is None:
                return b"".join(out)
            out.append(data)


async def read_all(tls: TLSConnection) -> bytes:
    out: list[bytes] = []
    with trio.fail_after(10):
        while data := await tls.receive_some(65536):
            out.append(data)
    return b"".join(out)


async def test_a_request_and_its_answer_round_trip(certificate: tuple[Path, Path]) -> None:
    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        got = await stream.receive_some(65536)
        await stream.send_all(b"echo:" + bytes(got))
        await stream.aclose()

    async with (
        tls_server(certificate, echo) as port,
        connect(port, client_context(certificate)) as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        await tls.send_all(b"hello")
        assert await read_all(tls) == b"echo:hello"


@pytest.mark.parametrize("read", ["receive_some", "read_now"])
@pytest.mark.parametrize("ending", ["close_notify", "ragged"])
async def test_many_records_arrive_whole_and_in_order(
    certificate: tuple[Path, Path], read: str, ending: str
) -> None:
    """Records of every size, some written together, some apart; read to the end either
    way, with the TLS session closed properly or the socket just closed (an EOF without
    close_notify, which HTTPS tolerates: HTTP's framing says whether the body was whole)."""
    pieces = [os.urandom(n) for n in (1, 7, 100, 16_384, 16_385, 70_000, 3, 0, 250_000, 5)]

    async def send(stream: trio.SSLStream[trio.SocketStream]) -> None:
        for i, piece in enumerate(pieces):
            if piece:
                await stream.send_all(piece)
            if i % 3 == 0:
                await trio.sleep(0.005)
        if ending == "close_notify":
            await stream.aclose()
        else:
            stream.transport_stream.socket.close()

    compatible = ending == "ragged"
    async with (
        tls_server(certificate, send, https_compatible=compatible) as port,
        connect(port, client_context(certificate)) as tls,
    ):
        got = await (read_all_now(tls) if read == "read_now" else read_all(tls))
    assert got == b"".join(pieces)


async def test_no_plaintext_is_left_behind_a_socket_that_is_not_readable(
    certificate: tuple[Path, Path],
) -> None:
    """Many small records in one burst, then silence: after one `read_now` for each
    readable wake, every byte the server wrote has come out, before it closes."""
    burst = [b"chunk %d\n" % i for i in range(500)]
    done = trio.Event()

    async def send(stream: trio.SSLStream[trio.SocketStream]) -> None:
        for piece in burst:
            await stream.send_all(piece)  # a record each
        await done.wait()

    async with (
        tls_server(certificate, send) as port,
        connect(port, client_context(certificate)) as tls,
    ):
        got = b""
        with trio.fail_after(10):
            while len(got) < len(b"".join(burst)):
                await trio.lowlevel.wait_readable(tls.fd)
                data = tls.read_now()
                assert data is not None
                got += data
        done.set()
    assert got == b"".join(burst)


async def test_read_now_with_nothing_to_read_returns_empty(
    certificate: tuple[Path, Path],
) -> None:
    release = trio.Event()

    async def wait(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.do_handshake()  # trio's server would do it lazily, at its first read
        await release.wait()

    async with (
        tls_server(certificate, wait) as port,
        connect(port, client_context(certificate)) as tls,
    ):
        assert tls.read_now() == b""
        release.set()


@pytest.mark.parametrize("refused", ["an untrusted certificate", "a certificate for another host"])
async def test_a_certificate_refused_fails_the_handshake(
    certificate: tuple[Path, Path], refused: str
) -> None:
    async def nothing(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.do_handshake()

    if refused == "an untrusted certificate":
        context, host = ssl.create_default_context(), "127.0.0.1"
    else:
        context, host = client_context(certificate), "api.example"
    async with tls_server(certificate, nothing) as port:
        with pytest.raises(trio.BrokenResourceError, match="CERTIFICATE_VERIFY_FAILED"):
            async with connect(port, context, host=host):
                pass


async def test_a_peer_that_closes_during_the_handshake_is_a_broken_connection() -> None:
    async def close(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, close, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with pytest.raises(trio.BrokenResourceError):
            async with connect(port, ssl.create_default_context()):
                pass
        nursery.cancel_scope.cancel()


async def test_bytes_that_are_not_tls_after_the_handshake_are_a_broken_connection(
    certificate: tuple[Path, Path],
) -> None:
    """Garbage where a record should be fails the read, both ways of reading."""
    for read in ("receive_some", "read_now"):

        async def garbage(stream: trio.SSLStream[trio.SocketStream]) -> None:
            await stream.do_handshake()
            await stream.send_all(b"ok")
            await stream.transport_stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n" * 10)
            await trio.sleep(1)

        async with (
            tls_server(certificate, garbage) as port,
            connect(port, client_context(certificate)) as tls,
        ):
            with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
                if read == "read_now":
                    await read_all_now(tls)
                else:
                    await read_all(tls)
