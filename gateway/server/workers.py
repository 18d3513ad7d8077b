"""Several worker processes on one port, for the built-in server.

On Linux every worker listens on a socket of its own bound with SO_REUSEPORT, and the
kernel spreads new connections evenly over them. One socket shared by all workers (the
fallback elsewhere) lets whichever worker wakes first accept a whole burst: measured
here, 16 keep-alive connections all went to one of two workers and the other sat idle
(docs/performance.md). The parent binds the port first without listening on it, so a
port in use fails at once and port 0 is resolved once for all workers.

The parent only supervises: SIGTERM or SIGINT is passed on to every worker (each
drains its in-flight requests), and a worker that dies while nobody asked is started
again, unless workers keep dying right after their start (then everything stops with
status 1, instead of looping). SIGHUP asks the parent's `reload` callback first (the
gateway checks the new config there, so a bad one is refused once, in one line), then
is passed on to every worker, each of which reloads on its own; what `reload` returns
is what workers started from then on read on their standard input (the gateway's last
good config, so that a worker replaced after the file went bad still starts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from gateway.server import hangup

__all__ = [
    "Listen",
    "Reload",
    "listen_once",
    "listen_socket",
    "reserve",
    "supervise",
    "worker_socket",
]

log = logging.getLogger("gateway.server.workers")

POLL_S = 0.1
QUICK_DEATH_S = 2.0  # a worker that dies this soon after its start counts as failing
MAX_QUICK_DEATHS = 5


REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass(frozen=True)
class Listen:
    """Where workers accept: their own SO_REUSEPORT sockets on host:port, or the
    inherited listening socket `fd`."""

    host: str
    port: int
    fd: int | None  # None: SO_REUSEPORT
    holder: socket.socket  # the parent's socket (kept open while workers run)

    def worker_args(self) -> list[str]:
        if self.fd is not None:
            return ["--fd", str(self.fd)]
        return ["--reuse-port", self.host, str(self.port)]


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port in the port's SO_REUSEPORT group (not listening)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int, backlog: int) -> Listen:
    """Bind the port in the parent (OSError if it is taken)."""
    if REUSE_PORT:
        sock = _reuse_port_socket(host, port)  # bound, never listening: takes no connection
        return Listen(host, sock.getsockname()[1], None, sock)
    sock = listen_once(host, port, backlog)
    sock.set_inheritable(True)
    return Listen(host, sock.getsockname()[1], sock.fileno(), sock)


def listen_once(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket of a single-process server."""
    return socket.create_server((host, port), family=_family(host), backlog=backlog)


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A worker's own listening socket in the port's SO_REUSEPORT group."""
    sock = _reuse_port_socket(host, port)
    try:
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _start(
    listen: Listen, stdin: bytes | None, extra_args: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], float]:
    argv = [sys.executable, "-m", "gateway", "_worker", *listen.worker_args(), *extra_args]
    fds = () if listen.fd is None else (listen.fd,)
    with hangup.held():  # the worker starts with SIGHUP pending until it can reload
        proc = subprocess.Popen(
            argv, pass_fds=fds, stdin=None if stdin is None else subprocess.PIPE
        )
    if stdin is None:
        return proc, time.monotonic()
    assert proc.stdin is not None
    try:
        proc.stdin.write(stdin)  # read whole by the worker before anything else
        proc.stdin.close()
    except BrokenPipeError:  # it died at once: counted as a quick death
        pass
    return proc, time.monotonic()


Reload = Callable[[], bytes | None]
"""Asked on SIGHUP: the workers' input from now on, or None to refuse the reload."""


def supervise(
    listen: Listen,
    workers: int,
    graceful_timeout_s: float,
    *,
    reload: Reload | None = None,
    worker_input: bytes | None = None,
    worker_args: tuple[str, ...] = (),
) -> int:
    """Run `workers` worker processes on `listen` until SIGTERM/SIGINT; the exit status.

    `worker_input` is written to each new worker's standard input (None: none), and
    `worker_args` added to its command line. SIGHUP calls `reload` (None: passed on
    as is) and, unless it returns None, passes the signal on to every worker."""
    stopping = False
    hangups = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def hung_up(signum: int, frame: FrameType | None) -> None:
        nonlocal hangups
        hangups += 1  # handled in the loop below, not in the handler

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hung_up)
    procs = [_start(listen, worker_input, worker_args) for _ in range(workers)]
    hangup.release()  # `gateway serve` held SIGHUP pending until now
    quick_deaths = 0
    status = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
            if hangups:
                hangups = 0
                answer = reload() if reload is not None else worker_input
                if reload is None or answer is not None:
                    worker_input = answer
                    for proc, _ in procs:
                        if proc.poll() is None:
                            with contextlib.suppress(ProcessLookupError):
                                proc.send_signal(signal.SIGHUP)
            for i, (proc, started) in enumerate(procs):
                code = proc.poll()
                if code is None or stopping:
                    continue
                quick = time.monotonic() - started < QUICK_DEATH_S
                quick_deaths = quick_deaths + 1 if quick else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("workers keep exiting right after their start; stopping")
                    stopping = True
                    status = 1
                    break
                log.error("worker %d exited with status %s; starting another", proc.pid, code)
                procs[i] = _start(listen, worker_input, worker_args)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + graceful_timeout_s + 5.0
        for proc, _ in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        listen.holder.close()
        hangup.hold()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def worker_socket(fd: int) -> socket.socket:
    """The listening socket a worker inherited as `fd`."""
    sock = socket.socket(fileno=fd)
    if os.get_inheritable(fd):
        sock.set_inheritable(False)
    return sock
