"""The fake upstream over HTTPS (``bench upstream --tls-cert/--tls-key``) and
``bench compare --upstream-tls``: real processes on loopback."""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.__main__ import main as bench_main
from bench.compare import add_parser, run
from bench.fakes.openai import DEFAULT_KEY
from bench.processes import HOST, Processes, server_processes
from bench.procfs import process_tree
from bench.targets import Server, start_gateway, start_upstream
from bench.tls import TlsFiles, self_signed
from tests.bench.leftover_processes import processes_under

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

CHAT = "/v1/chat/completions"


def _chat_body(model: str, stream: bool = True) -> bytes:
    return orjson.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )


def _post(
    conn: http.client.HTTPConnection, key: str, model: str = "fake-model@chunks=3"
) -> tuple[int, bytes]:
    """POST a small streamed chat completion on `conn`; its status and whole body."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    try:
        conn.request("POST", CHAT, _chat_body(model), headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    try:
        return self_signed(tmp_path / "tls")
    except RuntimeError as exc:  # no openssl
        pytest.skip(str(exc))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with server_processes(tmp_path / "logs", "bench-tls-") as started:
        yield started
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []


def test_fake_upstream_speaks_tls(tls: TlsFiles, procs: Processes) -> None:
    upstream = start_upstream(procs, 30.0, tls)
    assert upstream.base_url == f"https://{HOST}:{upstream.port}/v1"
    assert upstream.ca_file == tls.cert

    trusting = ssl.create_default_context(cafile=str(tls.cert))
    https = http.client.HTTPSConnection(HOST, upstream.port, context=trusting, timeout=5)
    status, body = _post(https, DEFAULT_KEY)
    assert status == 200
    assert body.rstrip().endswith(b"data: [DONE]")

    plain = http.client.HTTPConnection(HOST, upstream.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        _post(plain, DEFAULT_KEY)

    untrusting = ssl.create_default_context()  # the system's CAs only
    https = http.client.HTTPSConnection(HOST, upstream.port, context=untrusting, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        _post(https, DEFAULT_KEY)

    assert "Traceback" not in (upstream.log_path or Path("/dev/null")).read_text()


def test_upstream_tls_options_come_in_pairs(tls: TlsFiles) -> None:
    assert bench_main(["upstream", "--port", "0", "--tls-cert", str(tls.cert)]) == 2
    assert bench_main(["upstream", "--port", "0", "--tls-key", str(tls.key)]) == 2


def test_gateway_verifies_the_upstream_certificate(tls: TlsFiles, procs: Processes) -> None:
    """Trusted through SSL_CERT_FILE it streams; without it the handshake is refused,
    so a run that succeeds really went through a verified TLS hop."""
    upstream = start_upstream(procs, 30.0, tls)
    trusted = start_gateway(procs, upstream, 30.0, key_name="trusted", name="gateway-trusted")
    untrusted = start_gateway(
        procs, dataclasses.replace(upstream, ca_file=None), 30.0, key_name="untrusted",
        name="gateway-untrusted",
    )  # fmt: skip

    def post(gateway: Server) -> tuple[int, bytes]:
        assert gateway.api_key is not None
        conn = http.client.HTTPConnection(HOST, gateway.port, timeout=10)
        return _post(conn, gateway.api_key, gateway.model_for["stream"])

    status, body = post(trusted)
    assert status == 200, body
    assert body.rstrip().endswith(b"data: [DONE]")
    status, body = post(untrusted)
    assert status == 502, body  # upstream_unreachable: the handshake was refused


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


def test_compare_upstream_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "8",
         "--scenarios", "paced", "--targets", "direct,gateway,floor", "--upstream-tls",
         "--log-dir", str(tmp_path / "logs"), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "floor: --upstream-tls" in printed

    doc = orjson.loads(out.read_bytes())
    assert doc["options"]["upstream_tls"] is True
    assert doc["upstream_url"].startswith(f"https://{HOST}:")
    assert doc["targets"] == ["direct", "gateway"]
    assert "plain TCP" in doc["skipped"]["floor"]
    rows = {r["target"]: r for r in doc["rows"]}
    assert set(rows) == {"direct", "gateway"}
    for row in rows.values():
        assert row["ok"] > 0 and row["failed"] == 0, row
    config = (tmp_path / "logs" / "workers-1" / "gateway.toml").read_text()
    assert f'base_url = "{doc["upstream_url"]}"' in config
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []
