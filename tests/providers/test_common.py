"""providers/common.py: the helpers the three translators share."""

from __future__ import annotations

import tracemalloc

import orjson

from gateway.providers.common import COMPACT_UP_TO, encode_body


def test_encode_body_is_the_json_of_the_payload() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "n": 1}
    assert encode_body(payload) == orjson.dumps(payload)


def test_a_small_body_holds_no_more_memory_than_its_size() -> None:
    """An upstream request's body lives as long as its stream: 10,000 idle streams must
    not each keep orjson's ~4 KiB output buffer."""
    payload = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}]}
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [encode_body(payload) for _ in range(500)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown / len(kept) < 2 * len(kept[0]) + 200


def test_a_large_body_is_not_copied() -> None:
    payload = {"content": "x" * (COMPACT_UP_TO + 10)}
    assert encode_body(payload) == orjson.dumps(payload)
