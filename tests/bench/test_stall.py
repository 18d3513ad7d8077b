"""bench/stall.py: the probe runs beside the big requests, and the table reads."""

from __future__ import annotations

from bench.stall import StallOptions, big_body, format_table, stall


def test_a_tiny_stall_run_measures_every_phase() -> None:
    opts = StallOptions(duration_s=0.5, cases=("one-char", "mock"), scale=0.0001, echo=False)
    doc = stall(opts)
    phases = {p["phase"]: p for p in doc["phases"]}
    assert list(phases) == ["baseline", "one-char", "mock"]
    assert phases["baseline"]["big_sent"] == 0 and phases["baseline"]["probes"] > 5
    for case in ("one-char", "mock"):
        assert phases[case]["big_sent"] >= 1 and phases[case]["big_statuses"].keys() == {"200"}
        assert phases[case]["p99_ms"] >= phases[case]["p50_ms"] > 0
    assert "baseline" in format_table(doc)


def test_the_big_bodies_fit_the_default_body_limit() -> None:
    for case in ("one-char", "messages", "tools"):
        assert 3_000_000 < len(big_body(case)) < 16 * 1024 * 1024, case
