"""Throwaway TLS material for tests that need a real handshake (openssl on PATH)."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import pytest
import trio

from bench import tls

Handler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


def self_signed(folder: Path, common_name: str, san: str) -> tuple[Path, Path]:
    """A self-signed EC certificate (its own trust anchor) and its key, in `folder`
    (bench/tls.py's); skips the calling test when openssl is not installed. `san` as
    openssl writes it: "DNS:media.example" or "IP:127.0.0.1"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    files = tls.self_signed(folder, common_name, san)
    return files.cert, files.key


@asynccontextmanager
async def tls_server(
    certificate: tuple[Path, Path],
    handler: Handler,
    *,
    https_compatible: bool = True,
    alpn: Sequence[str] = ("http/1.1",),
) -> AsyncIterator[int]:
    """trio's TLS server for `certificate` on a free loopback port, offering `alpn`,
    each connection to `handler` (a connection that breaks simply ends); yields the
    port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    context.set_alpn_protocols(list(alpn))

    async def guarded(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await handler(stream)

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_ssl_over_tcp, guarded, 0, context, host="127.0.0.1")
        listeners = await nursery.start(partial(serve, https_compatible=https_compatible))
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()
