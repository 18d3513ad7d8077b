"""Admission control (issue 10, "Overload"; docs/reliability.md R7) on the served gateway.

Past `[server] max_in_flight` requests in flight, or while the event loop lags past
`[server] max_loop_lag_ms`, a new request gets 503 `overloaded` with Retry-After at
once, health and readiness checks never do, and requests already admitted go on.
How much this keeps admitted requests fast under 3x the knee is measured with
`python -m bench load --rate`, not here (docs/performance.md).
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from gateway.app import GatewayApp, create_app
from gateway.config import parse_config
from gateway.server.serve import ServerOptions, serve
from tests.server.wire import Client, Response

KEY = "sk-overload-0123456789"


def gateway_app(tmp_path: Path, **server: Any) -> GatewayApp:
    config = parse_config(
        {
            "server": server,
            "state": {"sqlite_path": str(tmp_path / "gateway.sqlite3")},
            "providers": {"mock": {"kind": "mock"}},
            "models": {
                "mock-fast": {"provider": "mock"},
                "mock-slow": {"provider": "mock", "ttft_ms": 0, "tokens_per_s": 20},
            },
            "keys": [{"name": "test", "key": KEY}],
        },
        env={},
        source="test_overload",
    )
    return create_app(config)


async def start(nursery: trio.Nursery, tmp_path: Path, **server: Any) -> int:
    app = gateway_app(tmp_path, **server)
    port: int = await nursery.start(partial(serve, app, "127.0.0.1", 0, ServerOptions()))
    return port


def chat(model: str = "mock-fast", stream: bool = False, content: str = "hi") -> bytes:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def assert_shed(r: Response) -> None:
    assert r.status == 503 and r.header(b"retry-after") == b"1", (r.status, r.body[:200])
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("gateway_unavailable_error", "overloaded")


async def test_past_max_in_flight_new_requests_are_shed_but_health_checks_never(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await start(nursery, tmp_path, max_in_flight=2)
    streams = [await Client.connect(port) for _ in range(2)]
    for c in streams:  # two long streams in flight
        await c.send(chat("mock-slow", stream=True))
        await c._until(b"data: ")
    c = await Client.connect(port)
    for _ in range(3):  # shed, and the connection stays usable (the body was read)
        await c.send(chat())
        assert_shed(await c.response())
    r = await c.request("GET", "/v1/models", (f"Authorization: Bearer {KEY}",))
    assert_shed(r)
    assert (await c.request("GET", "/healthz")).status == 200
    assert (await c.request("GET", "/readyz")).status == 200
    for s in streams:  # the admitted streams run to their end
        with trio.fail_after(5):
            await s._until(b"data: [DONE]\n\n")
    await trio.sleep(0.05)
    await c.send(chat())  # a place is free again
    assert (await c.response()).status == 200


async def test_a_lagging_event_loop_sheds_new_requests_until_it_recovers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Something holding the loop (here a task that blocks it 150 ms at a time) makes
    every request slow; past max_loop_lag_ms new ones are shed, health checks aside."""
    port = await start(nursery, tmp_path, max_loop_lag_ms=50)
    c = await Client.connect(port)
    await c.send(chat())
    assert (await c.response()).status == 200
    hogging = trio.Event()

    async def hog() -> None:
        while not hogging.is_set():
            time.sleep(0.15)  # noqa: ASYNC251 (blocking the loop is the point)
            await trio.sleep(0.01)

    async with trio.open_nursery() as n:
        n.start_soon(hog)
        await trio.sleep(0.5)  # the probe has seen the lag
        await c.send(chat())
        assert_shed(await c.response())
        assert (await c.request("GET", "/healthz")).status == 200
        hogging.set()
    with trio.fail_after(2):
        while True:  # recovered: admitted again after a probe or two
            await trio.sleep(0.1)
            await c.send(chat())
            if (await c.response()).status == 200:
                break


async def test_a_busy_loop_caps_requests_in_flight_and_lifts_the_cap_when_it_has_headroom(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Past max_loop_busy_percent the adaptive cap drops below what is in flight, so a
    new request is shed while the admitted streams go on; health checks never are.
    Once the loop has headroom again, requests refused at the cap make it grow."""
    port = await start(nursery, tmp_path, max_loop_busy_percent=50, max_loop_lag_ms=0)
    streams = [await Client.connect(port) for _ in range(4)]
    for s in streams:  # echoed at 20 tokens/s: ~2 s
        await s.send(chat("mock-slow", stream=True, content="word " * 40))
        await s._until(b"data: ")
    c = await Client.connect(port)
    await c.send(chat())  # not busy yet: no cap
    assert (await c.response()).status == 200
    hogging = trio.Event()

    async def hog() -> None:  # the loop busy ~90% of the time, in short steps
        while not hogging.is_set():
            time.sleep(0.009)  # noqa: ASYNC251 (keeping the loop busy is the point)
            await trio.sleep(0.001)

    async with trio.open_nursery() as n:
        n.start_soon(hog)
        await trio.sleep(0.5)  # a few probes have seen the busy share
        await c.send(chat())
        assert_shed(await c.response())
        assert (await c.request("GET", "/healthz")).status == 200
        hogging.set()
    for s in streams:  # the admitted streams run to their end
        with trio.fail_after(10):
            await s._until(b"data: [DONE]\n\n")
    with trio.fail_after(5):
        while True:  # headroom: the cap grows while it refuses, until it admits
            await trio.sleep(0.05)
            await c.send(chat())
            if (await c.response()).status == 200:
                break
