"""What the benchmarked processes cost, read from /proc: CPU, memory, open files, sockets.

A server's figures are those of its whole process tree (the server and its
descendants: workers included). A process that is gone reads as nothing ({}, None,
0 or left out), since a worker may exit between listing and reading it. Linux only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_delta",
    "fd_count",
    "live_children",
    "own_rss_bytes",
    "proc_status",
    "process_figures",
    "process_tree",
    "tcp_connections",
    "tree_cpu",
    "tree_memory",
]

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


def _pss_kb(pid: int) -> int | None:
    """Proportional set size of `pid` (shared pages split among their users), in kB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors of `pid`, or None if they cannot be listed."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _cmd_name(pid: int) -> str:
    """The program's name and its first two arguments, to tell processes apart."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw if w]
    return " ".join(Path(words[0]).name.split() + words[1:3]) if words else "?"


def own_rss_bytes() -> int:
    """The resident memory of this process, in bytes."""
    return proc_status(os.getpid()).get("VmRSS", 0) * 1024


def live_children(parent: int) -> list[int]:
    """The live (not zombie) direct children of `parent`, sorted: a gateway's workers."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != b"Z":
            out.append(int(entry))
    return sorted(out)


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


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree spent between two `tree_cpu` readings (new processes whole)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) of the tree of `root`, in bytes."""
    hwm = rss = 0
    for pid in process_tree(root):
        status = proc_status(pid)
        hwm += status.get("VmHWM", 0) * 1024
        rss += status.get("VmRSS", 0) * 1024
    return hwm, rss


def process_figures(root: int) -> list[dict[str, Any]]:
    """Memory (bytes), threads and open files of every process of the tree of `root`:
    per process, to see how the workers share the load."""
    rows = []
    for pid in process_tree(root):
        status = proc_status(pid)
        if not status:
            continue
        pss = _pss_kb(pid)
        rows.append(
            {
                "pid": pid,
                "role": "main" if pid == root else "child",
                "command": _cmd_name(pid),
                "rss_bytes": status.get("VmRSS", 0) * 1024,
                "hwm_bytes": status.get("VmHWM", 0) * 1024,
                "rss_anon_bytes": status.get("RssAnon", 0) * 1024,
                "rss_file_bytes": status.get("RssFile", 0) * 1024,
                "pss_bytes": pss * 1024 if pss is not None else None,
                "threads": status.get("Threads"),
                "fds": fd_count(pid),
            }
        )
    return rows


def tcp_connections(ports: Sequence[int]) -> dict[str, int]:
    """Established IPv4 loopback connections: per port, as local and as remote end."""
    counts = {f"{side}:{p}": 0 for p in ports for side in ("local", "remote")}
    wanted = set(ports)
    try:
        with open("/proc/net/tcp") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) < 4 or parts[3] != "01":  # ESTABLISHED
                    continue
                local = int(parts[1].rpartition(":")[2], 16)
                remote = int(parts[2].rpartition(":")[2], 16)
                if local in wanted:
                    counts[f"local:{local}"] += 1
                if remote in wanted:
                    counts[f"remote:{remote}"] += 1
    except OSError:
        pass
    return counts


def pin_tree(root: int, cpus: set[int]) -> int:
    """Pin every thread of `root` and its descendants to `cpus`; the threads pinned.
    (Threads and processes started later inherit it from the one that starts them.)"""
    pinned = 0
    for pid in process_tree(root):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                pinned += 1
            except OSError:
                pass  # a thread that just ended
    return pinned
