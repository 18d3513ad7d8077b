"""SIGTERM with streams longer than the grace (issue 10 item 5), on `gateway serve`.

What a stream still running when `graceful_timeout_s` is over gets: a final
`data: {"error": ...}` event (code `shutting_down`, type `gateway_unavailable_error`)
and a proper end of the chunked body, not a cut connection (a Responses API stream: an
`error` event with that code and `response.failed`, and the failed response is stored);
the ledger row says `shutting_down`, not `client_gone`; and /readyz answers 503 from
SIGTERM on, while the listener still accepts (`drain_delay_s`), so a load balancer stops
sending first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port

KEY = "sk-drain-0123456789"
GRACE_S = 1.0
DELAY_S = 1.0

CONFIG = """
[server]
port = {port}
graceful_timeout_s = {grace}
drain_delay_s = {delay}

[state]
sqlite_path = "{db}"

[providers.mock]
kind = "mock"

[models."mock-slow"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 2

[[keys]]
name = "test"
key = "{key}"
"""


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    db = tmp_path / "gateway.sqlite3"
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(port=port, grace=GRACE_S, delay=DELAY_S, db=db, key=KEY))
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 30
    while b"gateway listening" not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, port, db


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def open_stream(port: int, responses: bool = False) -> tuple[socket.socket, bytes, str]:
    """A streamed chat completion (or response) far longer than the grace; the socket,
    the bytes read so far (head and first events) and the request id."""
    story = "tell me a very long story"
    request: dict[str, object] = {"model": "mock-slow", "stream": True}
    if responses:
        request.update(input=story, max_output_tokens=2000)
    else:
        request.update(messages=[{"role": "user", "content": story}], max_tokens=2000)
    body = json.dumps(request).encode()
    path = b"/v1/responses" if responses else b"/v1/chat/completions"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST " + path + b" HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    data = b""
    while b"\r\n\r\n" not in data or b"data: " not in data:
        data += sock.recv(65536)
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 200"), head
    request_id = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("x-request-id:")
    )
    return sock, data, request_id


def dechunk(body: bytes) -> bytes:
    """The payload of a complete chunked body (it must end with the last chunk)."""
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", body
            return out
        out += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def test_sigterm_ends_long_streams_with_a_final_event_and_says_why(tmp_path: Path) -> None:
    proc, port, db = start(tmp_path)
    try:
        assert get(port, "/readyz")[0] == 200
        streams = [open_stream(port, responses=i == 2) for i in range(3)]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        status, body = get(port, "/readyz")  # a new connection, still accepted
        assert status == 503 and json.loads(body)["status"] == "draining"
        ids = []
        for i, (sock, data, request_id) in enumerate(streams):
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            events = [
                line[6:]
                for line in dechunk(data.partition(b"\r\n\r\n")[2]).decode().split("\n")
                if line.startswith("data: ")
            ]
            assert len(events) > 3 and "[DONE]" not in events
            if i == 2:  # the Responses API's stream
                error, failed = (json.loads(e) for e in events[-2:])
                assert (error["type"], failed["type"]) == ("error", "response.failed")
                assert failed["response"]["status"] == "failed"
                assert failed["sequence_number"] == error["sequence_number"] + 1
            else:
                error = json.loads(events[-1])["error"]
                assert error["type"] == "gateway_unavailable_error"
            assert error["code"] == "shutting_down", error
            ids.append(request_id)
        assert DELAY_S + GRACE_S - 0.3 < time.monotonic() - t0 < DELAY_S + GRACE_S + 3
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, status, completion_tokens FROM usage"
            f" WHERE x_request_id IN ({','.join('?' * len(ids))})",
            ids,
        ).fetchall()
        # The ledger's key of the Responses stream is its response id (`resp_...`).
        (response_id,) = conn.execute(
            "SELECT request_id FROM usage WHERE x_request_id = ?", (ids[2],)
        ).fetchone()
        (stored,) = conn.execute(
            "SELECT response FROM responses WHERE response_id = ?", (response_id,)
        ).fetchone()
    assert len(rows) == 3
    for _, row_status, completion_tokens in rows:
        assert row_status == "shutting_down" and completion_tokens > 0
    assert json.loads(stored)["status"] == "failed"  # stored before its last event
