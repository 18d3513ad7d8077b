"""The readiness watch (gateway/readiness.py): one task, many sockets."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from gateway import readiness

pytestmark = pytest.mark.skipif(not readiness.available(), reason="epoll is Linux's")


async def test_each_ready_socket_gets_its_callback_and_a_failing_one_stops_only_itself(
    nursery: trio.Nursery,
) -> None:
    watch = readiness.ReadyWatch()
    nursery.start_soon(watch.run)
    broken_a, broken_b = socket.socketpair()
    fine_a, fine_b = socket.socketpair()
    heard: list[bytes] = []
    ready = trio.Event()

    def broken() -> bool:
        raise RuntimeError("a bug in one stream's callback")

    def fine() -> bool:
        data = os.read(fine_a.fileno(), 100)
        heard.append(data)
        ready.set()
        return bool(data)  # end of stream: no longer watched

    with broken_a, broken_b, fine_a, fine_b:
        watch.add(broken_a.fileno(), broken)
        watch.add(fine_a.fileno(), fine)
        broken_b.send(b"x")  # both ready before the watch runs: one poll finds both
        fine_b.send(b"next request")
        with trio.fail_after(5):
            await ready.wait()
        assert heard == [b"next request"] and len(watch) == 1  # the failing one dropped
        ready = trio.Event()
        fine_b.close()
        with trio.fail_after(5):
            await ready.wait()
        assert heard[-1] == b"" and len(watch) == 0
