"""``python -m bench relayloop``: a short real run prints every case."""

from __future__ import annotations

import argparse

import pytest

from bench import relayloop


def test_the_relay_loop_micro_benchmark_times_every_case(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    relayloop.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["relayloop", "--chunks", "50", "--repeat", "1"])
    assert relayloop.run(args) == 0
    printed = capsys.readouterr().out
    assert "a direct writer; the pump declines" in printed and "no direct writer" in printed
    assert all(us > 0 for _, us in relayloop.measure(50, 1))
