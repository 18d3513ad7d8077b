"""gateway/redis_client.py against a real redis-server (no mocks).

URL parsing, the wire encoding, every RESP2 reply type through real commands, Lua
scripts (EVALSHA falling back to EVAL), a bounded pool under concurrency, commands
cancelled with their reply pending, failures (refused, killed, silent), AUTH/ACL and
SELECT, unix sockets and TLS.
"""

from __future__ import annotations

import enum
import gc
import os
import shutil
import socket
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config import ConfigError, parse_config
from gateway.store.redis_client import (
    RedisClient,
    RedisConnectionError,
    RedisError,
    ResponseError,
    encode_command,
)
from gateway.store.redis_url import RedisAddress, parse_redis_url
from tests.redis_server import RedisServer, require_redis_server, running_redis


def new_key() -> str:
    return f"t:{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def info(reply: bytes) -> dict[str, str]:
    """An INFO reply as a dict."""
    fields = (line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)
    return {k: v for k, v in fields}


@contextmanager
def no_leaked_sockets() -> Iterator[None]:
    """Fails if a socket is left for the garbage collector to close (ResourceWarning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]


# --- parse_redis_url --------------------------------------------------------------


def test_url_with_every_part_percent_decoded() -> None:
    a = parse_redis_url("redis://us%40er:p%3Ass%2Fw%20rd@cache.internal:6380/2")
    assert a == RedisAddress("cache.internal", 6380, 2, "us@er", "p:ss/w rd", False, None)


def test_url_defaults() -> None:
    assert parse_redis_url("redis://localhost") == RedisAddress(
        "localhost", 6379, 0, None, None, False, None
    )
    assert parse_redis_url("redis://localhost/").db == 0
    assert parse_redis_url("redis://localhost?db=4").db == 4
    assert parse_redis_url("redis://[::1]:7000").host == "::1"


def test_url_password_only_and_tls() -> None:
    a = parse_redis_url("redis://:s3cret@h")
    assert (a.username, a.password) == (None, "s3cret")
    t = parse_redis_url("rediss://h:6390/1")
    assert (t.tls, t.host, t.port, t.db) == (True, "h", 6390, 1)
    assert parse_redis_url("redis://h").tls is False


def test_unix_url() -> None:
    a = parse_redis_url("unix:///run/redis/redis.sock?db=3")
    assert (a.unix_path, a.db, a.tls) == ("/run/redis/redis.sock", 3, False)
    assert parse_redis_url("unix:///tmp/r.sock").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:6379", "must start with redis://, rediss:// or unix://"),
        ("h:6379", "must start with"),
        ("redis://", "needs a host"),
        ("redis://:pw@/0", "needs a host"),
        ("redis://h:abc", "port of the Redis URL is not a number"),
        ("redis://h:99999", "port of the Redis URL"),
        ("redis://h/abc", "database number 'abc' is not an integer"),
        ("redis://h/-1", "must not be negative"),
        ("unix://", "needs the socket's path"),
        ("unix:///tmp/r.sock?db=x", "database number 'x' is not an integer"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        parse_redis_url(url)
    assert message in str(e.value)


def test_config_names_the_bad_redis_url() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"state": {"redis_url": "redis://h:abc"}}, env={}, source="t")
    assert "state.redis_url: the port of the Redis URL is not a number" in str(e.value)
    c = parse_config({"state": {"redis_url": "rediss://h/2"}}, env={}, source="t")
    assert c.state.redis_url == "rediss://h/2"


# --- encode_command ---------------------------------------------------------------


class Level(enum.IntEnum):
    HIGH = 3


def test_encode_bytes_str_int_float() -> None:
    assert encode_command([b"SET", "k\u00e9", 42, -7, 1.5, b""]) == (
        b"*6\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n$2\r\n-7\r\n$3\r\n1.5\r\n$0\r\n\r\n"
    )
    assert encode_command([]) == b"*0\r\n"
    assert encode_command([2**63]) == b"*1\r\n$19\r\n9223372036854775808\r\n"
    assert encode_command([Level.HIGH]) == b"*1\r\n$1\r\n3\r\n"  # the number, not its repr


@pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}, bytearray(b"x"), object()])
def test_encode_refuses_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        encode_command(["SET", "k", value])


# --- replies ----------------------------------------------------------------------


async def test_every_reply_type(redis: RedisServer) -> None:
    key, lst = new_key(), new_key()
    async with RedisClient(redis.url) as c:
        assert await c.execute("SET", key, "v") == b"OK"  # simple string
        assert await c.execute("PING") == b"PONG"
        assert await c.execute("GET", key) == b"v"  # bulk
        assert await c.execute("GET", new_key()) is None  # nil bulk
        assert await c.execute("BLPOP", new_key(), 0.01) is None  # nil array
        assert await c.execute("DECR", new_key()) == -1  # integer
        assert await c.execute("INCRBYFLOAT", key + "f", 1.5) == b"1.5"
        assert await c.execute("RPUSH", lst, "a", b"", 7) == 3
        assert await c.execute("LRANGE", lst, 0, -1) == [b"a", b"", b"7"]  # array
        assert await c.execute("LRANGE", new_key(), 0, -1) == []  # empty array
        nested = await c.execute("EVAL", "return {1, {2, 'a', {}}, {}, 'x', {{'deep'}}, false}", 0)
        assert nested == [1, [2, b"a", []], [], b"x", [[b"deep"]], None]
        assert await c.execute("EVAL", "return redis.status_reply('FINE')", 0) == b"FINE"
        assert await c.execute("EVAL", "return true", 0) == 1


async def test_binary_safe_and_large_values(redis: RedisServer) -> None:
    key = new_key().encode() + b"\r\n\0"
    odd = bytes(range(256)) + b"\r\n\0\r\n$5\r\n*1\r\n"
    big = os.urandom(1 << 20) + b"\r\n"
    async with RedisClient(redis.url, max_connections=1) as c:
        assert await c.execute("SET", key, odd) == b"OK"
        assert await c.execute("GET", key) == odd
        assert await c.execute("SET", key, big) == b"OK"
        assert await c.execute("STRLEN", key) == len(big)
        assert await c.execute("GET", key) == big
        assert await c.execute("RPUSH", key + b"l", big, odd, big) == 3
        assert await c.execute("LRANGE", key + b"l", 0, -1) == [big, odd, big]
        assert await c.execute("ECHO", "after") == b"after"  # the buffer was left clean


async def test_error_reply_keeps_the_connection(redis: RedisServer) -> None:
    key = new_key()
    async with RedisClient(redis.url, max_connections=1) as c:
        conn_id = await c.execute("CLIENT", "ID")
        await c.execute("SET", key, "not a number")
        with pytest.raises(ResponseError, match="not an integer"):
            await c.execute("INCR", key)
        assert await c.execute("GET", key) == b"not a number"
        with pytest.raises(ResponseError, match="unknown command"):
            await c.execute("NO-SUCH-COMMAND", "x")
        with pytest.raises(ResponseError, match=r"^WRONGTYPE"):
            await c.execute("LPUSH", key, "x")
        assert await c.execute("ECHO", "next") == b"next"
        assert await c.execute("CLIENT", "ID") == conn_id  # the same connection all along


# --- scripts ----------------------------------------------------------------------


async def command_calls(c: RedisClient, name: str) -> int:
    stats = info(await c.execute("INFO", "commandstats")).get(f"cmdstat_{name}", "calls=0")
    return int(stats.split(",")[0].split("=")[1])


async def test_script_loads_itself_and_survives_flush(own_redis: RedisServer) -> None:
    async with RedisClient(own_redis.url) as c:
        script = c.register_script("return {KEYS[1], ARGV[1], ARGV[2], #KEYS}")
        assert await c.execute("SCRIPT", "EXISTS", script.sha) == [0]
        assert await script(keys=["k"], args=["a", 5]) == [b"k", b"a", b"5", 1]
        assert await c.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await command_calls(c, "eval") == 1
        assert await script(keys=["k2"], args=["b", 6]) == [b"k2", b"b", b"6", 1]
        assert await command_calls(c, "eval") == 1  # known now: EVALSHA only
        assert await c.execute("SCRIPT", "FLUSH") == b"OK"
        assert await script(keys=["k3"], args=["c", 7]) == [b"k3", b"c", b"7", 1]
        assert await command_calls(c, "eval") == 2
        assert await c.register_script("return 42")() == 42


async def test_script_errors_are_response_errors(redis: RedisServer) -> None:
    key = new_key()
    async with RedisClient(redis.url) as c:
        await c.execute("SET", key, "text")
        incr = c.register_script("return redis.call('INCR', KEYS[1])")
        for _ in range(2):  # through EVAL, then through EVALSHA
            with pytest.raises(ResponseError, match="not an integer"):
                await incr(keys=[key])
        with pytest.raises(ResponseError, match=r"^MYERR custom"):
            await c.register_script("return redis.error_reply('MYERR custom')")()
        with pytest.raises(ResponseError, match="boom"):
            await c.register_script("error('boom')")()
        with pytest.raises(ResponseError, match="compiling"):
            await c.register_script("this is not lua")()
        assert await c.execute("GET", key) == b"text"


# --- concurrency ------------------------------------------------------------------


async def test_concurrent_commands_are_exact_on_a_bounded_pool(own_redis: RedisServer) -> None:
    key = new_key()
    async with (
        RedisClient(own_redis.url, max_connections=8) as c,
        RedisClient(own_redis.url, max_connections=1) as monitor,
    ):
        opened_before = int(
            info(await monitor.execute("INFO", "stats"))["total_connections_received"]
        )
        peak = 0
        done = trio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                clients = info(await monitor.execute("INFO", "clients"))
                peak = max(peak, int(clients["connected_clients"]) - 1)  # minus the monitor
                await trio.sleep(0.002)

        async def worker() -> None:
            for _ in range(20):
                await c.execute("INCR", key)

        async with trio.open_nursery() as outer:
            outer.start_soon(watch)
            async with trio.open_nursery() as workers:
                for _ in range(200):
                    workers.start_soon(worker)
            done.set()
        assert await c.execute("GET", key) == b"4000"
        stats = info(await monitor.execute("INFO", "stats"))
        assert 1 <= int(stats["total_connections_received"]) - opened_before <= 8
        assert 1 <= peak <= 8
        assert int(info(await monitor.execute("INFO", "clients"))["connected_clients"]) <= 9


async def wait_for_clients(c: RedisClient, field: str, value: int) -> None:
    """Polls INFO clients until `field` (connected_clients, ...) is `value`, for 2 s."""
    with trio.fail_after(2):
        while True:
            if int(info(await c.execute("INFO", "clients"))[field]) == value:
                return
            await trio.sleep(0.01)


async def test_leaving_closes_the_pool(own_redis: RedisServer) -> None:
    async with RedisClient(own_redis.url, max_connections=1) as monitor:
        async with RedisClient(own_redis.url) as c, trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(c.execute, "PING")
        await wait_for_clients(monitor, "connected_clients", 1)


# --- cancellation -----------------------------------------------------------------


async def test_cancelled_command_does_not_poison_the_pool(redis: RedisServer) -> None:
    key = new_key()
    async with RedisClient(redis.url, max_connections=1) as c:
        with trio.move_on_after(0.1) as scope:
            await c.execute("BLPOP", key, 5)
        assert scope.cancelled_caught
        with trio.fail_after(2):  # a reused connection would wait behind the BLPOP
            for i in range(5):
                assert await c.execute("ECHO", f"m{i}") == f"m{i}".encode()
            assert await c.execute("RPUSH", key, "v") == 1
            assert await c.execute("GET", new_key()) is None
            assert await c.execute("INCR", key + "n") == 1
            # the server dropped the blocked client: nobody is waiting on the key
            await wait_for_clients(c, "blocked_clients", 0)


async def test_many_cancelled_commands_then_concurrent_ones(redis: RedisServer) -> None:
    key = new_key()
    async with RedisClient(redis.url, max_connections=4) as c:
        with trio.move_on_after(0.1):
            async with trio.open_nursery() as n:
                for _ in range(4):
                    n.start_soon(c.execute, "BLPOP", key, 5)
        await c.execute("RPUSH", key, "a", "b", "c", "d")  # replies the BLPOPs never read
        mismatches: list[tuple[str, Any]] = []

        async def echo(i: int) -> None:
            for j in range(5):
                expected = f"{i}:{j}"
                got = await c.execute("ECHO", expected)
                if got != expected.encode():
                    mismatches.append((expected, got))

        with trio.fail_after(2):
            async with trio.open_nursery() as n:
                for i in range(20):
                    n.start_soon(echo, i)
        assert mismatches == []


async def test_fail_after_raises_too_slow(redis: RedisServer) -> None:
    async with RedisClient(redis.url, max_connections=1) as c:
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.05):
            await c.execute("BLPOP", new_key(), 2)
        assert await c.execute("PING") == b"PONG"


# --- failures ---------------------------------------------------------------------


async def test_refused_connection_fails_fast() -> None:
    port = free_port()
    with no_leaked_sockets():
        async with RedisClient(f"redis://127.0.0.1:{port}") as c:
            start = trio.current_time()
            with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}"):
                await c.execute("PING")
            assert trio.current_time() - start < 0.5
        async with RedisClient("unix:///nonexistent/redis.sock") as c:
            with pytest.raises(RedisConnectionError, match="nonexistent"):
                await c.execute("PING")


async def test_killed_redis_then_restarted(own_redis: RedisServer) -> None:
    key = new_key()
    async with RedisClient(own_redis.url, max_connections=4) as c:
        async with trio.open_nursery() as n:  # four pooled connections
            for _ in range(4):
                n.start_soon(c.execute, "PING")
        failures: list[BaseException] = []

        async def blocked() -> None:
            try:
                await c.execute("BLPOP", key, 5)
            except RedisConnectionError as e:
                failures.append(e)

        with trio.fail_after(3):
            async with trio.open_nursery() as n:
                n.start_soon(blocked)
                await wait_for_clients(c, "blocked_clients", 1)
                own_redis.kill()
            assert len(failures) == 1  # the command in flight
            with pytest.raises(RedisConnectionError):
                await c.execute("PING")
            own_redis.start()
            assert await c.execute("PING") == b"PONG"  # the stale connections are gone
            async with trio.open_nursery() as n:
                for _ in range(8):
                    n.start_soon(c.execute, "INCR", key)
            assert await c.execute("GET", key) == b"8"


async def test_restarted_redis_between_calls(own_redis: RedisServer) -> None:
    """Killed and back before the next call: at most one call sees the break."""
    async with RedisClient(own_redis.url, max_connections=4) as c:
        async with trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(c.execute, "PING")
        own_redis.kill()
        own_redis.start()
        results: list[object] = []
        for _ in range(3):
            try:
                results.append(await c.execute("PING"))
            except RedisConnectionError as e:
                results.append(type(e))
        assert results[1:] == [b"PONG", b"PONG"]


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose listener never accepts, with its backlog full: connecting hangs."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # takes the one backlog slot
        yield port


@contextmanager
def mute_listener() -> Iterator[int]:
    """A port where the kernel completes the handshake but nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_connect_timeout() -> None:
    with no_leaked_sockets(), silent_listener() as port:
        async with RedisClient(f"redis://127.0.0.1:{port}", connect_timeout_s=0.3) as c:
            start = trio.current_time()
            with pytest.raises(RedisConnectionError, match="in time"):
                await c.execute("PING")
            assert 0.25 < trio.current_time() - start < 1.0


