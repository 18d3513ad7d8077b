"""Passive health: ejection, cooldowns, the half-open probe. Pure: `now` is passed in."""

from __future__ import annotations

from gateway.config import RoutingConfig
from gateway.upstream.health import MAX_ENTRIES, Health

POLICY = RoutingConfig(cooldown_s=5, cooldown_max_s=40, eject_consecutive_failures=3)
A = "openai/a"


def fail(h: Health, times: int, now: float, policy: RoutingConfig = POLICY) -> list[bool]:
    return [h.failure(A, now, policy) for _ in range(times)]


def test_a_healthy_worker_keeps_no_state() -> None:
    h = Health()
    h.success(A, 0)
    assert len(h) == 0 and h.available(A, 0) and h.start(A, 0)


def test_consecutive_failures_eject_for_the_cooldown() -> None:
    h = Health()
    assert fail(h, 3, 100) == [False, False, True]
    assert h.ejected(A, 100) and not h.available(A, 104.9) and not h.start(A, 104.9)
    assert h.available(A, 105)  # the cooldown is over: half-open


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    h = Health()
    fail(h, 2, 100)
    h.success(A, 100)
    assert fail(h, 2, 100) == [False, False]


def test_one_probe_after_the_cooldown_and_its_success_puts_it_back() -> None:
    h = Health()
    fail(h, 3, 100)
    assert h.start(A, 105)  # the probe
    assert not h.available(A, 105) and not h.start(A, 105)  # nobody else meanwhile
    h.success(A, 106)
    assert h.available(A, 106) and h.start(A, 106) and h.start(A, 106)


def test_a_failed_probe_ejects_again_for_twice_as_long() -> None:
    h = Health()
    fail(h, 3, 100)
    assert h.start(A, 105)
    assert h.failure(A, 105, POLICY)  # one failure is enough while probing
    assert not h.available(A, 114.9) and h.available(A, 115)  # 10 s
    assert h.start(A, 115) and h.failure(A, 115, POLICY)
    assert not h.available(A, 134.9) and h.available(A, 135)  # 20 s
    for now in (135, 175, 215):  # then capped at cooldown_max_s
        assert h.start(A, now) and h.failure(A, now, POLICY)
    assert not h.available(A, 254.9) and h.available(A, 255)


def test_the_doubling_starts_over_after_a_long_healthy_spell() -> None:
    h = Health()
    fail(h, 3, 100)
    h.start(A, 105)
    h.failure(A, 105, POLICY)  # 10 s
    h.success(A, 200)  # back in
    fail(h, 3, 300)  # 300 - 115 > cooldown_max_s
    assert h.available(A, 305)


def test_a_probe_that_ends_without_a_verdict_frees_the_slot() -> None:
    h = Health()
    fail(h, 3, 100)
    assert h.start(A, 105)
    h.release(A)
    assert h.start(A, 105)


def test_a_429_with_retry_after_ejects_for_that_long_at_most_the_max() -> None:
    h = Health()
    assert h.failure(A, 100, POLICY, retry_after_s=12)
    assert not h.available(A, 111.9) and h.available(A, 112)
    h2 = Health()
    h2.failure(A, 100, POLICY, retry_after_s=3600)
    assert h2.available(A, 140)  # cooldown_max_s


def test_a_failure_rate_ejects_once_there_are_enough_requests() -> None:
    policy = RoutingConfig(eject_consecutive_failures=100, eject_failure_rate=0.5)
    h = Health()
    ejected = []
    for i in range(20):  # fail, succeed, fail, succeed...
        if i % 2:
            h.success(A, 100 + i * 0.1)
        else:
            ejected.append(h.failure(A, 100 + i * 0.1, policy))
    assert ejected.index(True) == 5  # the 11th outcome: 6 failures of 11 seen


def test_old_outcomes_leave_the_window() -> None:
    policy = RoutingConfig(eject_consecutive_failures=100, eject_failure_rate=0.5)
    h = Health()
    for _ in range(9):
        h.failure(A, 100, policy)
        h.success(A, 100)  # keeps the entry and the failures-in-a-row at zero
    assert not h.failure(A, 111, policy)  # 100's outcomes are gone: 1 seen, below 10


def test_the_least_recently_ejected_is_known() -> None:
    h = Health()
    fail(h, 3, 100)
    h.failure("b", 101, POLICY, retry_after_s=30)
    assert h.ejected_at(A) < h.ejected_at("b")
    assert h.ejected_at("never") < h.ejected_at(A)


def test_entries_are_bounded() -> None:
    h = Health()
    for i in range(MAX_ENTRIES + 10):
        h.failure(f"p/{i}", 100, POLICY)
    assert len(h) == MAX_ENTRIES
