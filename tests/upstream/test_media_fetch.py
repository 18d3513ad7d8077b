"""Safe media fetching (gateway/upstream/media_fetch.py): SSRF refusals, redirects, limits, types.

A tiny HTTP server on 127.0.0.1 serves the media. Fetches of it either use
`allow_private=True`, or go through a fake resolver that answers a public address
and a connector that records the address dialled and then connects to the local
server: that proves the gateway connects to exactly the address it checked.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bench.fakes.server import Reply, Request, serve_http
from gateway.errors import InvalidRequest
from gateway.providers.base import Media
from gateway.upstream.media_fetch import (
    USER_AGENT,
    FetchPolicy,
    MediaFetcher,
    SystemResolver,
    address_refusal,
    header_mime,
    mime_allowed,
    sniff_mime,
)
from tests.tls import self_signed

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(56))
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20)
PUBLIC = "93.184.215.14"  # public unicast; never dialled for real (the connector redirects)
PUBLIC_2 = "151.101.1.69"
PARAM = "messages[0].content[1].image_url.url"
LOCAL = FetchPolicy(allow_private=True)


# --- the local media server ----------------------------------------------------------


@dataclass
class MediaServer:
    """Routes by path; records every request and the peak number served at once."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    active: int = 0
    peak: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: Request, reply: Reply) -> None:
        self.requests.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self._route(request, reply)
        finally:
            self.active -= 1

    async def _route(self, request: Request, reply: Reply) -> None:
        path, query = request.path, parse_qs(request.query)
        png = [("content-type", "image/png")]
        if path.endswith("img.png"):
            await reply.send(200, png, PNG)
        elif path == "/typed":
            await reply.send(200, [("content-type", "Image/PNG; charset=binary")], PNG)
        elif path == "/octet":
            await reply.send(200, [("content-type", "application/octet-stream")], PNG)
        elif path == "/octet-webp":
            await reply.send(200, [("content-type", "application/octet-stream")], WEBP)
        elif path == "/octet-junk":
            await reply.send(200, [("content-type", "application/octet-stream")], b"MZ\x90\x00")
        elif path == "/untyped":
            await reply.send(200, [], PNG)
        elif path == "/html":
            await reply.send(200, [("content-type", "text/html")], b"<html></html>")
        elif path == "/pdfx":
            await reply.send(200, [("content-type", "application/pdfx")], b"%PDF-1.7")
        elif path == "/text":
            await reply.send(200, [("content-type", "text/plain; charset=utf-8")], b"hello")
        elif path == "/gzip":
            await reply.send(200, [*png, ("content-encoding", "gzip")], b"\x1f\x8b")
        elif path == "/sized":  # exactly n bytes, declared
            await reply.send(200, png, PNG[:8] + bytes(int(query["n"][0]) - 8))
        elif path == "/streamed":  # n bytes in 100-byte chunks, no Content-Length
            await reply.start(200, png)
            for _ in range(int(query["n"][0]) // 100):
                await reply.write(bytes(100))
            await reply.end()
        elif path == "/slow":
            await reply.start(200, png, PNG[:8])
            await trio.sleep(10)
            await reply.end()
        elif path == "/pause":  # answers after a delay
            await trio.sleep(float(query["s"][0]))
            await reply.send(200, png, PNG)
        elif path.startswith("/status/"):
            await reply.send(int(path.rsplit("/", 1)[1]), [("content-type", "text/plain")], b"no")
        elif path == "/redirect":
            status = int(query.get("status", ["302"])[0])
            await reply.send(status, [("location", query["to"][0])])
        elif path == "/no-location":
            await reply.send(302, [])
        elif path.startswith("/chain/"):  # /chain/N redirects N times, each after a delay
            hops = int(path.rsplit("/", 1)[1])
            await trio.sleep(float(query.get("s", ["0"])[0]))
            if hops:
                await reply.send(302, [("location", f"/chain/{hops - 1}?{request.query}")])
            else:
                await reply.send(200, png, PNG)
        elif path == "/dir/relative":
            await reply.send(301, [("location", "img.png")])
        else:
            await reply.send(404, [], b"")


@pytest.fixture
async def server() -> AsyncIterator[MediaServer]:
    media = MediaServer()
    async with trio.open_nursery() as nursery:
        media.port = await nursery.start(serve_http, media.handle, "127.0.0.1", 0)
        yield media
        nursery.cancel_scope.cancel()


class FakeDNS:
    """Answers from a table; a host with several answer lists gets the next one per call."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        await trio.lowlevel.checkpoint()
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise trio.socket.gaierror(-2, "Name or service not known")
        return answers[min(len(self.calls_for(host)), len(answers)) - 1]

    def calls_for(self, host: str) -> list[str]:
        return [h for h in self.calls if h == host]


class Dialer:
    """A connector that records the address dialled, then connects to a local port."""

    def __init__(self, port: int | None) -> None:
        self.port = port
        self.dialled: list[tuple[str, int]] = []

    async def __call__(self, ip: str, port: int) -> trio.abc.Stream:
        self.dialled.append((ip, port))
        if self.port is None:
            raise ConnectionRefusedError("no route in this test")
        return await trio.open_tcp_stream("127.0.0.1", self.port)


def public_fetcher(server: MediaServer, **dns: list[str]) -> tuple[MediaFetcher, FakeDNS, Dialer]:
    """A default-policy fetcher where `media.example` (and `dns`) resolve to public IPs."""
    table = {"media.example": [[PUBLIC]], **{h.replace("_", "."): [a] for h, a in dns.items()}}
    resolver, dialer = FakeDNS(table), Dialer(server.port)
    return MediaFetcher(resolver=resolver, connector=dialer), resolver, dialer


async def refused(fetcher: MediaFetcher, url: str) -> str:
    """Fetch `url` expecting a refusal; its message."""
    with pytest.raises(InvalidRequest) as info:
        await fetcher.fetch(url, param=PARAM)
    err = info.value
    assert (err.http_status, err.param, err.code) == (400, PARAM, "invalid_image_url")
    assert err.message.startswith("Media URL refused: ")
    return err.message


# --- successful fetches --------------------------------------------------------------


async def test_fetches_an_image_with_a_well_formed_request(server: MediaServer) -> None:
    media = await MediaFetcher(LOCAL).fetch(server.url("/img.png?sig=abc"), param=PARAM)
    assert media == Media("image/png", PNG)
    [req] = server.requests
    assert (req.method, req.target) == ("GET", "/img.png?sig=abc")
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["user-agent"] == USER_AGENT
    assert req.headers["accept"] == "*/*"
    assert req.headers["accept-encoding"] == "identity"
    assert req.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("path", "mime", "body"),
    [
        ("/typed", "image/png", PNG),  # parameters stripped, lower-cased
        ("/octet", "image/png", PNG),  # sniffed
        ("/octet-webp", "image/webp", WEBP),
        ("/untyped", "image/png", PNG),  # no Content-Type: sniffed like octet-stream
        ("/text", "text/plain", b"hello"),
    ],
)
async def test_content_type_from_header_or_magic(
    server: MediaServer, path: str, mime: str, body: bytes
) -> None:
    assert await MediaFetcher(LOCAL).fetch(server.url(path), param=PARAM) == Media(mime, body)


async def test_body_of_exactly_max_bytes_is_accepted(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_bytes=1000))
    assert len((await fetcher.fetch(server.url("/sized?n=1000"), param=PARAM)).data) == 1000
    assert len((await fetcher.fetch(server.url("/streamed?n=1000"), param=PARAM)).data) == 1000


async def test_relative_redirect_is_resolved_against_the_current_url(server: MediaServer) -> None:
    media = await MediaFetcher(LOCAL).fetch(server.url("/dir/relative"), param=PARAM)
    assert media.data == PNG
    assert [r.path for r in server.requests] == ["/dir/relative", "/dir/img.png"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_followed(server: MediaServer, status: int) -> None:
    url = server.url(f"/redirect?status={status}&to=/img.png")
    assert (await MediaFetcher(LOCAL).fetch(url, param=PARAM)).data == PNG


async def test_redirects_up_to_the_limit_are_followed(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_redirects=2))
    assert (await fetcher.fetch(server.url("/chain/2"), param=PARAM)).data == PNG


# --- addresses: literals, legacy spellings, resolution -----------------------------------


class Forbidden:
    """A connector for refusals: any connection attempt is a test failure."""

    async def __call__(self, ip: str, port: int) -> trio.abc.Stream:
        raise AssertionError(f"dialled {ip}:{port}")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/img.png", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://2130706433/", "loopback"),  # decimal 127.0.0.1, decoded by getaddrinfo
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://0x7f.1/", "loopback"),  # hex, short form
        ("http://127.1/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback, as IPv4-mapped"),
        ("http://[::ffff:a9fe:a9fe]/", "link-local (cloud metadata), as IPv4-mapped"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local (cloud metadata), as NAT64"),
        ("http://[2002:a9fe:a9fe::1]/", "link-local (cloud metadata), as 6to4"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://10.1.2.3/", "private"),
        ("http://172.31.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "unique local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://192.0.2.1/", "documentation"),  # TEST-NET-1
        ("http://192.0.0.192/", "cloud metadata 192.0.0.192"),  # "global" to Python 3.11
        ("http://192.0.0.200/", "IETF protocol assignments"),
        ("http://198.18.0.1/", "benchmarking"),
        ("http://[2001:db8::1]/", "documentation"),
    ],
)
async def test_non_public_addresses_are_refused_without_connecting(url: str, why: str) -> None:
    fetcher = MediaFetcher(resolver=SystemResolver(), connector=Forbidden())
    message = await refused(fetcher, url)
    assert "not allowed" in message
    assert why in message


async def test_loopback_is_refused_by_default_even_when_a_server_listens(
    server: MediaServer,
) -> None:
    await refused(MediaFetcher(), server.url("/img.png"))
    assert server.requests == []


async def test_a_name_with_one_private_answer_among_public_ones_is_refused(
    server: MediaServer,
) -> None:
    fetcher, _, dialer = public_fetcher(server, mixed_example=[PUBLIC, "10.0.0.5"])
    assert "resolves to an address not allowed (private)" in await refused(
        fetcher, "http://mixed.example/img.png"
    )
    assert dialer.dialled == []


async def test_dns_rebinding_gets_one_resolution_and_the_checked_ip_is_dialled(
    server: MediaServer,
) -> None:
    resolver = FakeDNS({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    dialer = Dialer(server.port)
    fetcher = MediaFetcher(resolver=resolver, connector=dialer)
    media = await fetcher.fetch("http://rebind.example/img.png", param=PARAM)
    assert media.data == PNG
    assert resolver.calls == ["rebind.example"]  # no second look-up that could rebind
    assert dialer.dialled == [(PUBLIC, 80)]
    assert server.requests[0].headers["host"] == "rebind.example"


async def test_a_public_ipv4_mapped_literal_is_dialled_as_ipv4(server: MediaServer) -> None:
    fetcher, resolver, dialer = public_fetcher(server)
    await fetcher.fetch(f"http://[::ffff:{PUBLIC}]:8080/img.png", param=PARAM)
    assert resolver.calls == []  # a literal is never resolved
    assert dialer.dialled == [(PUBLIC, 8080)]
    assert server.requests[0].headers["host"] == f"[::ffff:{PUBLIC}]:8080"


async def test_unresolvable_and_unreachable_hosts_are_refused(server: MediaServer) -> None:
    fetcher, _, _ = public_fetcher(server)
    assert "could not be resolved" in await refused(fetcher, "http://nowhere.example/x.png")
    unreachable = MediaFetcher(resolver=FakeDNS({"a.example": [[PUBLIC]]}), connector=Dialer(None))
    assert "could not connect" in await refused(unreachable, "http://a.example/x.png")


# --- URL text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://media.example/img.png", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://media.example:70/_x", "scheme 'gopher' is not allowed"),
        ("data:image/png;base64,AAAA", "scheme 'data' is not allowed"),
        ("//media.example/img.png", "scheme '' is not allowed"),
        ("http://user:pw@media.example/img.png", "credentials"),
        ("http://media.example@127.0.0.1/img.png", "credentials"),
        ("http://media.example\\@127.0.0.1/", "printable ASCII"),
        ("http://media.example/a b.png", "printable ASCII"),
        ("http://media.example/\r\nX-Injected: 1", "printable ASCII"),
        ("http://médià.example/img.png", "printable ASCII"),
        ("http://[fe80::1%25eth0]/", "must not contain '%'"),
        ("http://[::1/", "not valid"),
        ("http://media.example:0/img.png", "port 0"),
        ("http://media.example:99999/img.png", "not valid"),
        ("http:///img.png", "no host"),
        ("http://media%2eexample/img.png", "must not contain '%'"),
        ("http://media!example/img.png", "host name is not valid"),
        ("http://" + "a" * 9000 + ".example/", "longer than 8192"),
    ],
)
async def test_urls_that_must_never_be_fetched(server: MediaServer, url: str, why: str) -> None:
    fetcher, _, dialer = public_fetcher(server)
    assert why in await refused(fetcher, url)
    assert dialer.dialled == []


# --- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local (cloud metadata)"),
        ("http://[::1]/", "loopback"),
        ("http://internal.example/", "resolves to an address not allowed (private)"),
        ("ftp://media.example/img.png", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ],
)
async def test_every_redirect_is_checked_from_scratch(
    server: MediaServer, to: str, why: str
) -> None:
    fetcher, _, dialer = public_fetcher(server, internal_example=["10.1.2.3"])
    message = await refused(fetcher, f"http://media.example/redirect?to={to}")
    assert "after redirect 1, " in message
    assert why in message
    assert dialer.dialled == [(PUBLIC, 80)]  # the first hop only


async def test_a_redirect_to_another_host_resolves_and_dials_it(server: MediaServer) -> None:
    fetcher, resolver, dialer = public_fetcher(server, other_example=[PUBLIC_2])
    to = "http://other.example:8080/img.png"
    assert (await fetcher.fetch(f"http://media.example/redirect?to={to}", param=PARAM)).data == PNG
    assert resolver.calls == ["media.example", "other.example"]
    assert dialer.dialled == [(PUBLIC, 80), (PUBLIC_2, 8080)]
    assert [r.headers["host"] for r in server.requests] == ["media.example", "other.example:8080"]


async def test_redirect_chains_longer_than_the_limit_are_refused(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_redirects=2))
    assert "redirected more than 2 times" in await refused(fetcher, server.url("/chain/3"))
    assert len(server.requests) == 3


async def test_a_redirect_without_location_is_refused(server: MediaServer) -> None:
    assert "without a Location" in await refused(MediaFetcher(LOCAL), server.url("/no-location"))


# --- size, time, status, type --------------------------------------------------------------


async def test_oversize_by_content_length_is_refused_before_reading(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_bytes=1000))
    assert "too large (5000 bytes, limit 1000)" in await refused(
        fetcher, server.url("/sized?n=5000")
    )


async def test_oversize_while_streaming_is_refused(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_bytes=1000))
    assert "too large (over 1000 bytes)" in await refused(fetcher, server.url("/streamed?n=5000"))


async def test_a_slow_body_is_refused_at_the_deadline(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, timeout_s=0.3))
    start = trio.current_time()
    assert "took longer than 0.3 s" in await refused(fetcher, server.url("/slow"))
    assert trio.current_time() - start < 2.0


async def test_the_deadline_covers_the_whole_redirect_chain(server: MediaServer) -> None:
    """Each hop takes 0.15 s, well under the 0.4 s deadline; four of them do not."""
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, timeout_s=0.4))
    assert "took longer than 0.4 s" in await refused(fetcher, server.url("/chain/3?s=0.15"))


@pytest.mark.parametrize("status", [404, 403, 500, 206])
async def test_non_200_answers_are_refused(server: MediaServer, status: int) -> None:
    message = await refused(MediaFetcher(LOCAL), server.url(f"/status/{status}"))
    assert f"answered HTTP {status}" in message


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/html", "content type 'text/html' is not supported"),
        ("/pdfx", "content type 'application/pdfx' is not supported"),
        ("/octet-junk", "'application/octet-stream' is not a recognised media type"),
        ("/gzip", "compressed"),
    ],
)
async def test_unsupported_content_is_refused(server: MediaServer, path: str, why: str) -> None:
    assert why in await refused(MediaFetcher(LOCAL), server.url(path))


async def test_allowed_types_come_from_the_policy(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, allowed_mime_prefixes=("text/plain",)))
    assert "'image/png' is not supported" in await refused(fetcher, server.url("/img.png"))
    assert "not a recognised" in await refused(fetcher, server.url("/octet"))  # sniffed png


# --- fetch_all -------------------------------------------------------------------------------


async def test_fetch_all_deduplicates_and_keys_by_url(server: MediaServer) -> None:
    a, b = server.url("/img.png"), server.url("/text")
    got = await MediaFetcher(LOCAL).fetch_all([(a, "m[0]"), (b, "m[1]"), (a, "m[2]")])
    assert got == {a: Media("image/png", PNG), b: Media("text/plain", b"hello")}
    assert sorted(r.path for r in server.requests) == ["/img.png", "/text"]


async def test_fetch_all_runs_a_bounded_number_at_once(server: MediaServer) -> None:
    urls = [(server.url(f"/pause?s=0.05&i={i}"), f"m[{i}]") for i in range(10)]
    got = await MediaFetcher(FetchPolicy(allow_private=True, max_concurrency=4)).fetch_all(urls)
    assert len(got) == 10
    assert server.peak == 4


async def test_fetch_all_raises_the_first_failure_and_cancels_the_rest(
    server: MediaServer,
) -> None:
    urls = [(server.url("/slow"), "m[0]"), (server.url("/status/404"), "m[1]")]
    start = trio.current_time()
    with pytest.raises(InvalidRequest) as info:
        await MediaFetcher(LOCAL).fetch_all(urls)
    assert info.value.param == "m[1]"
    assert "HTTP 404" in info.value.message
    assert trio.current_time() - start < 2.0  # /slow was cancelled, not awaited


async def test_fetch_all_bounds_the_total_size(server: MediaServer) -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_private=True, max_total_bytes=100))
    urls = [(server.url("/img.png"), "m[0]"), (server.url("/typed"), "m[1]")]
    with pytest.raises(InvalidRequest, match="exceed 100 bytes in total"):
        await fetcher.fetch_all(urls)
    assert await fetcher.fetch_all([]) == {}


async def test_a_closed_fetcher_refuses_to_fetch(server: MediaServer) -> None:
    fetcher = MediaFetcher(LOCAL)
    await fetcher.aclose()
    with pytest.raises(RuntimeError):
        await fetcher.fetch(server.url("/img.png"), param=PARAM)


# --- logs ------------------------------------------------------------------------------------


async def test_logs_never_carry_the_path_or_query(
    server: MediaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.upstream.media_fetch")
    fetcher = MediaFetcher(LOCAL)
    await fetcher.fetch(server.url("/img.png?token=SECRET1"), param=PARAM)
    await refused(fetcher, server.url("/status/404?token=SECRET2"))
    await refused(fetcher, server.url("/redirect?to=ftp://x/%3Ftoken=SECRET3"))
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name == "gateway.upstream.media_fetch"
    )
    assert "fetched http://127.0.0.1" in ours
    assert "media fetch refused" in ours
    assert "SECRET" not in ours
    assert "/status" not in ours


# --- https -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for media.example (its own trust anchor)."""
    return self_signed(tmp_path_factory.mktemp("tls"), "media.example", "DNS:media.example")


@dataclass
class TLSServer:
    port: int
    names: list[str | None]  # the SNI name of each handshake


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[TLSServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    names: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record_sni
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%b" % (len(PNG), PNG)
    )

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            await stream.send_all(response)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client refused our certificate

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_ssl_over_tcp, handle, 0, context, host="127.0.0.1")
        listeners = await nursery.start(partial(serve, https_compatible=True))
        yield TLSServer(listeners[0].transport_listener.socket.getsockname()[1], names)
        nursery.cancel_scope.cancel()


