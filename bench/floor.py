"""``python -m bench floor``: the least a relay on trio can do, to see the gateway's gap to it.

    python -m bench floor --upstream http://127.0.0.1:PORT/v1 --port P [--mode stream|raw]

A bare relay: for each client connection one upstream connection; a request's head
and body are read from the client (the head's end and its Content-Length found by
byte scans, nothing parsed beyond) and written upstream as they are; the answer is
relayed back one `send` per upstream `recv`, until its end (Content-Length counted, or
the chunked terminator seen). No HTTP library, no auth, no JSON, no SSE: what is left
is trio and the kernel, so its CPU per relayed chunk is the floor of any trio relay on
this machine, and `bench compare --targets floor,floor-raw` puts it beside the gateway.

Three floors:
- ``stream`` (target ``floor``): trio's `SocketStream.receive_some` / `send_all`, as
  any trio program would write it (each call a checkpoint: a receive that finds
  nothing waits, a send yields to the scheduler once after it wrote);
- ``raw`` (target ``floor-raw``): the socket's fd with `trio.lowlevel.wait_readable`
  then one `os.read`, and `os.write` straight away, waiting (`wait_writable`) only when
  the socket is full: one scheduler pass per relayed chunk, the fewest a task per
  stream allows;
- ``pump`` (target ``floor-pump``): as ``raw`` for the heads, but an answer's body is
  relayed by one task for all connections: their upstream sockets stay in one epoll
  interest set, and that task reads and writes each ready one in a plain function call,
  waking the connection's own task only at the end (or when a client's socket is full).
  No scheduler pass and no epoll re-arm per relayed chunk.

Requests must be ones the fake upstream answers (its model names, its key): the client
talks to the upstream through this relay as it would directly. Listens on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import select
import socket
from collections.abc import Awaitable, Callable

import trio

__all__ = ["MODES", "add_parser", "run", "serve_floor"]

MODES = ("stream", "raw", "pump")
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
Body = Callable[[bool, int, bytes], Awaitable[None]]  # chunked, bytes left, last 5 bytes


async def _relay(
    client_receive: Receive,
    client_send: Send,
    up_receive: Receive,
    up_send: Send,
    body: Body | None = None,
) -> None:
    """Relay requests and answers until either side closes; `body`, if given, relays
    each answer's body after its head."""
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
        if body is not None:
            if (chunked and tail != LAST_CHUNK) or (not chunked and left > 0):
                await body(chunked, left, tail)
            continue
        while (chunked and tail != LAST_CHUNK) or (not chunked and left > 0):
            data = await up_receive(READ_SIZE)
            if not data:
                return
            await client_send(data)
            left -= len(data)
            tail = (tail + data)[-5:]


class _Pump:
    """One epoll set of upstream sockets whose answer bodies are being relayed, and the
    task that relays every ready one in a function call (`run`)."""

    __slots__ = ("_epoll", "_relays")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._relays: dict[int, Callable[[], bool]] = {}

    async def relay_body(
        self, up: _Raw, client: _Raw, chunked: bool, left: int, tail: bytes
    ) -> None:
        """Relay the rest of an answer's body from `up` to `client`, in the pump."""
        task = trio.lowlevel.current_task()
        rest = b""

        def ready() -> bool:
            nonlocal left, tail, rest
            try:
                data = os.read(up.fd, READ_SIZE)
            except BlockingIOError:
                return True
            except ConnectionError:
                data = b""
            done = not data
            if data:
                try:
                    sent = os.write(client.fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent, done = len(data), True
                left -= len(data)
                tail = (tail + data)[-5:]
                done = done or (tail == LAST_CHUNK if chunked else left <= 0)
                if sent < len(data):
                    rest, done = data[sent:], True
            if done:
                trio.lowlevel.reschedule(task)
            return not done

        self._relays[up.fd] = ready
        self._epoll.register(up.fd, select.EPOLLIN)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._drop(up.fd)
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self._drop(up.fd)
        if rest:  # the client's socket was full: the rest goes out from this task
            await client.send_all(rest)
            if (chunked and tail != LAST_CHUNK) or (not chunked and left > 0):
                await self.relay_body(up, client, chunked, left, tail)

    def _drop(self, fd: int) -> None:
        if self._relays.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    async def run(self) -> None:
        epoll, relays = self._epoll, self._relays
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _events in epoll.poll(0, 256):
                ready = relays.get(fd)
                if ready is not None and not ready():
                    self._drop(fd)


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
    upstream: tuple[str, int],
    host: str,
    port: int,
    task_status: trio.TaskStatus[int],
    pump: _Pump | None = None,
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
            body: Body | None = None
            if pump is not None:
                body = functools.partial(pump.relay_body, up, client)
            await _relay(client.receive_some, client.send_all, up.receive_some, up.send_all, body)
        except OSError:
            pass
        finally:
            client.close()
            up_sock.close()

    task_status.started(listener.getsockname()[1])
    async with trio.open_nursery() as nursery:
        if pump is not None:
            nursery.start_soon(pump.run)
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
    if mode in ("raw", "pump"):
        await _serve_raw(upstream, host, port, task_status, _Pump() if mode == "pump" else None)
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
