"""The pump (gateway/upstream/pump.py): a paced stream's chunks relayed with no task
switch per chunk, and everything else handed back to the relay's task as before.

Each test runs a paced stream (chunks some milliseconds apart, so each arrives alone)
through the relay on the h11 transport, once with a writer that can write at once
(the pump relays) and once without (the task reads every chunk), and expects the same.
"""

from __future__ import annotations

import contextlib
import errno
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trio

from bench.fakes.server import Handler, Reply, Request
from gateway import readiness
from gateway.errors import GatewayError, UpstreamConnectionError, UpstreamTimeout
from gateway.upstream import relay as relay_module
from gateway.upstream.pump import pump
from gateway.upstream.relay import Outcome
from tests.upstream.test_relay import (
    SSE,
    Scripted,
    ScriptedProvider,
    Upstream,
    _stream_with_finish,
    chunk,
    upstream,
)

pytestmark = pytest.mark.skipif(not readiness.available(), reason="the pump needs epoll")

N = 12
GAP_S = 0.01
DONE = b"data: [DONE]\n\n"


def paced(n: int = N, gap_s: float = GAP_S, then: str = "done"):  # type: ignore[no-untyped-def]
    """An upstream sending `n` chunks `gap_s` apart, then [DONE] ("done"), a reset
    ("cut"), a malformed chunk ("malformed"), a close without the body's end ("fin")
    or nothing for a long while ("idle")."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("0"))
        for i in range(1, n):
            await trio.sleep(gap_s)
            await reply.write(chunk(str(i)))
        await trio.sleep(gap_s)
        if then == "cut":
            reply.abort()
        elif then == "malformed":  # a chunk whose size is not hexadecimal
            await reply._send(b"zz\r\n" + chunk("x") + b"\r\n")
            await trio.sleep(30)
        elif then == "fin":  # closed without the last chunk
            await reply._stream.aclose()
        elif then == "idle":
            await trio.sleep(30)
        else:
            await reply.end(chunk(None, "stop") + DONE)

    return handler


class Steps(trio.abc.Instrument):
    """Counts the steps one task runs (each is a wake-up)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def _run(up: Upstream) -> tuple[bytes, Outcome, int]:
    """The stream's bytes, its outcome and how many times its task woke."""
    steps = Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(5):
            out, outcome = await up.stream()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return out, outcome, steps.steps


def _contents(out: bytes) -> list[str]:
    found = []
    for line in out.split(b"\n\n"):
        if line.startswith(b"data: {"):
            obj = orjson.loads(line[6:])
            if obj.get("choices"):
                found.append(obj["choices"][0]["delta"].get("content"))
    return found


@pytest.fixture
def server_tls(certificate: tuple[Path, Path], trust_certificate: None) -> ssl.SSLContext:
    """The upstream's TLS context; the gateway's default context trusts it (and only it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("then", ["done", "cut", "malformed", "fin", "idle"])
async def test_a_paced_stream_is_relayed_by_the_pump_and_ends_as_without_it(
    then: str, tls: bool, request: pytest.FixtureRequest
) -> None:
    """The same bytes, outcome and error either way; pumped, the relay's task wakes a
    few times, not once per chunk. From an https upstream too, as every vendor's cloud
    is, with three times the chunks: the handshake's own waits come before the first
    content."""
    context: ssl.SSLContext | None = request.getfixturevalue("server_tls") if tls else None
    n, most = (3 * N, N) if tls else (N, N // 2)
    results = {}
    for kind in ("h11", "h11+pump"):
        async with upstream(paced(n=n, then=then), kind, tls=context, idle_s=0.3) as up:
            results[kind] = await _run(up)
    (task_out, task_outcome, task_steps), (out, outcome, steps) = results.values()
    assert out == task_out
    assert _contents(out)[:n] == [str(i) for i in range(n)]
    assert type(outcome.error) is type(task_outcome.error)
    if outcome.error is not None:
        assert outcome.error.message == task_outcome.error.message  # type: ignore[union-attr]
    assert outcome.events == task_outcome.events
    if then == "done":
        assert outcome.error is None and out.endswith(DONE)
    elif then in ("cut", "malformed", "fin"):
        assert isinstance(outcome.error, UpstreamConnectionError)
        assert b"upstream_connection_lost" in out
        why = {"cut": "reset", "malformed": "malformed", "fin": "closed early"}[then]
        assert why in outcome.error.message
    else:
        assert isinstance(outcome.error, UpstreamTimeout) and b"upstream_timeout" in out
    assert task_steps > n
    assert steps < most, f"the relay's task woke {steps} times for {n} chunks"


Tail = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


def _chunks_then(tail: Tail) -> Handler:
    """An https upstream's handler: `N` paced chunks, then `tail` writes the end its
    own way on the TLS stream."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("0"))
        for i in range(1, N):
            await trio.sleep(GAP_S)
            await reply.write(chunk(str(i)))
        await trio.sleep(GAP_S)
        stream = reply._stream
        assert isinstance(stream, trio.SSLStream)
        await tail(stream)

    return handler