def tls_fetcher(tls: TLSServer, trust: ssl.SSLContext | None) -> MediaFetcher:
    resolver = FakeDNS({"media.example": [[PUBLIC]], "other.example": [[PUBLIC]]})
    return MediaFetcher(resolver=resolver, connector=Dialer(tls.port), ssl_context=trust)


async def test_https_verifies_the_certificate_against_the_url_host(
    tls_server: TLSServer, certificate: tuple[Path, Path]
) -> None:
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    media = await tls_fetcher(tls_server, trust).fetch("https://media.example/img.png", param=PARAM)
    assert media == Media("image/png", PNG)
    assert tls_server.names == ["media.example"]
    message = await refused(tls_fetcher(tls_server, trust), "https://other.example/img.png")
    assert "certificate is not valid" in message


async def test_https_refuses_an_untrusted_certificate(tls_server: TLSServer) -> None:
    message = await refused(tls_fetcher(tls_server, None), "https://media.example/img.png")
    assert "certificate is not valid" in message


# --- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        PUBLIC,
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above
        "172.15.255.255",
        "172.32.0.0",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::1",  # 6to4 of a public address
        "64:ff9b::808:808",  # NAT64 of a public address
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::8.8.8.8", "IPv4-compatible"),
        ("64:ff9b:1::808:808", "local-use NAT64"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("64:ff9b::7f00:1", "loopback, as NAT64"),
        ("2002:a00:1::", "private, as 6to4"),
        ("::ffff:100.64.0.1", "CGNAT"),
    ],
)
def test_reserved_and_embedded_forms_are_refused(address: str, why: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert why in refusal


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv4_in_ipv6_forms_are_judged_like_the_ipv4(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    verdict = address_refusal(v4) is None
    for form in (
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 6to4
        ipaddress.IPv6Address((0x0064FF9B << 96) | value),  # NAT64
    ):
        assert (address_refusal(form) is None) == verdict, form


def test_type_helpers() -> None:
    assert header_mime(b" Image/JPEG ; q=1") == "image/jpeg"
    assert header_mime(None) == header_mime(b"") == "application/octet-stream"
    assert sniff_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_mime(b"GIF89a...") == sniff_mime(b"GIF87a...") == "image/gif"
    assert sniff_mime(b"%PDF-1.4") == "application/pdf"
    assert sniff_mime(b"RIFF\0\0\0\0WAVE") is None
    assert sniff_mime(b"") is None
    assert mime_allowed("image/svg+xml", ("image/",))
    assert not mime_allowed("application/pdfx", ("application/pdf",))
    assert not mime_allowed("imagex/png", ("image/",))


async def test_all_media_of_a_request_share_one_deadline() -> None:
    """Many URLs, each just under the per-URL limit, must not hold a request for long."""

    async def handler(request: Request, reply: Reply) -> None:
        await trio.sleep(0.35)  # each URL alone is within timeout_s
        await reply.send(200, [("content-type", "image/png")], PNG)

    policy = FetchPolicy(timeout_s=0.5, allow_private=True, max_concurrency=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_http, handler, "127.0.0.1", 0))
        fetcher = MediaFetcher(policy)
        urls = [(f"http://127.0.0.1:{port}/{i}.png", f"p{i}") for i in range(6)]
        with trio.fail_after(3), pytest.raises(InvalidRequest) as info:
            await fetcher.fetch_all(urls)
        assert "took longer than 1 s" in info.value.message
        nursery.cancel_scope.cancel()
