"""The pump through a served gateway: paced streams from every fake vendor, read by
raw clients and the official SDK, relayed once by the pump and once by the relay's
task alone (the pump turned off), and expected to be the same to the byte (ids and
clocks aside), in the ledger too.

tests/upstream/test_pump.py covers the pump against the relay alone; here it is the
whole gateway: the built-in server's `gateway.body_now` write, the readiness watch of
the worker, the accounting after the stream.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from bench.fakes import anthropic as fake_anthropic
from bench.fakes import gemini as fake_gemini
from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway import readiness
from gateway.app import GatewayApp, create_app
from gateway.config import load_config, parse_config
from gateway.server.options import ServerOptions
from gateway.server.serve import serve
from gateway.upstream import relay
from gateway.upstream.pump import pump
from tests.conftest import serve_app
from tests.server.wire import Client

pytestmark = pytest.mark.skipif(not readiness.available(), reason="the pump needs epoll")

KEY = "sk-pump-served-0123456789"
PACE = {"chunk_interval_ms": 4, "chunks": 12}  # each chunk arrives alone: pumped

CONFIG = """
[server]
send_timeout_s = 1

[state]
sqlite_path = "{state_dir}/gateway.sqlite3"

[routing]
max_attempts = 1

[providers.openai]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
idle_timeout_s = 3

[providers.native]
kind = "openai"
base_url = "{openai}"
api_key = "sk-fake-upstream"
responses_api = true

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"

[providers.gemini]
kind = "gemini"
base_url = "{gemini}"
api_key = "{gemini_key}"

[models."gpt-test"]
provider = "openai"
upstream_model = "fake-model"

[models."gpt-native"]
provider = "native"
upstream_model = "fake-model"

[models."claude-test"]
provider = "anthropic"
upstream_model = "claude-fake"

[models."gemini-test"]
provider = "gemini"
upstream_model = "gemini-2.5-flash"

[[keys]]
name = "t"
key = "{key}"
"""


@dataclass
class Served:
    url: str  # ends in /v1
    port: int
    sqlite: Path
    openai: FakeOpenAI
    config: Path
    reload: Callable[[], bool]  # the gateway re-reads `config` (as on SIGHUP)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with (
        run_fake_openai(**PACE) as (openai, openai_url),
        fake_anthropic.run_fake_anthropic(**PACE) as (_, anthropic_url),
        fake_gemini.run_fake_gemini(**PACE) as (_, gemini_url),
    ):
        path: Path = tmp_path_factory.mktemp("pump") / "gateway.toml"
        path.write_text(
            CONFIG.format(
                state_dir=path.parent,
                openai=openai_url,
                anthropic=anthropic_url,
                anthropic_key=fake_anthropic.DEFAULT_KEY,
                gemini=gemini_url,
                gemini_key=fake_gemini.DEFAULT_KEY,
                key=KEY,
            )
        )
        app = create_app(load_config(path))
        background = BackgroundTrio[int](partial(serve_app, app), name="gateway")
        with background as port:

            def reload() -> bool:
                token = background._token
                return trio.from_thread.run(app.reload, trio_token=token)

            url = f"http://127.0.0.1:{port}/v1"
            yield Served(url, port, path.parent / "gateway.sqlite3", openai, path, reload)


class Pumps:
    """Counts the streams the relay handed to the pump (and the ones it took)."""

    def __init__(self) -> None:
        self.calls = 0
        self.taken = 0

    def wrap(self, pump: Callable[..., Awaitable[bool]]) -> Callable[..., Awaitable[bool]]:
        async def counted(*args: Any, **kwargs: Any) -> bool:
            self.calls += 1
            try:
                took = await pump(*args, **kwargs)
            except BaseException:  # raised from within: it was pumping
                self.taken += 1
                raise
            self.taken += took
            return took

        return counted


@pytest.fixture
def pumps(monkeypatch: pytest.MonkeyPatch) -> Pumps:
    counter = Pumps()
    monkeypatch.setattr(relay, "pump", counter.wrap(pump))
    return counter


def no_pump(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay reads every chunk in its own task, as on a platform without epoll."""
    monkeypatch.setattr(readiness, "worker_watch", lambda: None)


