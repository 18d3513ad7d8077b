"""A real `redis-server` on a free loopback port, in a temp dir, for tests.

Tests need the real thing (Lua atomicity, reconnects after a kill), not a fake. The
server runs with no persistence and no eviction, bound to 127.0.0.1 only; `kill()`
stops it the hard way (SIGKILL, like a crash) and `start()` brings it back on the same
port, empty, as a restarted Redis without persistence would be. `extra_args` adds
options (`--requirepass`, `--unixsocket`, `--tls-port`, ...); the plain TCP port stays
open for the readiness check. Tests that need it call `require_redis_server()` and
skip with a clear reason if the binary is missing (`.ci/run` installs it with apt, as
a user would).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest

_START_TIMEOUT_S = 10.0


def redis_server_binary() -> str | None:
    """Path of `redis-server` on PATH, or None."""
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The binary's path; skips the calling test if it is not installed."""
    path = redis_server_binary()
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    """True once the server answers PING on the port (-NOAUTH: up, with a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """One `redis-server` process on 127.0.0.1:`port`, restartable on the same port."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port if port is not None else _free_port()
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        log = (self.workdir / "redis.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    str(self.workdir),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxmemory-policy",
                    "noeviction",
                    "--protected-mode",
                    "yes",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _pings(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server (a crash: its data is gone) and reap it."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=_START_TIMEOUT_S)
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its sockets but answers nothing (a hung Redis)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server politely, then hard if it does not exit in time."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=_START_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=_START_TIMEOUT_S)
            self._proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def running_redis(extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A started server in a fresh temp dir; stopped and cleaned up on exit."""
    binary = require_redis_server()
    with (
        tempfile.TemporaryDirectory(prefix="gw-redis-") as tmp,
        RedisServer(binary, Path(tmp), extra_args=extra_args) as server,
    ):
        yield server
