"""The adaptive cap of admission control (gateway/api/overload.py), probe by probe, and
the run-loop instrument that measures the busy share steering it."""

from __future__ import annotations

import time

import trio

from gateway.api.overload import MIN_LIMIT, NO_CAP, Admission, LoopBusy


def busy_admission(in_flight: int, percent: float = 90) -> Admission:
    a = Admission(None, 0, percent)
    for _ in range(in_flight):
        assert a.admit()
    return a


def steer(a: Admission, busy: float, times: int = 1) -> None:
    for _ in range(times):
        a.steer(busy)


def test_no_cap_until_the_loop_is_busy_past_the_threshold() -> None:
    a = busy_admission(40)
    steer(a, 0.8, 20)
    assert a.cap == NO_CAP and a.admit()


def test_busy_past_the_threshold_the_cap_drops_below_what_is_in_flight() -> None:
    a = busy_admission(40)
    steer(a, 1.0, 4)  # smoothed (0.5, 0.75, 0.875, 0.94): the fourth is past 0.9
    assert a.cap < 40 and not a.admit() and a.shed == 1
    caps = []
    for _ in range(20):  # still busy: down to the floor, never below it
        a.steer(1.0)
        caps.append(a.cap)
    assert caps == sorted(caps, reverse=True) and caps[-1] == int(MIN_LIMIT)


def test_with_headroom_the_cap_grows_only_while_it_refuses_requests() -> None:
    a = busy_admission(10)
    steer(a, 1.0, 4)
    for _ in range(10):
        a.done()  # the requests in flight end
    capped = a.cap
    steer(a, 0.2, 5)  # headroom, but nothing refused: an unused cap says nothing
    assert a.cap == capped
    grown = []
    for _ in range(5):
        while a.admit():  # fill up to the cap, then one is refused
            pass
        a.steer(0.2)
        grown.append(a.cap)
    assert grown == sorted(grown) and grown[0] > capped and grown[-1] > 2 * grown[0]


def test_the_fixed_cap_bounds_the_adaptive_one() -> None:
    a = Admission(5, 0, 90)
    for _ in range(5):
        assert a.admit()
    assert not a.admit()
    steer(a, 0.1, 10)  # binding, with headroom: the adaptive cap stays unset
    assert a.cap == 5


def test_the_busy_share_is_the_run_loop_time_not_spent_waiting_for_io() -> None:
    shares: list[float] = []

    async def main() -> None:
        meter = LoopBusy()
        trio.lowlevel.add_instrument(meter)
        try:
            meter.sample()
            end = time.monotonic() + 0.2
            while time.monotonic() < end:  # busy: short blocking steps
                time.sleep(0.01)  # noqa: ASYNC251 (blocking the loop is the point)
                await trio.lowlevel.checkpoint()
            shares.append(meter.sample())
            await trio.sleep(0.2)  # idle: the loop waits for I/O
            shares.append(meter.sample())
        finally:
            trio.lowlevel.remove_instrument(meter)

    trio.run(main)
    busy, idle = shares
    assert busy > 0.8 and idle < 0.2, shares
