"""``python -m bench idle``: a short real run of idle streams, its clean-up, and the fd check."""

from __future__ import annotations

import argparse
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import run_fake_openai
from bench.idle import (
    add_parser,
    fd_needs,
    gateway_setup,
    max_streams,
    normal_request,
    run,
)
from bench.loadgen.client import Target
from bench.procfs import process_tree
from bench.targets import UPSTREAM_KEY, gateway_config
from tests.bench.leftover_processes import processes_under

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    """A fake OpenAI upstream in a thread, and its base URL."""
    with run_fake_openai() as running:
        yield running


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["idle", *argv])


def test_idle_streams_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    out = tmp_path / "idle.json"
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    args = _parse(
        ["--streams", "200", "--workers", "1", "--hold", "1", "--ramp-per-s", "1000",
         "--log-dir", str(logs), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    labels = [
        "streams opened",
        "gateway RSS before",
        "gateway RSS with streams",
        "gateway RSS after close",
        "gateway per stream",
        "fake upstream RSS",
    ]
    for label in labels:
        assert label in printed

    doc = orjson.loads(out.read_bytes())
    assert doc["streams_requested"] == 200
    assert doc["streams_opened"] == 200
    assert doc["streams_failed"] == 0 and doc["failed_by_reason"] == {}
    assert doc["time_to_open_s"] is not None and doc["time_to_open_s"] > 0
    samples = doc["samples"]
    assert set(samples) == {"before", "with_streams", "end_of_hold", "after_close"}
    for sample in samples.values():
        assert sample["gateway_rss_bytes"] > 0
        assert sample["gateway_hwm_bytes"] >= sample["gateway_rss_bytes"]
        assert sample["upstream_rss_bytes"] > 0
        assert sample["gateway_processes"] and sample["gateway_processes"][0]["rss_bytes"] > 0
    held = samples["end_of_hold"]
    assert held["gateway_client_connections"] == 200
    assert held["gateway_upstream_connections"] >= 200
    assert held["gateway_processes"][0]["fds"] >= 400  # a client and an upstream socket each
    assert held["upstream_fds"] >= 200
    assert doc["rss_per_stream_bytes"] is not None
    # The gateway let go of every connection and still answers normal requests.
    assert doc["let_go_s"] is not None
    after = samples["after_close"]
    assert after["gateway_client_connections"] == 0
    assert doc["after_checks"] == {"m": "ok", "m-stream": "ok"}
    assert doc["options"]["workers"] == 1 and doc["options"]["max_pending"] == 128

    # Every process idle started is gone, and the fd limit is back to what it was.
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == limits


def test_refuses_more_streams_than_fds_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files")
    args = _parse(["--streams", str(hard), "--workers", "1", "--log-dir", str(tmp_path)])
    assert run(args) == 1
    err = capsys.readouterr().err
    assert f"at most {max_streams(hard, 1)} streams fit with 1 worker(s)" in err
    assert list(tmp_path.iterdir()) == []  # nothing was started
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_fd_budget() -> None:
    needs = fd_needs(10_000, 2)
    assert needs["gateway_worker"] > 10_000  # 2 per stream, half the streams, some skew
    assert needs["fake_upstream"] > 10_000 and needs["load_generator"] > 10_000
    assert max(fd_needs(10_000, 2).values()) <= 20_000
    assert max(fd_needs(10_000, 1).values()) > 20_000
    fit = max_streams(20_000, 1)
    assert 5_000 < fit < 10_000
    assert max(fd_needs(fit, 1).values()) <= 20_000 < max(fd_needs(fit + 1, 1).values())


def test_gateway_config_sizes_the_pool() -> None:
    text = gateway_config(8080, "http://127.0.0.1:9/v1", Path("/tmp/x.db"), 2,
                          "redis://127.0.0.1:6379/0", gateway_setup(10_000, 10.0))  # fmt: skip
    assert "max_connections = 10064" in text
    assert 'redis_url = "redis://127.0.0.1:6379/0"' in text
    assert "chunks=2&chunk_interval_ms=70000" in text
    assert "http_server" not in text
    small = gateway_config(8080, "http://127.0.0.1:9/v1", Path("/tmp/x.db"), 1, None,
                           gateway_setup(10, 1.0, "hypercorn"))  # fmt: skip
    assert "max_connections = 512" in small and "redis_url" not in small
    assert 'http_server = "hypercorn"' in small


async def test_normal_request_says_ok_or_why(fake: tuple[FakeOpenAI, str]) -> None:
    target = Target.from_base_url(fake[1])
    assert await normal_request(target, UPSTREAM_KEY, "m", False) == "ok"
    assert await normal_request(target, UPSTREAM_KEY, "m@chunks=3", True) == "ok"
    assert (await normal_request(target, "sk-wrong", "m", False)).startswith("HTTP 401: ")
    assert (await normal_request(target, UPSTREAM_KEY, "m@reset_after=1", True)).startswith(
        "reset: "
    )


@pytest.mark.parametrize(
    "argv",
    [["--streams", "0"], ["--hold", "-1"], ["--ramp-per-s", "0"], ["--open-timeout", "inf"]],
)
def test_bad_numbers_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse(argv)
    assert exit_.value.code == 2
    assert f"argument {argv[0]}: must be" in capsys.readouterr().err
