"""``python -m bench floor``: the least a relay on trio can do, to see the gateway's gap to it.

    python -m bench floor --upstream http://127.0.0.1:PORT/v1 --port P [--mode stream|raw]

A bare relay: for each client connection one upstream connection; a request's head
and body are read from the client (the head's end and its Content-Length found by
byte scans, nothing parsed beyond) and written upstream as they are; the answer is
relayed back one `send` per upstream `recv`, until its end (Content-Length counted, or
the chunked terminator seen). No HTTP library, no auth, no JSON, no SSE: what is left
is trio and the kernel, so its CPU per relayed chunk is the floor of any trio relay on
this machine, and `bench compare --targets floor,floor-raw` puts it beside the gateway.

Two floors:
- ``stream`` (target ``floor``): trio's `SocketStream.receive_some` / `send_all`, as
  any trio program would write it (each call a checkpoint: a receive that finds
  nothing waits, a send yields to the scheduler once after it wrote);
- ``raw`` (target ``floor-raw``): the socket's fd with `trio.lowlevel.wait_readable`
  then one `os.read`, and `os.write` straight away, waiting (`wait_writable`) only when
  the socket is full: one scheduler pass per relayed chunk, the fewest trio allows.

Requests must be ones the fake upstream answers (its model names, its key): the client
talks to the upstream through this relay as it would directly. Listens on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

import trio

__all__ = ["MODES", "add_parser", "run", "serve_floor"]

MODES = ("stream", "raw")
READ_SIZE = 65536
LAST_CHUNK = b"0\r\n\r\n"


def _content_length(head: bytes) -> int:
    """The Content-Length of a head (0 when absent), found by a byte scan."""
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    start = at + len(b"\r\ncontent-length:")
    end = lower.find(b"\r\n", start)
    return int(lower[start:end].strip())


class _Raw:
    """Receive and send on a socket's fd, with one scheduler pass per receive."""

    __slots__ = ("fd", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return os.read(self.fd, max_bytes)
            except BlockingIOError:
                continue
            except ConnectionError:
                return b""

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fd)

    def close(self) -> None:
        self.sock.close()


Receive = Callable[[int], Awaitable[bytes]]
Send = Callable[[bytes], Awaitable[None]]


async def _relay(
    client_receive: Receive, client_send: Send, up_receive: Receive, up_send: Send
) -> None:
    """Relay requests and answers until either side closes."""
    buf = b""
    while True:
        while (end := buf.find(b"\r\n\r\n")) < 0:
            data = await client_receive(READ_SIZE)
            if not data:
                return
            buf += data
        need = end + 4 + _content_length(buf[: end + 2])
        while len(buf) < need:
            data = await client_receive(READ_SIZE)
            if not data:
                return
            buf += data
        await up_send(buf[:need])
        buf = buf[need:]
        # The answer: its head, then one send per receive until its end.
        head = b""
        while (end := head.find(b"\r\n\r\n")) < 0:
            data = await up_receive(READ_SIZE)
            if not data:
                return
            head += data
        await client_send(head)
        chunked = b"transfer-encoding: chunked" in head[:end].lower()
        left = -1 if chunked else _content_length(head[: end + 2]) - (len(head) - end - 4)
        tail = head[-5:]
        while (chunked and tail != LAST_CHUNK) or (not chunked and left > 0):
            data = await up_receive(READ_SIZE)
            if not data:
                return
            await client_send(data)
            left -= len(data)
            tail = (tail + data)[-5:]


async def _serve_stream(
    upstream: tuple[str, int], host: str, port: int, task_status: trio.TaskStatus[int]
) -> None:
    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream(*upstream) as up:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _relay(client.receive_some, client.send_all, up.receive_some, up.send_all)

    listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _serve_raw(
    upstream: tuple[str, int], host: str, port: int, task_status: trio.TaskStatus[int]
) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)

    async def handle(conn: socket.socket) -> None:
        client = _Raw(conn)
        up_sock = socket.socket()
        up_sock.setblocking(False)
        try:
            try:
                up_sock.connect(upstream)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(up_sock)
            up = _Raw(up_sock)
            await _relay(client.receive_some, client.send_all, up.receive_some, up.send_all)
        except OSError:
            pass
        finally:
            client.close()
            up_sock.close()

    task_status.started(listener.getsockname()[1])
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            nursery.start_soon(handle, conn)


async def serve_floor(
    upstream_url: str,
    host: str,
    port: int,
    mode: str = "stream",
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay to the upstream of `upstream_url` (http only) on host:port until cancelled."""
    rest = upstream_url.split("://", 1)[1].split("/", 1)[0]
    up_host, _, up_port = rest.rpartition(":")
    upstream = (up_host, int(up_port))
    if mode == "raw":
        await _serve_raw(upstream, host, port, task_status)
    else:
        await _serve_stream(upstream, host, port, task_status)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``floor``."""
    parser = subparsers.add_parser(
        "floor", help="a bare trio relay: the floor of what relaying a chunk costs"
    )
    parser.add_argument("--upstream", required=True, help="the upstream's base URL (http)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--mode", choices=MODES, default="stream")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_floor, args.upstream, args.host, args.port, args.mode)
            print(f"floor ({args.mode}) relay: http://{args.host}:{port}/v1", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    return 0