async def _task_and_pump(handler: Handler, tls: ssl.SSLContext) -> list[tuple[bytes, Outcome]]:
    """The stream's bytes and outcome read by the task, then pumped. A stream waited on
    after its end would fail by the idle timeout (2 s), which the callers' checks of
    the error tell apart; the 10 s bound only stops a hang."""
    results = []
    for kind in ("h11", "h11+pump"):
        async with upstream(handler, kind, tls=tls, idle_s=2) as up:
            with trio.fail_after(10):
                results.append(await up.stream())
    return results


async def test_an_https_upstream_ending_its_tls_session_with_the_last_bytes_is_not_waited_for(
    server_tls: ssl.SSLContext,
) -> None:
    """A chunk and the TLS session's end (close_notify) in one segment, the TCP
    connection then kept open (a server waiting for our close_notify, as a two-way TLS
    shutdown does): one read takes both, and the socket is never readable again. The
    body was cut, and the pump says so at once, as the task does, not at the idle
    timeout (it waited for a socket that had nothing more to say)."""

    async def close_notify_with_the_last(stream: trio.SSLStream[trio.SocketStream]) -> None:
        tls = stream._ssl_object  # the next chunk and close_notify, written together
        tls.write(b"%x\r\n%b\r\n" % (len(chunk("last")), chunk("last")))
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()
        await stream.transport_stream.send_all(stream._outgoing.read())
        await trio.sleep(30)

    results = await _task_and_pump(_chunks_then(close_notify_with_the_last), server_tls)
    (task_out, task_outcome), (out, outcome) = results
    assert out == task_out
    assert _contents(out)[: N + 1] == [*(str(i) for i in range(N)), "last"]
    assert isinstance(outcome.error, UpstreamConnectionError)
    assert outcome.error.message == task_outcome.error.message  # type: ignore[union-attr]
    assert "closed early" in outcome.error.message


async def test_chunks_that_came_whole_before_bytes_that_are_not_tls_are_relayed(
    server_tls: ssl.SSLContext,
) -> None:
    """A chunk's record and then garbage, in one segment: the chunk is relayed, then
    the stream fails (as trio's SSLStream did: a record at a time, the failure on the
    read after), pumped or not, and the connection is not waited on any further."""

    async def garbage_after_the_last(stream: trio.SSLStream[trio.SocketStream]) -> None:
        stream._ssl_object.write(b"%x\r\n%b\r\n" % (len(chunk("last")), chunk("last")))
        garbage = b"HTTP/1.1 200 OK\r\n\r\n"
        await stream.transport_stream.send_all(stream._outgoing.read() + garbage)
        await trio.sleep(30)

    results = await _task_and_pump(_chunks_then(garbage_after_the_last), server_tls)
    (task_out, task_outcome), (out, outcome) = results
    assert out == task_out
    assert _contents(out)[: N + 1] == [*(str(i) for i in range(N)), "last"]
    assert isinstance(outcome.error, UpstreamConnectionError)
    assert outcome.error.message == task_outcome.error.message  # type: ignore[union-attr]
    assert "reset" in outcome.error.message


async def test_a_stream_pumped_for_longer_than_the_idle_timeout_is_not_cut() -> None:
    """The pump moves the idle deadline as chunks arrive, as the task's loop does."""
    async with upstream(paced(n=25, gap_s=0.02), "h11+pump", idle_s=0.2, total_s=5) as up:
        out, outcome, _ = await _run(up)
    assert outcome.error is None and out.endswith(DONE)
    assert _contents(out)[:25] == [str(i) for i in range(25)]


async def test_a_write_the_client_did_not_take_whole_is_finished_in_order() -> None:
    """Every other piece is taken only in part (the test writer): the task writes the
    rest before the pump relays anything more."""
    async with upstream(paced(), "h11+partial") as up:
        log, outcome = await _stream_with_finish(up)
    body = b"".join(x for x in log if isinstance(x, bytes))
    assert outcome.error is None and body.endswith(DONE)
    assert _contents(body)[:N] == [str(i) for i in range(N)]


async def test_a_cancelled_pumped_stream_stops_being_watched_and_closes_upstream() -> None:
    closed = trio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("0"))
        try:
            for i in range(1, 1000):
                await trio.sleep(GAP_S)
                await reply.write(chunk(str(i)))
        finally:
            if reply.client_gone:
                closed.set()

    async with upstream(handler, "h11+pump") as up:
        watch = readiness.worker_watch()
        assert watch is not None
        with trio.move_on_after(0.2):
            await up.stream()
        assert len(watch) == 0
        with trio.fail_after(2):
            await closed.wait()  # the upstream saw the connection go


