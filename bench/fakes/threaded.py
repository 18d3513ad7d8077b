"""Run a trio server in a background thread, for synchronous tests and tools.

`BackgroundTrio` runs any serve function that takes ``task_status`` (and calls
``task_status.started(value)`` once it listens) in its own `trio.run` on a daemon
thread. Entering waits for `started` and returns its value (a port, say); leaving
cancels the run, joins the thread and re-raises whatever the thread hit.

    with BackgroundTrio(functools.partial(serve_http, handler, "127.0.0.1", 0)) as port:
        ...
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import trio

from bench.fakes.openai import FakeOpenAI

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ServeFunction(Protocol[T_co]):
    """An async function run until cancelled, reporting readiness via task_status."""

    def __call__(self, *, task_status: trio.TaskStatus[T_co]) -> Awaitable[object]: ...


class BackgroundTrio(Generic[T]):
    """A context manager running `serve` in `trio.run` on a daemon thread."""

    def __init__(
        self, serve: ServeFunction[T], *, start_timeout_s: float = 10.0, name: str = "trio"
    ) -> None:
        self._serve = serve
        self._start_timeout_s = start_timeout_s
        self._name = name
        self._started = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> T:
        if self._thread is not None:
            raise RuntimeError("BackgroundTrio is not reentrant")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._started.wait(self._start_timeout_s):
            self._stop()
            raise TimeoutError(f"{self._name} did not start within {self._start_timeout_s} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._value  # type: ignore[return-value]  # set before _started

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        error = self._error
        if error is None:
            return
        if exc is None:
            raise error
        exc.add_note(f"{self._name} background thread also failed: {error!r}")

    def _stop(self) -> None:
        """Cancel the trio run (if it still runs) and wait for the thread to end."""
        if self._token is not None and self._scope is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            trio.run(self._main)
            if not self._started.is_set():
                raise RuntimeError(f"{self._name} returned without calling task_status.started")
        except BaseException as exc:  # handed to the caller's thread by __enter__/__exit__
            self._error = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            # Called directly (not via nursery.start) so its errors arrive unwrapped.
            await self._serve(task_status=_Started(self))

    def _mark_started(self, value: T) -> None:
        if self._started.is_set():
            raise RuntimeError("task_status.started() called twice")
        self._value = value
        self._started.set()


class _Started(trio.TaskStatus[T]):
    """The task_status handed to the serve function: records the value, wakes __enter__."""

    def __init__(self, owner: BackgroundTrio[T]) -> None:
        self._owner = owner

    def started(self, value: T | None = None) -> None:
        self._owner._mark_started(value)  # type: ignore[arg-type]


@contextmanager
def run_fake_openai(**defaults: Any) -> Iterator[tuple[FakeOpenAI, str]]:
    """Run a `FakeOpenAI(**defaults)` on a free loopback port; yield it and its base URL.

    `defaults` are FakeOpenAI's keyword arguments: behaviour knobs, `api_key`, `strict_roles`...
    The base URL ends in ``/v1``, as the OpenAI SDK expects.
    """
    fake = FakeOpenAI(**defaults)
    with BackgroundTrio[int](fake.serve, name="fake-openai") as port:
        yield fake, f"http://127.0.0.1:{port}/v1"
