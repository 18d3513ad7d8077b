"""Several worker processes behind one listening socket, for the built-in server.

The parent binds the socket once and starts `workers` copies of `gateway _worker`,
each inheriting the socket and accepting from it (the kernel hands each connection
to one of them; a busy worker accepts less). The parent only supervises: SIGTERM or
SIGINT is passed on to every worker (each drains its in-flight requests), and a
worker that dies while nobody asked is started again, unless workers keep dying
right after their start (then everything stops with status 1, instead of looping).
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
from types import FrameType

__all__ = ["bind_socket", "supervise"]

log = logging.getLogger("gateway.workers")

POLL_S = 0.1
QUICK_DEATH_S = 2.0  # a worker that dies this soon after its start counts as failing
MAX_QUICK_DEATHS = 5


def bind_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket the workers inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


def _start(fd: int) -> tuple[subprocess.Popen[bytes], float]:
    argv = [sys.executable, "-m", "gateway", "_worker", "--fd", str(fd)]
    return subprocess.Popen(argv, pass_fds=(fd,)), time.monotonic()


def supervise(sock: socket.socket, workers: int, graceful_timeout_s: float) -> int:
    """Run `workers` worker processes on `sock` until SIGTERM/SIGINT; the exit status."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    fd = sock.fileno()
    procs = [_start(fd) for _ in range(workers)]
    quick_deaths = 0
    status = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
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
                procs[i] = _start(fd)
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
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def worker_socket(fd: int) -> socket.socket:
    """The listening socket a worker inherited as `fd`."""
    sock = socket.socket(fileno=fd)
    if os.get_inheritable(fd):
        sock.set_inheritable(False)
    return sock
