"""A `gateway serve` process for the observability tests, its stdout and stderr in files.

The logs are read back from the files (no pipe to drain while the test runs); the
process is stopped with SIGTERM, as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import free_port
from tests.test_cli import wait_ready


@dataclass
class Served:
    """A running (or stopped) gateway process and where its output went."""

    proc: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:PORT
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def log_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (each must be one JSON object). A last line
        without its newline is being written while we read: it is left for later."""
        out = []
        text = self.log_text()
        complete = text[: text.rfind("\n") + 1]
        for line in complete.splitlines():
            if line.strip():
                obj = orjson.loads(line)
                assert isinstance(obj, dict), line
                out.append(obj)
        return out

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], count: int = 1, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """The log lines matching `match`, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [line for line in self.lines() if match(line)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextmanager
def serve(
    tmp_path: Path,
    config: str,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> Iterator[Served]:
    """`gateway serve --config` of `config` (TOML text) on a free port, JSON logs."""
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    port = free_port()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    command += ["--port", str(port), *args]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
        )
    served = Served(proc, f"http://127.0.0.1:{port}", out, err)
    try:
        if ready:
            wait_ready(served.base)
        yield served
    finally:
        served.stop()
