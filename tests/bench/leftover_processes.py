"""Finding processes a benchmark run left behind, for the tests of compare and idle."""

from __future__ import annotations

import os
from pathlib import Path


def processes_under(path: Path) -> list[int]:
    """Live processes whose command line or working directory mention `path`."""
    found = []
    needle = str(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(int(entry))
    return found
