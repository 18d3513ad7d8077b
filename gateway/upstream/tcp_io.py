"""The upstream pool's reads and writes on a TCP socket, for plain HTTP and under TLS.

Failures are trio's: `ClosedResourceError` for a socket we closed, else
`BrokenResourceError`.
"""

from __future__ import annotations

import os

import trio

__all__ = ["receive", "send"]


async def receive(sock: trio.socket.SocketType, max_bytes: int) -> bytes:
    """Wait until `sock` is readable, then read, so that a chunk arriving alone costs
    one syscall (trio's receive_some reads first, and waits only after that read
    failed); b"" at EOF."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), max_bytes)
        except BlockingIOError:
            continue
        except OSError as e:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("the connection was closed") from None
            raise trio.BrokenResourceError(str(e)) from e


async def send(stream: trio.SocketStream, data: bytes) -> None:
    """Write at once, with no scheduler pass, when the socket takes it all (a request
    nearly always fits its send buffer); the rest through trio, which waits."""
    sock = stream.socket
    try:
        sent = os.write(sock.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError as e:
        if sock.fileno() == -1:
            raise trio.ClosedResourceError("the connection was closed") from None
        raise trio.BrokenResourceError(str(e)) from e
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])
