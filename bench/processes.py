"""Server processes for the benchmarks: start, wait for and stop them.

Every process is started in its own process group with its output in a log file, so
that `Processes.close` can stop it with all its children (workers that outlive their
parent included) and a failure can show the end of its log. What they cost is read
from /proc by `bench.procfs`. Everything listens on `HOST`, the loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "HOST",
    "Processes",
    "env_with_repo",
    "free_port",
    "log_tail",
    "server_processes",
    "stop_process",
    "venv_bin",
    "wait_listening",
]

HOST = "127.0.0.1"


# -- starting and stopping -----------------------------------------------------------


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float, name: str) -> None:
    """Return once HOST:`port` accepts connections; RuntimeError if `proc` exits first
    or `timeout_s` passes (`name` says which server in the message)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on {HOST}:{port} within {timeout_s:g} s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGINT the process group `proc` leads, then SIGKILL it after `grace_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # Kill what is left of the group (workers that outlived their parent) in any case.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


class Processes:
    """Starts processes in their own group; `close` stops them all, last first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `argv` in `log_dir`, its output in ``NAME.log``; return it and the log."""
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.log_dir,
            )
        self.started.append(proc)
        return proc, log_path

    def close(self) -> None:
        while self.started:
            stop_process(self.started.pop())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.started]


@contextlib.contextmanager
def server_processes(log_dir: Path | None, prefix: str) -> Iterator[Processes]:
    """`Processes` logging to `log_dir` (made if need be), or without one to a temporary
    directory named `prefix`... that goes at the end; leaving stops every process."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        log_dir.mkdir(parents=True, exist_ok=True)
        procs = Processes(log_dir)
        stack.callback(procs.close)
        yield procs


def log_tail(path: Path | None, lines: int = 15) -> str:
    """The last `lines` lines of a log, "" if there is none (to say why a server failed)."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def venv_bin(name: str) -> str:
    """`name` next to the running interpreter (the venv's), else on PATH, else `name`."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or name


def env_with_repo() -> dict[str, str]:
    """This environment with the repository on PYTHONPATH, for ``python -m bench ...``."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
