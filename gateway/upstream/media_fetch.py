"""Safe fetching of remote media (image/file URLs) for upstreams that need the bytes.

Fetching a URL on a client's behalf is a classic SSRF hole (docs/reliability.md R21): a
client could make the gateway read cloud metadata (169.254.169.254), admin ports on
loopback or anything on the private network. A check done once on the URL's text
falls to redirects and to DNS rebinding, so this module:

- accepts only http and https URLs, without credentials, in printable ASCII;
- resolves the host itself, once per hop, through an injectable `Resolver`, and
  refuses the hop when ANY answer is not a public unicast address
  (`address_refusal`: loopback, private, link-local, CGNAT, multicast, reserved,
  documentation, IPv6 ULA/link-local/site-local, and the IPv4-in-IPv6 forms of those);
- connects to exactly the addresses it checked (no second resolution), with TLS SNI
  and certificate verification against the URL's host, and speaks HTTP/1.1 itself
  with h11 (`Connection: close`, so no pooled connection can outlive a check);
- re-checks every redirect from scratch (scheme, resolution, address), at most
  `max_redirects` of them;
- bounds the whole fetch (redirects included) by `timeout_s` and the body by
  `max_bytes`, and accepts only the configured content types.

Every refusal is an `InvalidRequest` (400, code `invalid_image_url`) naming the
request field and saying why. Logs carry the URL's scheme and host only: paths and
query strings of signed URLs hold credentials.

I/O module (trio, sockets); the pure providers only see the resulting `Media`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

import h11
import trio

from gateway import __version__
from gateway.config import FetchPolicy
from gateway.errors import InvalidRequest
from gateway.providers.base import Media
from gateway.providers.common import sniff_media_type
from gateway.upstream.transport import out_of_resources

__all__ = [
    "DEFAULT_POLICY",
    "ERROR_CODE",
    "USER_AGENT",
    "Connector",
    "FetchPolicy",  # defined in gateway.config (the `[media]` table); re-exported here
    "MediaFetcher",
    "Resolver",
    "SystemResolver",
    "address_refusal",
    "connect_form",
    "connect_ip",
    "header_mime",
    "mime_allowed",
    "sniff_mime",
]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ERROR_CODE = "invalid_image_url"
USER_AGENT = f"llm-gateway/{__version__} (media fetch)"
OCTET_STREAM = "application/octet-stream"
DEFAULT_POLICY = FetchPolicy()

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_URL_CHARS = 8192
_MAX_HEAD_BYTES = 64 * 1024  # status line + headers of one response
_RECV_BYTES = 64 * 1024
# Printable ASCII without space or backslash: what reaches the socket is what was
# checked, and no parser can read the URL differently (browsers treat "\" as "/").
_URL_CHARS = re.compile(r"[\x21-\x5b\x5d-\x7e]+")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class Resolver(Protocol):
    """Host name -> IP addresses; injectable so tests can fake DNS."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """Every address `host` resolves to, as IP strings, in preference order."""
        ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo in a worker thread, via trio).

    getaddrinfo also decodes the legacy IPv4 spellings (`2130706433`, `0177.0.0.1`,
    `0x7f.1`) exactly as a socket library would, so those are checked as what they
    really are.
    """

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""Open a TCP stream to an IP literal and port (injectable: tests record the IP)."""


async def connect_ip(ip: str, port: int) -> trio.abc.Stream:
    """Connect to exactly `ip` (a literal, never resolved again) on `port`."""
    family = trio.socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


# --- Which addresses may be fetched ------------------------------------------------

_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast address
        # Listed explicitly rather than trusted to `ipaddress.is_global`, whose table
        # differs between Python versions (3.11 calls 192.0.0.192 global).
        ("192.0.0.0/24", "IETF protocol assignments (incl. cloud metadata 192.0.0.192)"),
        ("192.0.2.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
    )
)
_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "unique local (private)"),
        ("ff00::/8", "multicast"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2001:2::/48", "benchmarking"),
        ("100::/64", "discard-only"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_refusal(addr: IPAddress) -> str | None:
    """Why the gateway must not connect to `addr`, or None when it is public unicast.

    IPv6 forms that embed an IPv4 address (v4-mapped `::ffff:a.b.c.d`, 6to4
    `2002:AABB:CCDD::`, NAT64 `64:ff9b::a.b.c.d`) are judged by the embedded address,
    since that is where the packets end up. Ranges not listed by name (documentation,
    benchmarking, IETF protocol blocks...) are refused as not globally routable.
    """
    if isinstance(addr, ipaddress.IPv4Address):
        return _ipv4_refusal(addr)
    embedded, form = _embedded_ipv4(addr)
    if embedded is not None:
        why = _ipv4_refusal(embedded)
        return f"{why}, as {form}" if why else None
    for net, why in _V6_BLOCKED:
        if addr in net:
            return why
    if addr.is_reserved or not addr.is_global:
        return "not globally routable"
    return None


def _ipv4_refusal(addr: ipaddress.IPv4Address) -> str | None:
    for net, why in _V4_BLOCKED:
        if addr in net:
            return why
    if not addr.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    """The IPv4 address an IPv6 address carries, and the name of that form."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped, "IPv4-mapped IPv6"
    if addr.sixtofour is not None:
        return addr.sixtofour, "6to4 IPv6"
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "NAT64 IPv6"
    return None, ""


