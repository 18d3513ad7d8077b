"""The stream contract and its shared skeleton: content only, one failure contract.

Every translator returns whole data events of content and reports the end, the error,
the usage and the number of events in fields; it never returns `[DONE]` or an error
event (the relay writes those). Checked on every recorded upstream stream of every
vendor, whatever the split, and on a small translator built on the skeleton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import AnthropicOptions, GeminiOptions, OpenAIOptions, ProviderOptions
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.openai.sse import SSEDecoder, SSEEvent
from gateway.providers.base import CallContext, Deployment, StreamTranslator
from gateway.providers.registry import PROVIDERS
from gateway.providers.sse_translator import SSETranslator
from tests.providers.streams import content, data_events

FIXTURES = Path(__file__).parent.parent / "fixtures"
OPTIONS: dict[str, ProviderOptions] = {
    "openai": OpenAIOptions(),
    "anthropic": AnthropicOptions(reasoning_output=True),
    "gemini": GeminiOptions(reasoning_output=True),
}
RECORDED = sorted((kind, path) for kind in OPTIONS for path in (FIXTURES / kind).glob("*.sse"))


def translator(kind: str, include_usage: bool) -> StreamTranslator:
    dep = Deployment("m", "p", kind, "up-model", options=OPTIONS[kind])  # type: ignore[arg-type]
    ctx = CallContext(dep, True, include_usage, "chatcmpl-t", 1730000000)
    return PROVIDERS[kind].new_stream_translator(ctx)  # type: ignore[index]


def feed_all(t: StreamTranslator, pieces: list[bytes]) -> bytes:
    """Feed as the relay does (stopping at the end or a failure), then close."""
    out = []
    for piece in pieces:
        out.append(content(t.feed(piece)))
        if t.error is not None or t.finished:
            break
    if t.error is None:
        out.append(content(t.close()))
    return b"".join(out)


@pytest.mark.parametrize(("kind", "path"), RECORDED, ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("include_usage", [False, True])
def test_recorded_streams_give_content_only_and_count_its_events(
    kind: str, path: Path, include_usage: bool
) -> None:
    raw = path.read_bytes()
    whole = translator(kind, include_usage)
    out = feed_all(whole, [raw])
    assert whole.events == data_events(out)
    if kind == "anthropic" and whole.error is None:
        assert whole.finished  # only message_stop ends an Anthropic stream well
    bytewise = translator(kind, include_usage)
    assert feed_all(bytewise, [raw[i : i + 1] for i in range(len(raw))]) == out
    assert bytewise.events == whole.events
    assert (bytewise.error is None) == (whole.error is None)
    usage_chunks = [e for e in SSEDecoder().feed(out) if b'"choices":[]' in e.data]
    assert len(usage_chunks) <= (1 if include_usage else 0)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("openai", "vllm_inband_error.sse"),
        ("anthropic", "error_after_200.sse"),
        ("gemini", "error_after_200.sse"),
    ],
)
def test_an_upstream_error_is_a_field_not_bytes(kind: str, name: str) -> None:
    t = translator(kind, False)
    out = feed_all(t, [(FIXTURES / kind / name).read_bytes()])
    assert t.error is not None
    assert b'"error"' not in out
    assert t.feed(b"data: {}\n\n") == b"" and t.close() == b""


# ---------------------------------------------------------------- the skeleton


class Echo(SSETranslator):
    """A translator on the skeleton: `{"say": ...}` -> one event per item, `{"end": 1}`
    finishes, `{"fail": ...}` fails, `{"bad": 1}` reads a missing key."""

    __slots__ = ("complete_at_eof", "usage")

    def __init__(self, complete_at_eof: bool = False) -> None:
        super().__init__(max_event_bytes=64)
        self.complete_at_eof = complete_at_eof
        self.usage: Any = None

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        obj = self._object(event.data)
        if obj is None:
            return
        if "say" in obj:
            out.extend(b"data: " + s.encode() + b"\n\n" for s in obj["say"])
        if "fail" in obj:
            self.fail(UpstreamUnavailable(obj["fail"]))
        if obj.get("end"):
            self.finished = True
        if "bad" in obj:
            obj["missing"]

    def _complete(self) -> bool:
        return self.complete_at_eof

    def _end(self, out: list[bytes]) -> None:
        out.append(b"data: bye\n\n")


def test_events_count_every_item_of_content() -> None:
    t = Echo()
    assert t.feed(b'data: {"say":["a","b"]}\n\ndata: {"say":[]}\n\n') == b"data: a\n\ndata: b\n\n"
    assert t.events == 2
    assert t.feed(b'data: {"say":["c"],"end":1}\n\ndata: {"say":["never"]}\n\n') == b"data: c\n\n"
    assert t.finished and t.events == 3
    assert t.feed(b'data: {"say":["after the end"]}\n\n') == b""
    assert t.close() == b"data: bye\n\n" and t.events == 4 and t.error is None


def test_content_before_a_failure_in_one_feed_is_kept_and_nothing_follows() -> None:
    t = Echo()
    out = t.feed(b'data: {"say":["a"]}\n\ndata: {"fail":"down"}\n\ndata: {"say":["b"]}\n\n')
    assert out == b"data: a\n\n" and t.events == 1
    assert isinstance(t.error, UpstreamUnavailable) and t.error.message == "down"
    assert t.feed(b'data: {"say":["c"]}\n\n') == b"" and t.close() == b""


def test_the_first_failure_wins() -> None:
    t = Echo()
    t.feed(b'data: {"fail":"first"}\n\n')
    t.fail(UpstreamError("second"))
    assert t.error is not None and t.error.message == "first"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"data: not json\n\n", "The upstream sent a stream event that is not a JSON object."),
        (b"data: [1]\n\n", "The upstream sent a stream event that is not a JSON object."),
        (b'data: {"bad":1}\n\n', "The upstream sent a stream event of an unexpected shape."),
        (b"data: " + b"x" * 100, "The upstream sent a malformed stream (SSE line longer"),
    ],
)
def test_every_failure_is_the_error_field_never_an_exception_or_bytes(
    raw: bytes, message: str
) -> None:
    t = Echo()
    assert t.feed(raw) == b""
    assert isinstance(t.error, UpstreamError) and t.error.message.startswith(message)
    assert t.events == 0


@pytest.mark.parametrize(
    ("raw", "complete_at_eof", "truncated"),
    [
        (b"", False, True),  # an upstream marker was expected
        (b'data: {"say":["a"]}\n\n', False, True),
        (b'data: {"say":["a"]}\n\n', True, False),  # the vendor says the answer is whole
        (b'data: {"say":["a"]}\n\ndata: {"say"', True, True),  # but an event was cut
    ],
)
def test_eof_without_finished_is_truncation_unless_complete(
    raw: bytes, complete_at_eof: bool, truncated: bool
) -> None:
    t = Echo(complete_at_eof)
    t.feed(raw)
    tail = t.close()
    if truncated:
        assert tail == b"" and t.error is not None
        assert t.error.code == "upstream_stream_truncated" and t.error.http_status == 502
    else:
        assert tail == b"data: bye\n\n" and t.error is None