def _request(body: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + KEY.encode() + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# Ids, clocks and the like differ from one request to the next.
_VOLATILE = re.compile(
    rb'"(id|item_id|response_id|created|created_at|completed_at|system_fingerprint)":'
    rb'("[^"]*"|[0-9.]+)'
)


def normalized(body: bytes) -> bytes:
    return _VOLATILE.sub(rb'"\1":"*"', body)


def post_stream(served: Served, path: str, body: dict[str, Any], rid: str) -> bytes:
    with httpx.stream(
        "POST",
        f"{served.url}/{path}",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {KEY}", "x-request-id": rid},
        timeout=20,
    ) as r:
        assert r.status_code == 200, r.read()
        return b"".join(r.iter_raw())


def leave_a_long_stream(served: Served, after: int, rid: str | None = None) -> None:
    """Start a 2-second stream, close the connection once `after` content events came,
    and see the upstream told (its connection closed)."""
    before = served.openai.disconnects
    body = {"model": "openai/fake-model@chunks=200&chunk_interval_ms=10", "messages": HELLO}
    headers = {"authorization": f"Bearer {KEY}"} | ({"x-request-id": rid} if rid else {})
    with httpx.stream(
        "POST",
        f"{served.url}/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=20,
    ) as r:
        seen = 0
        for line in r.iter_lines():
            seen += '"content"' in line
            if seen >= after:
                break  # leaving the block closes the connection
    assert served.openai.wait_for_disconnects(before + 1, timeout_s=2)


def ledger_row(served: Served, rid: str) -> tuple[Any, ...]:
    """The request's usage row, once written (the writer commits every 200 ms)."""
    for _ in range(50):
        with sqlite3.connect(served.sqlite) as db:
            row = db.execute(
                "SELECT model, provider, prompt_tokens, completion_tokens, cached_tokens, "
                "cost_micros, status, attempts FROM usage "
                "WHERE x_request_id = ? AND status != 'pending'",
                (rid,),
            ).fetchone()
        if row is not None:
            return tuple(row)
        time.sleep(0.1)
    raise AssertionError(f"no ledger row for {rid}")


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
STREAMS = [
    ("chat/completions", "gpt-test", {"stream_options": {"include_usage": True}}),
    ("chat/completions", "claude-test", {"stream_options": {"include_usage": True}}),
    ("chat/completions", "gemini-test", {"stream_options": {"include_usage": True}}),
    ("chat/completions", "gpt-test", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("responses", "gpt-test", {}),
    ("responses", "gpt-native", {}),
    ("responses", "claude-test", {}),
    ("responses", "gemini-test", {}),
    # Ends other than [DONE], while pumped: a reset, an in-band error, the same from
    # the bridged vendors, and through the Responses API.
    ("chat/completions", "openai/fake-model@reset_after=6", {}),
    ("chat/completions", "openai/fake-model@error_after=6", {}),
    ("chat/completions", "anthropic/claude-fake@reset_after=6", {}),
    ("chat/completions", "gemini/gemini-2.5-flash@error_after=6", {}),
    ("responses", "openai/fake-model@reset_after=6", {}),
]


@pytest.mark.parametrize(("path", "model", "extra"), STREAMS)
def test_a_pumped_stream_is_the_same_bytes_and_ledger_row_as_one_the_task_relays(
    served: Served,
    pumps: Pumps,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    model: str,
    extra: dict[str, Any],
) -> None:
    """Chat completions and the Responses API (bridged and native), from OpenAI-,
    Anthropic- and Gemini-shaped upstreams: the pump changes nothing a client or the
    ledger sees."""
    if path == "chat/completions":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    else:
        body = {"model": model, "input": "hi"}
    body.update(extra)
    pumped_id, task_id = f"pumped-{uuid.uuid4()}", f"task-{uuid.uuid4()}"
    pumped = post_stream(served, path, body, pumped_id)
    assert pumps.taken, "the stream was not pumped: the test would prove nothing"
    no_pump(monkeypatch)
    by_task = post_stream(served, path, body, task_id)
    assert normalized(pumped) == normalized(by_task)
    assert ledger_row(served, pumped_id) == ledger_row(served, task_id)


def test_an_http_1_0_client_gets_a_pumped_stream_whole_without_chunked_framing(
    served: Served, pumps: Pumps
) -> None:
    """HTTP/1.0 has no chunked framing: the body runs to the close, each piece written
    as it is, and the pump relays them (it used to hand every piece back to the task,
    one pump call per chunk, as the server's direct write declined them)."""
    body = b'{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(_request(body).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
        answer = b""
        while data := s.recv(65536):
            answer += data
    head_part, _, rest = answer.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.0 200") or head_part.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head_part.lower()
    events = [e for e in rest.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events), rest[:200]
    assert events[-1] == b"data: [DONE]"
    assert len(events) >= PACE["chunks"] + 2
    assert pumps.calls and pumps.calls < PACE["chunks"] // 2


def _alive(name: str, module: str) -> list[Any]:
    return [
        o for o in gc.get_objects() if type(o).__name__ == name and type(o).__module__ == module
    ]


def test_a_pumped_stream_that_ended_is_not_kept_alive_by_the_watch(
    served: Served, pumps: Pumps
) -> None:
    """Once a pumped stream is over, nothing of it stays reachable: not its pump state,
    nor (through the write it was given) its client's connection. The worker's watch
    held the last callback it ran in a loop variable while it waited: the last pumped
    stream of a worker (its client connection and buffers, its upstream exchange, its
    translator, its finished task) stayed alive until another socket became ready, on
    a quiet worker indefinitely."""
    with OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=20) as c:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in c.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            if chunk.choices
        )
    assert text and pumps.taken
    time.sleep(0.1)  # the gateway has closed the connection
    gc.collect()
    assert _alive("_Stream", "gateway.upstream.pump") == []
    ours = [
        conn
        for conn in _alive("_ClientConnection", "gateway.server.serve")
        if conn.server.local[1] == served.port
    ]
    assert ours == []


