"""Server processes for the benchmarks: start, wait for, stop, and account from /proc.

Every process is started in its own process group with its output in a log file, so
that `Processes.close` can stop it with all its children (workers that outlive their
parent included) and a failure can show the end of its log. The CPU and memory of a
server are those of its whole process tree (the server and its descendants), read from
/proc: Linux only. Everything listens on `HOST`, the loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "HOST",
    "Processes",
    "cpu_delta",
    "env_with_repo",
    "free_port",
    "log_tail",
    "proc_status",
    "process_tree",
    "stop_process",
    "tree_cpu",
    "tree_memory",
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


# -- /proc -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/`pid`/status (VmRSS, VmHWM, RssAnon, Threads, ...:
    sizes in kB), or {} if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                with contextlib.suppress(ValueError, IndexError):
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds so far of each process of the tree of `root`."""
    out = {}
    for pid in process_tree(root):
        st = _stat(pid)
        if st is not None:
            out[pid] = st[1]
    return out


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) of the tree of `root`, in bytes."""
    hwm = rss = 0
    for pid in process_tree(root):
        status = proc_status(pid)
        hwm += status.get("VmHWM", 0) * 1024
        rss += status.get("VmRSS", 0) * 1024
    return hwm, rss


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree spent between two `tree_cpu` readings (new processes whole)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())
