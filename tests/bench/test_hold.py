"""Held streams (`bench.loadgen.hold`): opened, held idle, closed; or counted by why not."""

from __future__ import annotations

from collections.abc import Iterator

import h11
import pytest
import trio

from bench.fakes.openai import DEFAULT_KEY, FakeOpenAI
from bench.fakes.threaded import run_fake_openai
from bench.loadgen.client import Target
from bench.loadgen.hold import HoldState, hold_stream, hold_streams
from bench.loadgen.workload import Workload

SLOW = "m@chunks=2&chunk_interval_ms=60000"  # the first chunk at once, the next in a minute


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    with run_fake_openai() as running:
        yield running


def request(target: Target, model: str, key: str | None = DEFAULT_KEY) -> tuple[h11.Request, bytes]:
    """A streaming request of the load generator's workload."""
    w = Workload(host=target.host_header, path=target.path, model=model, stream=True,
                 prompt_tokens=8, max_tokens=16, api_key=key)  # fmt: skip
    return w.head, w.body(0)


async def test_streams_are_held_open_then_closed(fake: tuple[FakeOpenAI, str]) -> None:
    upstream, url = fake
    target = Target.from_base_url(url)
    async with hold_streams(
        target, *request(target, SLOW), 5, ramp_per_s=100, max_pending=2, open_timeout_s=5
    ) as state:
        await state.all_done.wait()
        await trio.sleep(0.1)
        assert upstream.disconnects == 0  # open streams stay open
    assert (state.opened, state.failures, state.pending.value) == (5, 0, 2)
    assert state.last_open_at is not None and state.last_open_at > state.start
    assert all(0 < t < 5 for t in state.open_latencies)
    # Leaving the block closes every connection: the upstream sees them go.
    assert await trio.to_thread.run_sync(upstream.wait_for_disconnects, 5)


@pytest.mark.parametrize(
    ("model", "key", "reason"),
    [
        ("m@reset_after=0", DEFAULT_KEY, "reset"),
        ("m@hang", DEFAULT_KEY, "timeout"),
        ("m", "sk-wrong", "HTTP 401"),
    ],
)
async def test_a_stream_that_does_not_open_says_why(
    fake: tuple[FakeOpenAI, str], model: str, key: str, reason: str
) -> None:
    target = Target.from_base_url(fake[1])
    state = HoldState(total=1, pending=trio.Semaphore(0))
    now = trio.current_time()
    with trio.fail_after(5):
        await hold_stream(state, target, *request(target, model, key), now, now + 0.5)
    assert dict(state.failed) == {reason: 1}, state.examples
    assert state.all_done.is_set() and state.pending.value == 1


async def test_a_failed_connect_says_its_errno() -> None:
    with trio.socket.socket() as sock:  # a port that was free a moment ago
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = Target.from_base_url(f"http://127.0.0.1:{port}/v1")
    state = HoldState(total=1, pending=trio.Semaphore(0))
    now = trio.current_time()
    await hold_stream(state, target, *request(target, "m", None), now, now + 5)
    assert dict(state.failed) == {"connect ECONNREFUSED": 1}


async def test_a_503_is_asked_again_then_counted(fake: tuple[FakeOpenAI, str]) -> None:
    """A server shedding load answers 503: asked again a second later, `retries` times,
    as the OpenAI SDK would; a 503 after the last try counts as a failure."""
    target = Target.from_base_url(fake[1])
    state = HoldState(total=1, pending=trio.Semaphore(0), retries=1)
    now = trio.current_time()
    with trio.fail_after(5):
        await hold_stream(state, target, *request(target, "m@status=503"), now, now + 4)
    assert (state.retried, dict(state.failed)) == (1, {"HTTP 503": 1})
    assert fake[0].request_count == 2