GRAPH = [
    ("_Stream", "gateway.upstream.pump"),
    ("Outcome", "gateway.upstream.relay"),
    ("_UpstreamExchange", "gateway.upstream.h11_pool"),
    ("_ServerExchange", "gateway.server.serve"),
]


@pytest.mark.parametrize("pumped", [True, False])
@pytest.mark.parametrize("fault", ["reset_after=6", "error_after=6"])
def test_a_stream_that_failed_midway_is_freed_without_the_cycle_collector(
    served: Served, pumps: Pumps, monkeypatch: pytest.MonkeyPatch, pumped: bool, fault: str
) -> None:
    """A stream the upstream cut (or failed in band) after its first bytes is freed by
    reference counting, pumped or not. The failure, kept in the outcome (and, pumped,
    in the pump's state) held its traceback, whose frames held the outcome: every cut
    stream's objects, its client connection among them, waited for a full collection
    (the pause tests/upstream/test_h11_pool.py's connection test is about)."""
    if not pumped:
        no_pump(monkeypatch)
    with OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=20) as c:
        list(c.chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    time.sleep(0.1)
    gc.collect()
    before = [len(_alive(*kind)) for kind in GRAPH]
    gc.disable()
    try:
        with OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=20) as c:
            for _ in range(3):
                with contextlib.suppress(openai.APIError):
                    list(
                        c.chat.completions.create(
                            model=f"openai/fake-model@{fault}", messages=HELLO, stream=True
                        )
                    )
        time.sleep(0.1)  # the gateway is done with them
        after = [len(_alive(*kind)) for kind in GRAPH]
    finally:
        gc.enable()
    assert after == before
    assert bool(pumps.taken) is pumped