def connect_form(addr: IPAddress) -> str:
    """The literal to connect to: a v4-mapped address is dialled as its IPv4 address."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# --- URLs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """One checked URL, split into what the connection and the request need."""

    url: str
    scheme: str
    host: str  # lower-case, IPv6 without brackets; used for SNI and certificate checks
    port: int
    request_target: str  # path + "?query", never logged
    literal: IPAddress | None  # the host is an IP literal: no resolution

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def log_label(self) -> str:
        """Scheme and host only: paths and queries of signed URLs carry credentials."""
        return f"{self.scheme}://{self.host_header}"


def _refusal(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Media URL refused: {reason}.", param=param, code=ERROR_CODE)


def _parse_target(url: str, param: str) -> _Target:
    """Check a URL's text and split it; refuses what must never be fetched."""
    if len(url) > _MAX_URL_CHARS:
        raise _refusal(param, f"the URL is longer than {_MAX_URL_CHARS} characters")
    if not _URL_CHARS.fullmatch(url):
        raise _refusal(
            param, "the URL must be printable ASCII without spaces or backslashes (percent-encode)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refusal(param, "the URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refusal(param, f"scheme {scheme[:32]!r} is not allowed (only http and https)")
    if "@" in parts.netloc:
        raise _refusal(param, "the URL must not contain credentials (user@host)")
    host, literal = _parse_host(parts, param)
    if port == 0:
        raise _refusal(param, "port 0 is not allowed")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return _Target(url, scheme, host, port or _DEFAULT_PORTS[scheme], target, literal)


def _parse_host(parts: SplitResult, param: str) -> tuple[str, IPAddress | None]:
    """The URL's host, lower-cased, and its address when it is an IP literal."""
    host = parts.hostname or ""
    if not host:
        raise _refusal(param, "the URL has no host")
    if "%" in host:  # IPv6 zone ids ("%25eth0") name local interfaces; escapes hide names
        raise _refusal(param, "the URL's host must not contain '%'")
    if parts.netloc.startswith("["):
        try:
            return host, ipaddress.IPv6Address(host)
        except ValueError:
            raise _refusal(param, "the URL's IPv6 address is not valid") from None
    try:
        return host, ipaddress.IPv4Address(host)
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise _refusal(param, "the URL's host name is not valid")
    return host, None


# --- Content types ------------------------------------------------------------------


def sniff_mime(data: bytes) -> str | None:
    """The type of a body served as application/octet-stream, from its magic bytes.

    Object stores often serve uploads untyped; only formats with an unambiguous
    signature are recognised, anything else stays refused.
    """
    return sniff_media_type(data)


def header_mime(value: bytes | None) -> str:
    """A Content-Type header's media type, parameters stripped, lower-cased."""
    if value is None:
        return OCTET_STREAM
    mime = value.decode("latin-1").split(";", 1)[0].strip().lower()
    return mime or OCTET_STREAM


def mime_allowed(mime: str, prefixes: Sequence[str]) -> bool:
    """Whether `mime` is one of `prefixes`, or under one that ends with "/"."""
    return any(mime == p or (p.endswith("/") and mime.startswith(p)) for p in prefixes)


# --- The fetcher --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


class MediaFetcher:
    """Fetches http(s) media for the providers that need it inline; see the module doc.

    Holds no connections (each fetch uses its own, closed after the response), only
    the TLS context, which is costly to build. One instance serves the whole app.
    """

    def __init__(
        self,
        policy: FetchPolicy = DEFAULT_POLICY,
        *,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolver: Resolver = resolver or SystemResolver()
        self._connect: Connector = connector or connect_ip
        self._ssl = ssl_context or ssl.create_default_context()
        self._closed = False

    @property
    def policy(self) -> FetchPolicy:
        return self._policy

    async def fetch(self, url: str, *, param: str) -> Media:
        """The bytes and type behind `url`, or `InvalidRequest` naming `param`."""
        if self._closed:
            raise RuntimeError("MediaFetcher is closed")
        label = _safe_label(url)
        try:
            with trio.move_on_after(self._policy.timeout_s):
                media = await self._follow(url, param)
                log.debug("fetched %s: %s, %d bytes", label, media.mime_type, len(media.data))
                return media
            raise _refusal(param, f"fetching the URL took longer than {self._policy.timeout_s:g} s")
        except InvalidRequest as exc:
            log.info("media fetch refused for %s (%s): %s", label, param, exc.message)
            raise

    async def fetch_all(self, urls: Sequence[tuple[str, str]]) -> dict[str, Media]:
        """Fetch (url, param) pairs concurrently, each URL once; the first failure raises.

        At most `max_concurrency` fetches run at once; when one fails the others are
        cancelled. The media together may not exceed `max_total_bytes`, nor take
        longer than twice the per-URL `timeout_s`.
        """
        unique: dict[str, str] = {}  # url -> the param of its first occurrence
        for url, param in urls:
            unique.setdefault(url, param)
        results: dict[str, Media] = {}
        failures: list[InvalidRequest] = []
        limiter = trio.CapacityLimiter(max(1, self._policy.max_concurrency))
        total = 0

        async def one(url: str, param: str, nursery: trio.Nursery) -> None:
            nonlocal total
            try:
                async with limiter:
                    media = await self.fetch(url, param=param)
                total += len(media.data)
                if total > self._policy.max_total_bytes:
                    limit = self._policy.max_total_bytes
                    raise _refusal(param, f"the request's media exceed {limit} bytes in total")
                results[url] = media
            except InvalidRequest as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()

        # All of one request's media share one deadline too: many URLs, each just
        # under the per-URL limit, must not hold the request for minutes.
        with trio.move_on_after(self._policy.timeout_s * 2) as overall:
            async with trio.open_nursery() as nursery:
                for url, param in unique.items():
                    nursery.start_soon(one, url, param, nursery)
        if failures:
            raise failures[0]
        if overall.cancelled_caught:
            first_param = next(iter(unique.values()))
            limit = self._policy.timeout_s * 2
            raise _refusal(
                first_param, f"fetching the request's media took longer than {limit:g} s"
            )
        return results

    async def aclose(self) -> None:
        """Refuse further fetches. In-flight fetches belong to their requests' nurseries."""
        self._closed = True
        await trio.lowlevel.checkpoint()

    async def _follow(self, url: str, param: str) -> Media:
        """Fetch `url`, following at most `max_redirects` redirects, each checked anew."""
        current = url
        for hop in range(self._policy.max_redirects + 1):
            try:
                outcome = await self._fetch_once(_parse_target(current, param), param)
            except InvalidRequest as exc:
                if hop == 0:
                    raise
                raise _refusal(param, f"after redirect {hop}, {_reason(exc)}") from None
            if isinstance(outcome, Media):
                return outcome
            current = urljoin(current, outcome.location)
        raise _refusal(param, f"the URL redirected more than {self._policy.max_redirects} times")

    async def _fetch_once(self, target: _Target, param: str) -> Media | _Redirect:
        """One GET on a fresh connection to a checked address."""
        ips = await self._addresses(target, param)
        stream = await self._open(target, ips, param)
        try:
            return await self._exchange(stream, target, param)
        except h11.RemoteProtocolError:
            raise _refusal(param, "the URL's server sent an invalid HTTP response") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _refusal(param, "the connection to the URL's server failed") from None
        finally:
            await trio.aclose_forcefully(stream)

    async def _addresses(self, target: _Target, param: str) -> list[str]:
        """Resolve the host once and check every answer; the literals to connect to."""
        if target.literal is not None:
            found: list[IPAddress] = [target.literal]
        else:
            try:
                answers = await self._resolver.resolve(target.host, target.port)
                found = [ipaddress.ip_address(a) for a in answers]
            except (OSError, UnicodeError, ValueError) as e:
                # Out of descriptors is our failure, not a bad URL of the client's.
                raise out_of_resources(e) or _refusal(
                    param, "the URL's host could not be resolved"
                ) from None
            if not found:
                raise _refusal(param, "the URL's host could not be resolved")
        if not self._policy.allow_private:
            for addr in found:
                why = address_refusal(addr)
                if why is None:
                    continue
                if target.literal is not None:
                    raise _refusal(param, f"the URL's address is not allowed ({why})")
                raise _refusal(param, f"the URL's host resolves to an address not allowed ({why})")
        return list(dict.fromkeys(connect_form(a) for a in found))

    async def _open(self, target: _Target, ips: Sequence[str], param: str) -> trio.abc.Stream:
        """Connect to the first reachable checked address; TLS verified against the host."""
        stream: trio.abc.Stream | None = None
        for ip in ips:
            try:
                stream = await self._connect(ip, target.port)
                break
            except OSError as e:
                if (own := out_of_resources(e)) is not None:
                    raise own from None
                continue
        if stream is None:
            raise _refusal(param, "could not connect to the URL's host")
        if target.scheme == "http":
            return stream
        tls = trio.SSLStream(stream, self._ssl, server_hostname=target.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise _refusal(
                    param, "the URL's TLS certificate is not valid for its host"
                ) from None
            raise _refusal(param, "the TLS handshake with the URL's host failed") from None
        except BaseException:  # cancelled by the deadline: do not leak the socket
            await trio.aclose_forcefully(stream)
            raise
        return tls

    async def _exchange(
        self, stream: trio.abc.Stream, target: _Target, param: str
    ) -> Media | _Redirect:
        """Send the GET and read the answer: a redirect, or the checked media."""
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
        request = h11.Request(
            method="GET",
            target=target.request_target,
            headers=[
                ("Host", target.host_header),
                ("User-Agent", USER_AGENT),
                ("Accept", "*/*"),
                ("Accept-Encoding", "identity"),
                ("Connection", "close"),
            ],
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        response = await _read_head(conn, stream, param)
        headers = {name: value for name, value in response.headers}  # names are lower-case
        if response.status_code in _REDIRECT_STATUSES:
            location = headers.get(b"location")
            if not location:
                raise _refusal(
                    param, f"the URL answered HTTP {response.status_code} without a Location"
                )
            return _Redirect(location.decode("latin-1"))
        if response.status_code != 200:
            raise _refusal(param, f"the URL answered HTTP {response.status_code}")
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":
            raise _refusal(param, "the URL's response is compressed (Content-Encoding)")
        mime = header_mime(headers.get(b"content-type"))
        if mime != OCTET_STREAM and not mime_allowed(mime, self._policy.allowed_mime_prefixes):
            raise _refusal(param, f"content type {mime[:100]!r} is not supported")
        self._check_length(headers.get(b"content-length"), param)
        data = await self._read_body(conn, stream, param)
        if mime == OCTET_STREAM:
            sniffed = sniff_mime(data)
            if sniffed is None or not mime_allowed(sniffed, self._policy.allowed_mime_prefixes):
                raise _refusal(
                    param, f"content type {OCTET_STREAM!r} is not a recognised media type"
                )
            mime = sniffed
        return Media(mime_type=mime, data=data)

    def _check_length(self, declared: bytes | None, param: str) -> None:
        """Refuse up front when Content-Length already says the body is too large."""
        if declared is not None and int(declared) > self._policy.max_bytes:
            raise _refusal(
                param,
                f"the media is too large ({int(declared)} bytes, limit {self._policy.max_bytes})",
            )

    async def _read_body(self, conn: h11.Connection, stream: trio.abc.Stream, param: str) -> bytes:
        """The response body, refused as soon as it grows past `max_bytes`."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._policy.max_bytes:
                    raise _refusal(
                        param, f"the media is too large (over {self._policy.max_bytes} bytes)"
                    )
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b"".join(parts)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event:
    """The next h11 event, reading from the stream as needed (b"" marks EOF)."""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:  # cannot happen for one request on a client connection
            raise h11.RemoteProtocolError("unexpected pause")
        conn.receive_data(bytes(await stream.receive_some(_RECV_BYTES)))


async def _read_head(conn: h11.Connection, stream: trio.abc.Stream, param: str) -> h11.Response:
    """The final response head, skipping 1xx informational responses."""
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise _refusal(param, "the URL's server closed the connection without answering")


def _reason(exc: InvalidRequest) -> str:
    """A refusal's reason without the "Media URL refused: " prefix and final period."""
    return exc.message.removeprefix("Media URL refused: ").removesuffix(".")


def _safe_label(url: str) -> str:
    """Scheme and host of `url` for logs; never its path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme.lower()[:16]}://{host[:255]}"
