"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.wire import client_sockets


@pytest.fixture(autouse=True)
def _close_client_sockets() -> Iterator[None]:
    """Close the raw clients' sockets (outside the test's trio run; pytest-trio runs
    only the trio fixtures a test asks for, so this one is sync)."""
    yield
    while client_sockets:
        client_sockets.pop().close()