async def _stalled_reader(served: Served) -> tuple[int, bytes]:
    """A client that sends a streamed request and stops reading for 3 s: the upstream
    disconnects counted when it reads again, and what it then found buffered."""
    body = (
        b'{"model":"openai/fake-model@chunks=4000&chunk_interval_ms=1","stream":true,'
        b'"messages":[{"role":"user","content":"hi"}]}'
    )
    sock = trio.socket.socket()
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", served.port))
        await sock.send(_request(body))
        await trio.sleep(3)  # the stream alone would take 4 s or more
        disconnects = served.openai.disconnects
        answer = b""
        with trio.fail_after(5):
            try:
                while data := await sock.recv(1 << 20):
                    answer += data
            except ConnectionResetError:
                pass
        return disconnects, answer


def test_a_client_that_stops_reading_a_pumped_stream_is_let_go(
    served: Served, pumps: Pumps
) -> None:
    """The pump's write does not take all of a piece once the client's socket is full:
    the task writes the rest, bounded by the server's `send_timeout_s` (1 s here); the
    connection is closed (found closed when the client reads again, after 3 s) and the
    upstream call with it. Passes as it is (no bug found): the path had no test."""
    before = served.openai.disconnects
    resumed, answer = trio.run(_stalled_reader, served)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"[DONE]" not in answer
    assert resumed > before  # let go while the client was not reading, not after
    assert served.openai.wait_for_disconnects(before + 1, timeout_s=1)
    assert pumps.taken


def test_a_request_pipelined_behind_a_pumped_stream_is_answered_after_it(
    served: Served, pumps: Pumps
) -> None:
    """The client's next request arrives while the stream is pumped (the server's
    client watch keeps it); it is answered after the stream's last chunk, on the same
    connection. Passes as it is: the path had no test with the pump."""
    streamed = b'{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"a"}]}'
    plain = b'{"model":"gpt-test","messages":[{"role":"user","content":"b"}]}'
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(_request(streamed))
        first = s.recv(65536)  # the head and the first chunk: the stream is under way
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(_request(plain))
        answer = first
        while b'"object":"chat.completion"' not in answer:
            data = s.recv(65536)
            assert data, answer[-300:]
            answer += data
    _, _, second = answer.partition(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 200"), answer[-600:]
    assert b'"object":"chat.completion"' in second
    assert b"data: " not in second
    assert pumps.taken


def test_a_stream_asked_for_with_expect_100_continue_is_pumped_whole(
    served: Served, pumps: Pumps
) -> None:
    """The body is sent only after the server's 100 Continue; the stream's pieces then
    go out by the direct write (which declines while a 100 Continue is being written).
    Passes as it is: the path had no test with the pump."""
    body = b'{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    head, _, body = _request(body).partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(head + b"\r\nexpect: 100-continue\r\n\r\n")
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        answer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while not answer.endswith(b"\r\n0\r\n\r\n"):
            data = s.recv(65536)
            assert data, answer[-300:]
            answer += data
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert answer.count(b'"content":') >= PACE["chunks"]
    assert pumps.taken


def test_a_pumped_stream_finishes_on_the_snapshot_it_started_with_across_a_reload(
    served: Served, pumps: Pumps
) -> None:
    """A reload (SIGHUP) that replaces the stream's provider while the stream is pumped:
    the stream runs to its end on the relay it started with, whose connection is closed
    only once the stream let it go. Passes as it is: the path had no test with the
    pump (the reload tests stream from the in-process mock, never pumped)."""
    with OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=20) as c:
        stream = c.chat.completions.create(
            model="openai/fake-model@chunks=40&chunk_interval_ms=10", messages=HELLO, stream=True
        )
        parts = [next(stream), next(stream)]
        text = served.config.read_text()
        served.config.write_text(text.replace("idle_timeout_s = 3\n", "idle_timeout_s = 4\n"))
        try:
            assert served.reload()
            parts.extend(stream)
        finally:
            served.config.write_text(text)
            assert served.reload()
    contents = [p.choices[0].delta.content for p in parts if p.choices]
    assert len([c for c in contents if c]) == 40
    assert parts[-1].choices[0].finish_reason == "stop"
    assert pumps.taken


