"""Typed, frozen configuration: loaded and validated once at start.

The TOML shape is a contract (see docs/configuration.md). Every table is read by a
small reader that knows its allowed keys and their types, so an unknown or mistyped
key is an error naming its full path (`providers.local.developer_rol`), never
silently ignored. Secrets are resolved from the environment here, once.

Units live in the names (`connect_timeout_s`). No global mutable settings: the
loaded `Config` is passed to whoever needs it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from gateway.providers.registry import KINDS

T = TypeVar("T")

MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "mock": "mock://local/v1",
}


STRUCTURED_OUTPUT_MODES = ("tool", "native")
TRANSPORTS = ("h11", "httpx")
# Capability flags that reach the providers as `Deployment.options` (the rest are
# first-class fields of `Deployment`).
OPTION_NAMES = (
    "ttft_ms",
    "tokens_per_s",
    "default_max_tokens",
    "structured_output",
    "reasoning_output",
    "fetch_media",
    "api_version",
    "max_output_tokens",
)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key path."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits for fetching remote media (`[media]`); see gateway/fetch.py."""

    max_bytes: int = 20 * 1024 * 1024  # per URL
    timeout_s: float = 10.0  # whole fetch of one URL, redirects included
    max_redirects: int = 5
    # A type is allowed when it equals an entry, or starts with an entry ending in "/".
    allowed_mime_prefixes: tuple[str, ...] = ("image/", "audio/", "application/pdf", "text/plain")
    allow_private: bool = False  # tests only: permit loopback/private targets
    max_concurrency: int = 4  # URLs fetched at once for one request
    max_total_bytes: int = 50 * 1024 * 1024  # all media of one request together


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where keys, limits and the usage ledger live (`[state]`)."""

    sqlite_path: str = "gateway.sqlite3"  # managed keys, credit, the usage ledger
    journal_path: str | None = None  # write-ahead usage journal; default: sqlite_path + ".journal"
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_timeout_s: float = 1.0  # per Redis call; past it, limits fail open, budgets closed
    admin_key: str | None = field(default=None, repr=False)  # for /admin/; unset: admin API off
    default_output_tokens: int = 4096  # reserved for a request that sets no max tokens
    fsync: bool = False  # fsync the journal per row: survives power loss, costs latency

    @property
    def journal(self) -> str:
        return self.journal_path or self.sqlite_path + ".journal"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0  # the whole request body must arrive within this
    keep_alive_timeout_s: float = 10.0  # idle connections; also bounds header arrival
    graceful_timeout_s: float = 30.0
    http_server: str = "builtin"  # or "hypercorn" (measured slower; see docs/performance.md)
    send_timeout_s: float = 60.0  # a response write stalled this long: the client is gone


HTTP_SERVERS = ("builtin", "hypercorn")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Flags that may sit on a provider or on a model (the model's win). None: unset."""

    developer_role: bool | None = None
    max_tokens_field: str | None = None
    stream_usage: bool | None = None
    ttft_ms: float | None = None  # mock only
    tokens_per_s: float | None = None  # mock only
    default_max_tokens: int | None = None  # anthropic: max_tokens when the client sent none
    structured_output: str | None = None  # anthropic: "tool" (emulated) | "native"
    reasoning_output: bool | None = None  # surface thinking as delta.reasoning_content
    fetch_media: bool | None = None  # fetch http(s) media and send it inline
    api_version: str | None = None  # anthropic: the anthropic-version header
    max_output_tokens: int | None = None  # the model's output cap: max tokens sent never exceed it
    price_input_per_mtok: float | None = None  # USD per million prompt tokens
    price_cached_input_per_mtok: float | None = None  # USD per million cached prompt tokens
    price_output_per_mtok: float | None = None  # USD per million completion tokens

    def over(self, base: Capabilities) -> Capabilities:
        """These flags, with unset ones taken from `base`."""
        return Capabilities(
            **{
                f.name: _first(getattr(self, f.name), getattr(base, f.name))
                for f in dataclasses.fields(self)
            }
        )

    def options(self) -> dict[str, Any]:
        """The kind-specific settings that are set, for `Deployment.options`."""
        return {
            name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name) is not None
        }


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    caps: Capabilities = Capabilities()
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    total_timeout_s: float = 900.0
    max_connections: int = 512
    transport: str = "h11"  # "h11" (lean, default) | "httpx" (honours proxy env vars)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    provider: str
    upstream_model: str
    caps: Capabilities = Capabilities()


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    key: str = field(repr=False)
    models: tuple[str, ...] | None = None  # None: every model


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    keys: tuple[KeyConfig, ...]
    source: str = "<embedded defaults>"
    media: FetchPolicy = FetchPolicy()
    state: StateConfig = StateConfig()


