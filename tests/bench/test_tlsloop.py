"""``python -m bench tlsloop``: a short real run decrypts every record and prints the costs."""

from __future__ import annotations

import argparse
import re
import shutil

import pytest

from bench import tlsloop


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
def test_the_tls_micro_benchmark_reads_every_record_and_prints_its_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    tlsloop.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tlsloop", "--records", "200", "--repeat", "1"])
    assert tlsloop.run(args) == 0  # each record read back whole, or it asserts
    printed = capsys.readouterr().out
    figures = dict(re.findall(r"^  (\S.*?)\s+(-?\d+\.\d+)$", printed, re.M))
    assert set(figures) == {
        "write + read_now (TLS)",
        "write + os.read (bare)",
        "decrypting in Python",
    }
    assert float(figures["write + read_now (TLS)"]) > 0