def _drain_app(tmp_path: Path, upstream_port: int) -> GatewayApp:
    config = parse_config(
        {
            "state": {"sqlite_path": str(tmp_path / "gateway.sqlite3")},
            "providers": {
                "up": {
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "sk-fake-upstream",
                }
            },
            "models": {"m": {"provider": "up", "upstream_model": "fake-model"}},
            "keys": [{"name": "t", "key": KEY}],
        },
        env={},
        source="test_pump_served",
    )
    return create_app(config)


@pytest.mark.parametrize(("chunks", "grace_s", "ends"), [(30, 3.0, "done"), (400, 0.3, "shut")])
@pytest.mark.parametrize("pumped", [True, False])
async def test_a_pumped_stream_during_a_graceful_shutdown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pumped: bool,
    chunks: int,
    grace_s: float,
    ends: str,
) -> None:
    """Shut down while a stream is pumped: it runs to its [DONE] within the grace
    (`done`), or is ended at the grace's end with the final `shutting_down` event
    (`shut`), then the connection closes. Passes as it is: the drain tests stream from
    the in-process mock, never pumped."""
    if not pumped:
        no_pump(monkeypatch)
    trigger = trio.Event()
    fake = FakeOpenAI(chunk_interval_ms=10, chunks=chunks)
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            upstream_port = await n.start(fake.serve)
            opts = ServerOptions(keep_alive_timeout_s=2.0, graceful_timeout_s=grace_s)
            app = _drain_app(tmp_path, upstream_port)
            port = await n.start(
                partial(
                    serve, app, "127.0.0.1", 0, opts, shutdown_trigger=trigger.wait, draining=app
                )
            )
            body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
            c = await Client.connect(port)
            await c.send(_request(body))
            await c._until(b"\r\n\r\n")  # the head
            await c._until(b'"content":')  # content is flowing: the rest is pumped
            trigger.set()
            rest = await c.until_close()
            n.cancel_scope.cancel()
    if ends == "done":
        assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), rest[-300:]
    else:
        assert b"shutting_down" in rest and b"[DONE]" not in rest, rest[-300:]
        assert rest.endswith(b"\r\n0\r\n\r\n"), rest[-300:]


@pytest.mark.parametrize("pumped", [True, False])
def test_a_client_leaving_a_pumped_stream_leaves_a_client_gone_ledger_row(
    served: Served, pumps: Pumps, monkeypatch: pytest.MonkeyPatch, pumped: bool
) -> None:
    """The client closes mid-stream: the upstream is closed and the ledger row says
    `client_gone`, with the usage seen so far (R6), pumped or not."""
    if not pumped:
        no_pump(monkeypatch)
    rid = f"gone-{uuid.uuid4()}"
    leave_a_long_stream(served, after=5, rid=rid)
    row = ledger_row(served, rid)
    assert row[6] == "client_gone"
    assert row[2] > 0 and row[3] >= 3  # prompt tokens; events seen less role and finish
    assert bool(pumps.taken) is pumped


def test_a_stream_goes_on_when_epoll_refuses_its_sockets(
    served: Served, pumps: Pumps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """epoll_ctl refuses every socket (ENOSPC: max_user_watches reached): neither the
    server's watch on the client nor the pump can take the stream, which is served
    whole by its tasks, and a client that leaves is still heard (by `receive`)."""

    def refuse(self: readiness.ReadyWatch, fd: int, readable: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(readiness.ReadyWatch, "add", refuse)
    with OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=20) as c:
        chunks = list(c.chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) == PACE["chunks"]
    assert pumps.calls and not pumps.taken
    leave_a_long_stream(served, after=1)
