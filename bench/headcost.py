"""What the upstream pool's head work costs per exchange: h11 against gateway/upstream/http1.py.

    python -m bench.headcost [--exchanges N] [--repeat N]

`stream`: one exchange's head work, as the pool does it: render the `POST` head of a
typical chat request (checking every field), then parse a typical SSE response head
(with the first chunk read in the same buffer) and decide its framing. h11's version is
what the pool did before http1.py: a Connection, a Request, send, Data, EndOfMessage,
receive_data and next_event. `json`: a non-streamed exchange on a kept connection, head
and Content-Length body: h11 also gave the body as events (Data, EndOfMessage) and
started the connection's next cycle; the pool now counts the body off itself.
All run in the same process, interleaved, so the ratios hold on a noisy machine; the
best of `--repeat` runs of `--exchanges` is printed, in microseconds.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import h11

from gateway.upstream.http1 import HeadReader, request_head

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
HEADERS = [
    ("host", "127.0.0.1:8001"),
    ("content-length", str(len(BODY))),
    ("accept-encoding", "identity"),
    ("content-type", "application/json"),
    ("authorization", "Bearer sk-up-0123456789abcdef"),
    ("user-agent", "llm-gateway/0.1"),
]
TARGET = b"/v1/chat/completions"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 04:00:00 GMT\r\n"
    b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\nx-request-id: req_0123456789abcdef\r\n"
    b"openai-processing-ms: 12\r\n\r\n1a\r\ndata: {}\n\n\r\n"
)

JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 04:00:00 GMT\r\n"
    b"content-type: application/json\r\ncontent-length: 120\r\n"
    b"connection: keep-alive\r\nx-request-id: req_0123456789abcdef\r\n\r\n" + b"x" * 120
)
_KEPT = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)


def with_h11() -> None:
    h = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    head = h.send(h11.Request(method=b"POST", target=TARGET, headers=HEADERS))
    assert head is not None
    h.send_with_data_passthrough(h11.Data(data=BODY))
    h.send(h11.EndOfMessage())
    h.receive_data(RESPONSE)
    event = h.next_event()
    assert isinstance(event, h11.Response) and h.trailing_data[0]


def with_http1() -> None:
    head = request_head(TARGET, HEADERS)
    assert head
    reader = HeadReader()
    response = reader.feed(RESPONSE)
    assert response is not None and reader.rest


def json_with_h11() -> None:
    h = _KEPT
    head = h.send(h11.Request(method=b"POST", target=TARGET, headers=HEADERS))
    assert head is not None
    h.send_with_data_passthrough(h11.Data(data=BODY))
    h.send(h11.EndOfMessage())
    h.receive_data(JSON_RESPONSE)
    assert isinstance(h.next_event(), h11.Response)
    assert isinstance(h.next_event(), h11.Data)
    assert isinstance(h.next_event(), h11.EndOfMessage)
    h.start_next_cycle()


def json_with_http1() -> None:
    head = request_head(TARGET, HEADERS)
    assert head
    reader = HeadReader()
    response = reader.feed(JSON_RESPONSE)
    assert response is not None and len(reader.rest) == response.length and response.reusable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.headcost", description=__doc__)
    parser.add_argument("--exchanges", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    cases: list[tuple[str, Callable[[], None]]] = [
        ("stream h11", with_h11),
        ("stream http1", with_http1),
        ("json h11", json_with_h11),
        ("json http1", json_with_http1),
    ]
    best = {name: float("inf") for name, _ in cases}
    for _ in range(args.repeat):
        for name, fn in cases:
            spent = timeit.timeit(fn, number=args.exchanges)
            best[name] = min(best[name], spent / args.exchanges * 1e6)
    for name, us in best.items():
        print(f"{name:12} {us:6.1f} us per exchange")
    for kind in ("stream", "json"):
        print(f"{kind:6} ratio  {best[f'{kind} h11'] / best[f'{kind} http1']:.1f}x")


if __name__ == "__main__":
    main()