async def test_connect_timeout_covers_auth_and_select() -> None:
    for url in ("redis://:pw@127.0.0.1:{}", "redis://127.0.0.1:{}/3"):
        with no_leaked_sockets(), mute_listener() as port:
            async with RedisClient(url.format(port), connect_timeout_s=0.3) as c:
                start = trio.current_time()
                with pytest.raises(RedisConnectionError, match="in time"):
                    await c.execute("PING")
                assert 0.25 < trio.current_time() - start < 1.0


async def test_cancelled_handshake_closes_its_socket() -> None:
    with no_leaked_sockets(), mute_listener() as port:
        async with RedisClient(f"redis://:pw@127.0.0.1:{port}", connect_timeout_s=5) as c:
            with trio.move_on_after(0.1) as scope:
                await c.execute("PING")
            assert scope.cancelled_caught


async def test_a_server_that_is_not_redis() -> None:
    async def http_server(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with trio.open_nursery() as n:
        listeners = await n.start(partial(trio.serve_tcp, http_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with no_leaked_sockets():
            async with RedisClient(f"redis://127.0.0.1:{port}") as c:
                with pytest.raises(RedisConnectionError, match=r"unexpected bytes.*HTTP/1.1"):
                    await c.execute("PING")
        n.cancel_scope.cancel()


async def test_mute_server_without_handshake_needs_a_caller_deadline() -> None:
    """With no AUTH/SELECT a connection is just TCP: the caller's deadline applies."""
    with no_leaked_sockets(), mute_listener() as port:
        async with RedisClient(f"redis://127.0.0.1:{port}", connect_timeout_s=0.3) as c:
            with pytest.raises(trio.TooSlowError), trio.fail_after(0.2):
                await c.execute("PING")


# --- AUTH, ACL users, SELECT --------------------------------------------------------

PASSWORD = "p@ss:w/rd %"
PASSWORD_URL = "p%40ss%3Aw%2Frd%20%25"


@pytest.fixture
def auth_redis() -> Iterator[RedisServer]:
    with running_redis(["--requirepass", PASSWORD]) as server:
        yield server


async def test_password_and_select(auth_redis: RedisServer) -> None:
    base = f"redis://:{PASSWORD_URL}@127.0.0.1:{auth_redis.port}"
    key = new_key()
    async with RedisClient(f"{base}/3") as db3, RedisClient(f"{base}/0") as db0:
        assert await db3.execute("SET", key, "three") == b"OK"
        assert await db3.execute("GET", key) == b"three"
        assert await db0.execute("GET", key) is None
        assert await db0.execute("SELECT", 3) == b"OK"
        assert await db0.execute("GET", key) == b"three"
    async with RedisClient(f"{base}?db=3") as db3:
        assert await db3.execute("GET", key) == b"three"


async def test_wrong_or_missing_password(auth_redis: RedisServer) -> None:
    with no_leaked_sockets():
        async with RedisClient(f"redis://:wrong@127.0.0.1:{auth_redis.port}") as c:
            with pytest.raises(ResponseError, match=r"^WRONGPASS") as e:
                await c.execute("PING")
            assert isinstance(e.value, RedisError)
            del e
        async with RedisClient(auth_redis.url) as c:
            with pytest.raises(ResponseError, match=r"^NOAUTH"):
                await c.execute("PING")


async def test_acl_user(auth_redis: RedisServer) -> None:
    admin = f"redis://:{PASSWORD_URL}@127.0.0.1:{auth_redis.port}"
    async with RedisClient(admin) as c:
        ok = await c.execute("ACL", "SETUSER", "gw", "on", ">gw:pw", "~*", "+@all")
        assert ok == b"OK"
    async with RedisClient(f"redis://gw:gw%3Apw@127.0.0.1:{auth_redis.port}/1") as c:
        assert await c.execute("ACL", "WHOAMI") == b"gw"
        assert await c.execute("SET", "k", "v") == b"OK"
    with no_leaked_sockets():
        async with RedisClient(f"redis://gw:nope@127.0.0.1:{auth_redis.port}") as c:
            with pytest.raises(ResponseError, match=r"^WRONGPASS"):
                await c.execute("PING")


# --- unix socket ------------------------------------------------------------------


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    args = ["--unixsocket", str(path), "--unixsocketperm", "700"]
    key = new_key()
    with RedisServer(require_redis_server(), tmp_path, extra_args=args) as server:
        async with RedisClient(f"unix://{path}?db=2") as c:
            assert await c.execute("SET", key, "over unix") == b"OK"
            assert b"laddr=" + str(path).encode() in await c.execute("CLIENT", "INFO")
        async with RedisClient(f"redis://127.0.0.1:{server.port}/2") as c:
            assert await c.execute("GET", key) == b"over unix"


# --- TLS --------------------------------------------------------------------------


def tls_support() -> str | None:
    """Why TLS cannot be tested here, or None if it can."""
    binary = require_redis_server()
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0"], capture_output=True, timeout=10, check=False
    )
    if b"not listen anywhere" not in probe.stdout + probe.stderr:
        return "this redis-server is built without TLS (--tls-port is unknown)"
    return None


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.crt"
    openssl(
        "req", "-x509", *EC_KEY, "-days", "1", "-subj", f"/CN={name}", "-keyout", key, "-out", cert
    )
    return key, cert


def make_server_cert(d: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by the CA."""
    key, csr, cert, ext = d / "srv.key", d / "srv.csr", d / "srv.crt", d / "srv.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", *EC_KEY, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    ca = ("-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial")
    openssl("x509", "-req", "-in", csr, *ca, "-days", "1", "-extfile", ext, "-out", cert)
    return key, cert


async def test_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = tls_support()
    if reason is not None:
        pytest.skip(reason)
    ca_key, ca_cert = make_ca(tmp_path, "test-ca")
    _, other_ca = make_ca(tmp_path, "other-ca")
    srv_key, srv_cert = make_server_cert(tmp_path, ca_key, ca_cert)
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(srv_cert)]
    args += ["--tls-key-file", str(srv_key), "--tls-ca-cert-file", str(ca_cert)]
    args += ["--tls-auth-clients", "no"]
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with RedisServer(require_redis_server(), tmp_path, extra_args=args):
        url = f"rediss://127.0.0.1:{tls_port}/1"
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_cert))
        async with RedisClient(url) as c:
            big = os.urandom(300_000)
            assert await c.execute("SET", "k", big) == b"OK"
            assert await c.execute("GET", "k") == big
            assert await c.register_script("return ARGV[1]")(args=["tls"]) == b"tls"
        monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
        with no_leaked_sockets():
            async with RedisClient(url) as c:
                with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                    await c.execute("PING")
