"""The pid file: how `gateway reload` (or `kill -HUP $(cat gateway.pid)`) finds a
running gateway.

The file holds the decimal pid of the process that takes SIGHUP: the single server
process, or the parent of `--workers N`, which passes it on to every worker. It is
written once the process handles SIGHUP (before that the signal is ignored, never
fatal) and removed at exit, only if it still names this process: a second gateway
started on the same file takes it over, with a warning, and the first one's exit
leaves it alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PidFileError", "holding_pid_file", "read_pid"]

log = logging.getLogger("gateway.server.pidfile")


class PidFileError(Exception):
    """No running gateway could be found from the pid file: the message says why."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def read_pid(path: str | Path) -> int:
    """The pid of the gateway running with the pid file `path`, else PidFileError."""
    p = Path(path)
    try:
        pid = _read(p)
    except OSError as e:
        raise PidFileError(f"cannot read the pid file {p}: {e.strerror}") from None
    if pid is None:
        if not p.exists():
            raise PidFileError(f"no pid file at {p}: is the gateway running with this config?")
        raise PidFileError(f"the pid file {p} does not hold a process id")
    if pid == os.getpid() or not _alive(pid):
        raise PidFileError(f"the pid file {p} names process {pid}, which is not running")
    if not _is_gateway(pid):
        raise PidFileError(
            f"the pid file {p} names process {pid}, which is not a gateway (a stale pid file"
            " left by a gateway that was killed, its pid since reused?)"
        )
    return pid


def _is_gateway(pid: int) -> bool:
    """Whether process `pid` runs the gateway, where /proc can tell (else assumed): a
    pid file left by a killed gateway may name a process that reused its pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here: cannot tell
    except OSError:
        return True
    return b"gateway" in cmdline


@contextlib.contextmanager
def holding_pid_file(path: str | Path | None) -> Iterator[None]:
    """Write this process's pid to `path` for the duration (None: no pid file). A pid
    file that cannot be written is a warning, not a failure: `kill -HUP PID` still works."""
    if path is None:
        yield
        return
    p = Path(path)
    me = os.getpid()
    written = False
    try:
        held = _read(p)
        if held is not None and held != me and _alive(held):
            log.warning(
                "the pid file %s named process %d, still running; it now names this one "
                "(give each gateway its own [server] pid_file)",
                p,
                held,
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{me}")
        tmp.write_text(f"{me}\n")
        os.replace(tmp, p)  # never a half-written file for a reader
        written = True
    except OSError as e:
        log.warning("cannot write the pid file %s (%s): `gateway reload` will not find us", p, e)
    try:
        yield
    finally:
        if written:
            with contextlib.suppress(OSError, ValueError):
                if _read(p) == me:
                    p.unlink()
