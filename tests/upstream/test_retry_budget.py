"""The retry budget's arithmetic: a share of the last 10 s of requests, plus a floor."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.upstream.retry_budget import WINDOW_S, RetryBudget


def test_the_floor_allows_retries_before_any_traffic() -> None:
    b = RetryBudget(0.2, 3)
    assert [b.try_retry(100.0) for _ in range(31)] == [True] * 30 + [False]


def test_retries_are_a_share_of_the_requests_without_a_floor() -> None:
    b = RetryBudget(0.2, 0)
    for _ in range(10):
        b.request(100.0)
    assert [b.try_retry(100.5) for _ in range(3)] == [True, True, False]


def test_the_window_slides() -> None:
    b = RetryBudget(0.5, 0)
    for _ in range(4):
        b.request(100.0)
    assert b.try_retry(100.0) and b.try_retry(100.0) and not b.try_retry(100.0)
    assert not b.try_retry(109.9)  # still within 10 s
    b.request(110.0)
    b.request(110.0)
    assert (b.requests, b.retries) == (2, 0)  # second 100 fell out of the window
    assert b.try_retry(110.5) and not b.try_retry(110.5)


def test_a_long_pause_empties_it() -> None:
    b = RetryBudget(1.0, 0)
    b.request(0.0)
    assert b.try_retry(0.0)
    assert b.allowance(1000.0) == 0 and b.retries == 0


@given(
    st.floats(0, 1),
    st.floats(0, 5),
    st.lists(
        st.tuples(st.one_of(st.floats(0, 0.7), st.floats(5, 30)), st.booleans()),
        min_size=1,
        max_size=300,
    ),
)
# A retry granted while its request was in the window stays counted after that request
# ages out: the bound holds when a retry is granted, not at every later moment (a
# CI-length run found this case against an earlier, too strict, form of the property).
@example(ratio=1.0, floor=0.0, events=[(0.0, True), (5.0, False), (5.0, False)])
def test_retries_never_exceed_the_allowance_of_any_window(
    ratio: float, floor: float, events: list[tuple[float, bool]]
) -> None:
    """When a retry is granted, the retries of the 10 one-second buckets up to now
    (it included) are at most ratio x their requests + floor x 10."""
    b = RetryBudget(ratio, floor)
    now = 1000.0
    per_second: dict[int, list[int]] = {}
    for gap, is_request in events:
        now += gap
        counts = per_second.setdefault(int(now), [0, 0])
        granted = False
        if is_request:
            b.request(now)
            counts[0] += 1
        elif b.try_retry(now):
            counts[1] += 1
            granted = True
        window = [per_second.get(s, [0, 0]) for s in range(int(now) - WINDOW_S + 1, int(now) + 1)]
        requests = sum(c[0] for c in window)
        retries = sum(c[1] for c in window)
        if granted:
            assert retries <= ratio * requests + floor * WINDOW_S + 1e-9
        assert (b.requests, b.retries) == (requests, retries)
        assert (sum(b._requests), sum(b._retries)) == (requests, retries)