def _first(a: T | None, b: T | None) -> T | None:
    return a if a is not None else b


class _Table:
    """Reads one TOML table, checking types and rejecting keys nobody asked for."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, types: tuple[type, ...], what: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._at(key)}: missing required key")
            return None
        value = self.data[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{self._at(key)}: expected {what}, got a boolean")
        if not isinstance(value, types):
            raise ConfigError(f"{self._at(key)}: expected {what}, got {type(value).__name__}")
        return value

    def text(self, key: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, (str,), "a string", required)
        if value is not None and choices and value not in choices:
            raise ConfigError(
                f"{self._at(key)}: must be one of {', '.join(choices)}; got {value!r}"
            )
        if value is not None and not value:
            raise ConfigError(f"{self._at(key)}: must not be empty")
        return value

    def flag(self, key: str) -> Any:
        return self._get(key, (bool,), "a boolean", False)

    def integer(self, key: str, *, minimum: int, maximum: int) -> Any:
        value = self._get(key, (int,), "an integer", False)
        if value is not None and not minimum <= value <= maximum:
            raise ConfigError(f"{self._at(key)}: must be between {minimum} and {maximum}")
        return value

    def number(self, key: str, *, minimum: float = 0.0) -> Any:
        value = self._get(key, (int, float), "a number", False)
        if value is not None and value < minimum:
            raise ConfigError(f"{self._at(key)}: must be >= {minimum}")
        return None if value is None else float(value)

    def table(self, key: str) -> _Table | None:
        self.seen.add(key)
        if key not in self.data:
            return None
        return _Table(self.data[key], self._at(key))

    def str_list(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key, (list,), "a list of strings", False)
        if value is None:
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self._at(key)}[{i}]: expected a non-empty string")
        return tuple(value)

    def done(self) -> None:
        """Reject every key that no reader asked for."""
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(f"{self._at(key)}: unknown key")


def _secret(t: _Table, value_key: str, env_key: str, env: Mapping[str, str]) -> str | None:
    """A secret given inline or by the name of an environment variable."""
    inline = t.text(value_key)
    env_name = t.text(env_key)
    if inline is not None and env_name is not None:
        raise ConfigError(f"{t.path}: set {value_key} or {env_key}, not both")
    if env_name is not None:
        value = env.get(env_name)
        if not value:
            raise ConfigError(f"{t._at(env_key)}: environment variable {env_name} is not set")
        return value
    return inline  # type: ignore[no-any-return]


def _caps(t: _Table) -> Capabilities:
    return Capabilities(
        developer_role=t.flag("developer_role"),
        max_tokens_field=t.text("max_tokens_field", choices=MAX_TOKENS_FIELDS),
        stream_usage=t.flag("stream_usage"),
        ttft_ms=t.number("ttft_ms"),
        tokens_per_s=t.number("tokens_per_s"),
        default_max_tokens=t.integer("default_max_tokens", minimum=1, maximum=10_000_000),
        structured_output=t.text("structured_output", choices=STRUCTURED_OUTPUT_MODES),
        reasoning_output=t.flag("reasoning_output"),
        fetch_media=t.flag("fetch_media"),
        api_version=t.text("api_version"),
        max_output_tokens=t.integer("max_output_tokens", minimum=1, maximum=10_000_000),
        price_input_per_mtok=t.number("price_input_per_mtok"),
        price_cached_input_per_mtok=t.number("price_cached_input_per_mtok"),
        price_output_per_mtok=t.number("price_output_per_mtok"),
    )


def _provider(name: str, t: _Table, env: Mapping[str, str]) -> ProviderConfig:
    kind = t.text("kind", required=True, choices=KINDS)
    base_url = t.text("base_url") or DEFAULT_BASE_URLS[kind]
    if kind != "mock" and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{t._at('base_url')}: must start with http:// or https://")
    headers: dict[str, str] = {}
    ht = t.table("headers")
    if ht is not None:
        for hname in ht.data:
            headers[hname.lower()] = ht.text(hname, required=True)
    defaults = ProviderConfig(name=name, kind=kind, base_url=base_url)
    p = ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=_secret(t, "api_key", "api_key_env", env),
        caps=_caps(t),
        headers=headers,
        connect_timeout_s=_or(t.number("connect_timeout_s"), defaults.connect_timeout_s),
        first_byte_timeout_s=_or(t.number("first_byte_timeout_s"), defaults.first_byte_timeout_s),
        idle_timeout_s=_or(t.number("idle_timeout_s"), defaults.idle_timeout_s),
        total_timeout_s=_or(t.number("total_timeout_s"), defaults.total_timeout_s),
        max_connections=_or(
            t.integer("max_connections", minimum=1, maximum=100_000), defaults.max_connections
        ),
        transport=_or(t.text("transport", choices=TRANSPORTS), defaults.transport),
    )
    t.done()
    return p


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    unix_path: str | None


def parse_redis_url(url: str) -> RedisAddress:
    """The parts of a redis://, rediss:// or unix:// URL; ValueError says what is wrong."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    db_text = query.get("db", [""])[0]
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a redis:// URL needs a host")
        path = parts.path.strip("/")
        db_text = path or db_text
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port of the Redis URL is not a number from 0 to 65535") from None
        host, unix_path = parts.hostname, None
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket's path")
        host, port, unix_path = "", 0, parts.path
    else:
        raise ValueError("must start with redis://, rediss:// or unix://")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"the database number {db_text!r} is not an integer") from None
    if db < 0:
        raise ValueError("the database number must not be negative")
    return RedisAddress(host, port, db, username, password, parts.scheme == "rediss", unix_path)


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str], source: str) -> Config:
    """Validate a parsed TOML document into a `Config`; raises ConfigError naming the key."""
    root = _Table(dict(data), "")
    st = root.table("server")
    server = ServerConfig()
    if st is not None:
        server = ServerConfig(
            host=_or(st.text("host"), server.host),
            port=_or(st.integer("port", minimum=0, maximum=65535), server.port),
            workers=_or(st.integer("workers", minimum=1, maximum=256), server.workers),
            max_body_bytes=_or(
                st.integer("max_body_bytes", minimum=1024, maximum=1 << 30), server.max_body_bytes
            ),
            body_timeout_s=_or(st.number("body_timeout_s"), server.body_timeout_s),
            keep_alive_timeout_s=_or(
                st.number("keep_alive_timeout_s"), server.keep_alive_timeout_s
            ),
            graceful_timeout_s=_or(st.number("graceful_timeout_s"), server.graceful_timeout_s),
            http_server=_or(st.text("http_server", choices=HTTP_SERVERS), server.http_server),
            send_timeout_s=_or(st.number("send_timeout_s", minimum=0.1), server.send_timeout_s),
        )
        st.done()

    providers: dict[str, ProviderConfig] = {}
    pt = root.table("providers")
    if pt is not None:
        for name in pt.data:
            if "/" in name:
                raise ConfigError(f"providers.{name}: a provider name must not contain '/'")
            sub = pt.table(name)
            assert sub is not None
            providers[name] = _provider(name, sub, env)

    models: dict[str, ModelConfig] = {}
    mt = root.table("models")
    if mt is not None:
        for model_id in mt.data:
            sub = mt.table(model_id)
            assert sub is not None
            provider = sub.text("provider", required=True)
            if provider not in providers:
                raise ConfigError(f"{sub._at('provider')}: no provider named {provider!r}")
            models[model_id] = ModelConfig(
                id=model_id,
                provider=provider,
                upstream_model=_or(sub.text("upstream_model"), model_id),
                caps=_caps(sub),
            )
            sub.done()

    keys: list[KeyConfig] = []
    raw_keys = root.data.get("keys")
    root.seen.add("keys")
    if raw_keys is not None:
        if not isinstance(raw_keys, list):
            raise ConfigError("keys: expected an array of tables ([[keys]])")
        seen_names: set[str] = set()
        seen_secrets: dict[str, int] = {}
        for i, item in enumerate(raw_keys):
            kt = _Table(item, f"keys[{i}]")
            name = kt.text("name", required=True)
            if name in seen_names:
                raise ConfigError(f"keys[{i}].name: duplicate key name {name!r}")
            seen_names.add(name)
            secret = _secret(kt, "key", "key_env", env)
            if secret is None:
                raise ConfigError(f"keys[{i}]: set key or key_env")
            if secret in seen_secrets:
                raise ConfigError(f"keys[{i}]: the same secret as keys[{seen_secrets[secret]}]")
            seen_secrets[secret] = i
            keys.append(KeyConfig(name=name, key=secret, models=kt.str_list("models")))
            kt.done()
    state = StateConfig()
    stt = root.table("state")
    if stt is not None:
        redis_url = stt.text("redis_url")
        if redis_url is not None:
            try:
                parse_redis_url(redis_url)
            except ValueError as e:
                raise ConfigError(f"state.redis_url: {e}") from None
        state = StateConfig(
            sqlite_path=_or(stt.text("sqlite_path"), state.sqlite_path),
            journal_path=stt.text("journal_path"),
            redis_url=redis_url,
            redis_timeout_s=_or(stt.number("redis_timeout_s", minimum=0.01), state.redis_timeout_s),
            admin_key=_secret(stt, "admin_key", "admin_key_env", env),
            default_output_tokens=_or(
                stt.integer("default_output_tokens", minimum=1, maximum=10_000_000),
                state.default_output_tokens,
            ),
            fsync=_or(stt.flag("fsync"), state.fsync),
        )
        stt.done()
    media = FetchPolicy()
    mt2 = root.table("media")
    if mt2 is not None:
        media = FetchPolicy(
            max_bytes=_or(mt2.integer("max_bytes", minimum=1, maximum=1 << 30), media.max_bytes),
            timeout_s=_or(mt2.number("timeout_s"), media.timeout_s),
            max_redirects=_or(
                mt2.integer("max_redirects", minimum=0, maximum=20), media.max_redirects
            ),
            allow_private=_or(mt2.flag("allow_private_addresses"), media.allow_private),
        )
        mt2.done()
    root.done()
    return Config(
        server=server,
        providers=providers,
        models=models,
        keys=tuple(keys),
        source=source,
        media=media,
        state=state,
    )


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(data, env=os.environ if env is None else env, source=str(p))


def embedded_config(dev_key: str) -> Config:
    """The defaults `gateway serve` runs without --config: the offline mock provider."""
    data: dict[str, Any] = {
        "providers": {"mock": {"kind": "mock", "ttft_ms": 150, "tokens_per_s": 80}},
        "models": {
            "mock-gpt": {"provider": "mock"},
            "mock-fast": {"provider": "mock", "ttft_ms": 0, "tokens_per_s": 0},
            "mock-slow": {"provider": "mock", "ttft_ms": 800, "tokens_per_s": 15},
        },
        "keys": [{"name": "dev", "key": dev_key}],
    }
    return parse_config(data, env={}, source="<embedded defaults>")
