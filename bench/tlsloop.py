"""``python -m bench tlsloop``: what the upstream pool's TLS costs per streamed record.

    python -m bench tlsloop [--records 20000] [--repeat 5]

A TLS 1.3 session over a local socket pair, the client being the pool's own
`TLSConnection` (gateway/upstream/tls.py), the server an `ssl.SSLObject` of the
benchmark's: the server's records (each one SSE chunk, as an upstream writes a token)
are encrypted up front, then each is written to the socket and read back with
`read_now`, as the pump does when the socket is readable. Reported: microseconds of
CPU per record for the write and `read_now` together, and for the same writes read with
a bare `os.read` (the syscalls alone), so the difference is what decrypting costs in
Python. Each figure is the best of --repeat runs: the machine is noisy, and the best
run is the one least disturbed. Needs openssl on PATH (a throwaway certificate).
"""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import time
from pathlib import Path

import trio

from bench.subcommand import at_least, parser_for
from bench.tls import self_signed
from gateway.upstream.tls import TLSConnection

RECORD = (
    b'5c\r\ndata: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    b'"choices":[{"index":0,"delta":{"content":" token"}}]}\n\n\r\n'
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = parser_for(commands, "tlsloop", "time the upstream pool's TLS per record", __doc__)
    p.add_argument("--records", type=at_least(int, 100), default=20_000, help="records per run")
    p.add_argument("--repeat", type=at_least(int, 1), default=5, help="runs; the best is kept")


Session = tuple[TLSConnection, ssl.SSLObject, ssl.MemoryBIO, int]


async def _session(cert: Path, key: Path) -> Session:
    """A handshaken client over one end of a socket pair, and the server's SSLObject,
    its outgoing BIO and the socket's other end."""
    a, b = trio.socket.socketpair()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(incoming, outgoing, server_side=True)
    client = TLSConnection(
        trio.SocketStream(a), ssl.create_default_context(cafile=str(cert)), "127.0.0.1"
    )

    async def serve() -> None:
        while True:
            try:
                server.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                break
            if outgoing.pending:
                await b.send(outgoing.read())
            incoming.write(await b.recv(65536))
        if outgoing.pending:
            await b.send(outgoing.read())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.handshake()
    fd = b.detach()
    os.set_blocking(fd, True)
    return client, server, outgoing, fd


def _records(server: ssl.SSLObject, outgoing: ssl.MemoryBIO, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        server.write(RECORD)
        out.append(outgoing.read())
    return out


def _best(runs: list[float], n: int) -> float:
    return min(runs) / n * 1e6


async def _measure(args: argparse.Namespace, cert: Path, key: Path) -> tuple[float, float]:
    client, server, outgoing, fd = await _session(cert, key)
    client.read_now()  # the server's session tickets
    with_tls, bare = [], []
    try:
        for _ in range(args.repeat):
            records = _records(server, outgoing, args.records)
            start = time.process_time()
            for record in records:
                os.write(fd, record)
                got = client.read_now()
                assert got == RECORD, got
            with_tls.append(time.process_time() - start)
            start = time.process_time()
            for record in records:
                os.write(fd, record)
                os.read(client.fd, 65536)
            bare.append(time.process_time() - start)
    finally:
        os.close(fd)
        client.close()
    return _best(with_tls, args.records), _best(bare, args.records)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        files = self_signed(Path(tmp))
        tls_us, bare_us = trio.run(_measure, args, files.cert, files.key)
    print(f"records {args.records}, best of {args.repeat} runs, us of CPU per record:")
    print(f"  write + read_now (TLS)   {tls_us:6.2f}")
    print(f"  write + os.read (bare)   {bare_us:6.2f}")
    print(f"  decrypting in Python     {tls_us - bare_us:6.2f}")
    return 0
