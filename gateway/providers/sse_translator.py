"""The skeleton of every JSON-over-SSE stream translator (OpenAI, Anthropic, Gemini).

It holds what they share, and with it the one way a stream fails:

- the SSE decoder and its size limit: a malformed stream (an oversized line or event)
  fails the stream;
- one call per decoded upstream event to the vendor's `_event`, which appends the
  OpenAI events it produces to a list, one `data:` event per item (the skeleton
  counts them: `events`); an event of an unexpected shape (the vendor's code raising
  one of `SHAPE_ERRORS` while reading it) fails the stream;
- `_object`, the JSON object of an event, for the vendors that want one (the OpenAI
  translator reads most events without parsing them);
- `fail(error)`: the stream's failure, recorded once, never produced as bytes; the
  relay writes the error event (providers/base.py, `StreamTranslator`);
- the end: at EOF without `finished`, a stream is truncated unless the vendor's
  `_complete()` says the answer is whole and no event was cut; a stream that ended
  well gets the vendor's `_end` events (the usage chunk, say).

A vendor implements `_event`, and `_complete` and `_end` when it needs them, and keeps
`usage` (OpenAI's shape) itself.

Pure module: no I/O.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from gateway.errors import GatewayError, UpstreamError
from gateway.openai.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent, SSEProtocolError
from gateway.providers.base import JSON
from gateway.providers.common import SHAPE_ERRORS


class SSETranslator:
    """Upstream SSE in, OpenAI chunk events out: the shared part of a translator."""

    __slots__ = ("_decoder", "error", "events", "finished")

    # Who sent the stream, as the error messages name it.
    UPSTREAM: ClassVar[str] = "The upstream"

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self.error: GatewayError | None = None
        self.finished = False  # the upstream said it is done: read no further
        self.events = 0  # data events in the content returned so far

    # ---------------------------------------------------------------- the contract

    def feed(self, data: bytes) -> bytes:
        """The content the upstream bytes `data` complete: whole OpenAI data events."""
        if self.error is not None or self.finished:
            return b""
        try:
            decoded = self._decoder.feed(data)
        except SSEProtocolError as e:
            self.fail(UpstreamError(f"{self.UPSTREAM} sent a malformed stream ({e})."))
            return b""
        out: list[bytes] = []
        handle = self._event
        for event in decoded:
            try:
                handle(event, out)
            except SHAPE_ERRORS:
                self.fail(
                    UpstreamError(f"{self.UPSTREAM} sent a stream event of an unexpected shape.")
                )
            if self.error is not None or self.finished:
                break
        if not out:
            return b""
        self.events += len(out)
        return b"".join(out)

    def close(self) -> bytes:
        """The upstream body ended: the last content, or the truncation error."""
        if (
            self.error is None
            and not self.finished
            and (self._decoder.pending or not self._complete())
        ):
            self.fail(
                UpstreamError(
                    "The upstream stream ended before the response was complete.",
                    code="upstream_stream_truncated",
                )
            )
        if self.error is not None:
            return b""
        out: list[bytes] = []
        self._end(out)
        self.events += len(out)
        return b"".join(out)

    def fail(self, error: GatewayError) -> None:
        """End the stream with `error`; the first failure wins and nothing follows it."""
        if self.error is None:
            self.error = error

    # ---------------------------------------------------------------- for the vendors

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        """Translate one upstream event: append whole OpenAI data events to `out`."""
        raise NotImplementedError

    def _complete(self) -> bool:
        """Whether a body that ended without `finished` holds the whole answer.

        By default it does not: the upstream has an end marker, and without it the
        stream was cut.
        """
        return False

    def _end(self, out: list[bytes]) -> None:
        """The events that close a stream that ended well (none by default)."""

    def _object(self, payload: bytes) -> JSON | None:
        """The event's JSON object, or None after failing the stream when it is not one."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
        self.fail(UpstreamError(f"{self.UPSTREAM} sent a stream event that is not a JSON object."))
        return None