async def test_a_translator_failing_in_the_pump_fails_in_the_task() -> None:
    """A bug in translation raises where it would without the pump: in the relay's
    caller, not in the worker's watch (which goes on for every other stream)."""

    class Failing(Scripted):
        def feed(self, data: bytes) -> bytes:
            if self.events >= 2:
                raise RuntimeError("a translator bug")
            return super().feed(data)

    steps: list[tuple[list[bytes], GatewayError | None, bool]] = [([b"data: a\n\n"], None, False)]
    translator = Failing(steps * 10)
    for kind in ("h11", "h11+pump"):
        translator.events = 0
        translator.steps = steps * 10
        async with upstream(paced(), kind, ScriptedProvider(translator)) as up:
            with trio.fail_after(5), pytest.raises(RuntimeError, match="a translator bug"):
                await up.stream()
    watch = readiness.worker_watch()
    assert watch is not None and len(watch) == 0


async def test_a_client_gone_during_a_pumped_write_cancels_the_stream_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's write finds the client gone and cancels the request (its `on_gone`
    callback) inside the pump's call; the stream's task is cancelled, nothing else
    happens and nothing is logged as failing, even when the same read also ends it."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("0"))
        await trio.sleep(GAP_S)
        await reply.write(chunk("1"))
        await trio.sleep(GAP_S)
        await reply.end(chunk("2") + chunk(None, "stop") + DONE)

    async with upstream(handler, "h11+pump") as up:
        ctx = up.ctx(True)
        req = up.relay.provider.build_request({"model": "m", "stream": True}, ctx)
        out: list[bytes] = []
        with trio.CancelScope() as scope:

            async def write(data: bytes) -> None:
                out.append(data)

            def write_now(data: bytes) -> None:
                out.append(data)
                if b'"2"' in data:  # the client went: the server cancels the request
                    scope.cancel()

            with trio.fail_after(5):
                await up.relay.stream(req, ctx, write, write_now=write_now)
        assert scope.cancelled_caught
    assert b'"2"' in b"".join(out) and not b"".join(out).endswith(DONE)
    watch = readiness.worker_watch()
    assert watch is not None and len(watch) == 0
    assert not [r for r in caplog.records if r.name == "gateway.readiness"]


async def test_a_response_that_cannot_be_pumped_is_not_offered_to_the_pump_per_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body the pump cannot read (here framed by its Content-Length; likewise the
    httpx transport's) is read by the task, and the relay asks the pump once, not
    before every chunk (each ask costs ~1 us, ~5% of relaying a chunk)."""
    pieces = [chunk(str(i)) for i in range(N)] + [chunk(None, "stop") + DONE]

    async def handler(request: Request, reply: Reply) -> None:
        size = str(sum(len(p) for p in pieces))
        await reply.start(200, [*SSE, ("content-length", size)], pieces[0])
        for piece in pieces[1:]:
            await trio.sleep(GAP_S)
            await reply.write(piece)

    asked = [0]

    async def counted(*args: object, **kwargs: object) -> bool:
        asked[0] += 1
        return await pump(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(relay_module, "pump", counted)
    async with upstream(handler, "h11+pump") as up:
        out, outcome, _ = await _run(up)
    assert outcome.error is None and out.endswith(DONE)
    assert _contents(out)[:N] == [str(i) for i in range(N)]
    assert asked[0] == 1


async def test_a_stream_dripping_within_the_idle_limit_is_cut_at_the_total_deadline() -> None:
    """Chunks every 10 ms never trip the idle limit (1 s); the total deadline (0.3 s)
    ends the stream with its error event, pumped (the pump moves the deadline, never
    past the total) as in the task."""
    results = {}
    for kind in ("h11", "h11+pump"):
        async with upstream(paced(n=200), kind, idle_s=1.0, total_s=0.3) as up:
            results[kind] = await _run(up)
    for out, outcome, _ in results.values():
        assert isinstance(outcome.error, UpstreamTimeout)
        assert "did not finish within 0.3 s" in outcome.error.message  # the total, not idle
        assert b"upstream_timeout" in out and not out.endswith(DONE)
        assert 0 < len(_contents(out)) < 200  # cut midway: uncut, 200 chunks over 2 s


async def test_a_socket_the_watch_cannot_take_is_relayed_by_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """epoll refuses the socket (ENOSPC: the user's max_user_watches; ENOMEM): the
    stream goes on in its task, whole, instead of failing mid-stream on an OSError."""

    def refuse(self: readiness.ReadyWatch, fd: int, readable: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async with upstream(paced(), "h11") as up:
        expected, _, _ = await _run(up)
    monkeypatch.setattr(readiness.ReadyWatch, "add", refuse)
    async with upstream(paced(), "h11+pump") as up:
        out, outcome, _ = await _run(up)
    assert outcome.error is None and out == expected
