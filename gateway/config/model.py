"""The configuration's shape: frozen dataclasses, units in the names, `Literal` enums.

Built once by `gateway.config.load` and passed to whoever needs it; nothing mutates
it. A reload (when there is one) builds a new `Config` and swaps it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.config.options import OpenAIOptions, ProviderKind, ProviderOptions

EMBEDDED = "<embedded defaults>"  # the source of the config `gateway serve` runs without a file
PID_FILE = "gateway.pid"

Transport = Literal["h11", "httpx"]
HttpServer = Literal["builtin", "hypercorn"]
Strategy = Literal["weighted", "least-busy", "latency", "priority"]
TRANSPORTS: tuple[Transport, ...] = ("h11", "httpx")
HTTP_SERVERS: tuple[HttpServer, ...] = ("builtin", "hypercorn")
STRATEGIES: tuple[Strategy, ...] = ("weighted", "least-busy", "latency", "priority")
# What `retry_on` may name besides statuses: a connection that failed (before the
# request was sent, or after it on a stream), and a stream's first-byte timeout.
RETRY_EVENTS = ("connect", "first_byte_timeout")
# Answers about the request itself: the same request gets the same answer anywhere.
NEVER_RETRIED = frozenset({400, 401, 403, 404, 413, 422})
LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A model without prices costs nothing (and spend limits
    then only bound what is priced)."""

    input_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None  # None: cached tokens cost the input price
    output_per_mtok: float = 0.0

    @property
    def free(self) -> bool:
        return (
            self.input_per_mtok == 0
            and self.output_per_mtok == 0
            and not self.cached_input_per_mtok
        )


FREE = Price()


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits for fetching remote media (`[media]`); see gateway/upstream/media_fetch.py."""

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
    # Keys, credit and the ledger shared by several machines (instead of sqlite_path).
    postgres_url: str | None = field(default=None, repr=False)  # may hold a password
    postgres_timeout_s: float = 5.0  # connecting, waiting for a pooled connection, a statement
    postgres_pool_size: int = 4  # connections per worker process
    admin_key: str | None = field(default=None, repr=False)  # for /admin/; unset: admin API off
    default_output_tokens: int = 4096  # reserved for a request that sets no max tokens
    fsync: bool = False  # fsync the journal per row: survives power loss, costs latency

    @property
    def journal(self) -> str:
        return self.journal_path or self.sqlite_path + ".journal"


@dataclass(frozen=True, slots=True)
class ResponsesConfig:
    """The Responses API's stored responses (`[responses]`; docs/responses.md)."""

    retention_days: float = 30.0  # a stored response is gone this long after it was made


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0  # the whole request body must arrive within this
    keep_alive_timeout_s: float = 10.0  # idle connections; also bounds header arrival
    graceful_timeout_s: float = 30.0
    http_server: HttpServer = "builtin"  # "hypercorn": measured slower (docs/performance.md)
    send_timeout_s: float = 60.0  # a response write stalled this long: the client is gone
    # Per worker process (docs/reliability.md R7). None: derived from RLIMIT_NOFILE at start
    # (half of what a reserve of 64 leaves: a client connection may need an upstream one).
    max_connections: int | None = None
    max_in_flight: int | None = None  # requests at once (health checks aside); None: no cap
    max_loop_lag_ms: float = 250.0  # event-loop lag past which new requests are shed; 0: off
    max_loop_busy_percent: float = 0.0  # busy share the loop is held under by shedding; 0: off
    drain_delay_s: float = 0.0  # SIGTERM: keep accepting this long with /readyz at 503 (R10)
    log_format: LogFormat | None = None  # None: JSON lines unless stderr is a terminal
    log_level: LogLevel = "info"
    pid_file: str | None = None  # for `gateway reload`; None: gateway.pid beside sqlite_path
    cors_origins: tuple[str, ...] = ()  # browser origins allowed (CORS); ("*",): any; (): off


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    """Access log, metrics and traces (`[observability]`); see gateway/observability/."""

    access_log: bool = True  # one line per request, after it ends
    metrics: bool = True  # GET /metrics in the Prometheus text format
    metrics_auth: bool = False  # /metrics asks for the admin key ([state] admin_key)
    metrics_per_key: bool = False  # series per key: one per key and model, mind cardinality
    traces: bool = False  # OTLP/HTTP export of spans (pip install 'gateway[otel]')
    otlp_endpoint: str | None = None  # None: the exporter's own default / OTEL_* env vars
    service_name: str = "gateway"
    trace_sample_ratio: float = 1.0  # of the traces the gateway starts (a parent's decision rules)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The web console under /console/ (`[console]`); it needs `[state] admin_key`."""

    enabled: bool = True  # served when the admin key is set
    public_models: bool = False  # the Models page without logging in
    session_max_age_s: float = 8 * 3600.0  # a login lasts this long
    login_attempts_per_minute: int = 10  # per client address; more get 429


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream endpoint (`[providers.NAME]`) and the defaults of its models."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    options: ProviderOptions = field(default_factory=OpenAIOptions)
    max_output_tokens: int | None = None  # the models' output cap, if the upstream has one
    price: Price = FREE
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    total_timeout_s: float = 900.0
    max_connections: int = 512
    transport: Transport = "h11"  # "h11" (lean, default) | "httpx" (honours proxy env vars)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Retries, failover and passive health (`[routing]`, each key also per model).

    See docs/routing.md. Health state and the retry budget are per worker process.
    """

    max_attempts: int = 3  # across targets and fallbacks, the first try included
    retry_on_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504, 529})
    retry_on_connect: bool = True  # "connect" in retry_on
    retry_on_first_byte_timeout: bool = True  # "first_byte_timeout" in retry_on
    # A non-streamed request whose connection broke after it was sent may have been
    # answered (and billed) upstream: retried only when a model opts in.
    retry_after_send: bool = False
    retry_budget_ratio: float = 0.2  # retries <= this x the requests of the last 10 s...
    retry_budget_min_per_s: float = 3.0  # ...plus this many per second
    backoff_base_ms: float = 100.0  # full jitter, doubling per retry of one deployment
    max_retry_after_s: float = 5.0  # a longer upstream Retry-After: move on, do not wait
    cooldown_s: float = 5.0  # first ejection of a failing deployment...
    cooldown_max_s: float = 300.0  # ...doubling up to this
    eject_consecutive_failures: int = 5  # failures in a row that eject a deployment
    eject_failure_rate: float = 0.5  # or this share of failures over the last 10 s...
    eject_min_requests: int = 10  # ...once it has served at least this many there

    @property
    def retry_on(self) -> tuple[int | str, ...]:
        """The `retry_on` list as configured (statuses sorted, then the events)."""
        events = ("connect",) * self.retry_on_connect + (
            "first_byte_timeout",
        ) * self.retry_on_first_byte_timeout
        return (*sorted(self.retry_on_statuses), *events)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A configured model id served by one deployment (`[models."ID"]` with `provider`);
    options and prices already merged over its provider's."""

    id: str
    provider: str
    upstream_model: str
    options: ProviderOptions = field(default_factory=OpenAIOptions)
    max_output_tokens: int | None = None
    price: Price = FREE
    fallbacks: tuple[str, ...] = ()  # routable ids tried in order when it failed retryably
    routing: RoutingConfig = RoutingConfig()


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One target of a routed model: any routable id (a `[models]` id or PROVIDER/MODEL)."""

    model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class RoutedModelConfig:
    """A configured model id served by several targets (`[models."ID"]` with `targets`)."""

    id: str
    targets: tuple[TargetConfig, ...]
    strategy: Strategy = "weighted"
    fallbacks: tuple[str, ...] = ()
    routing: RoutingConfig = RoutingConfig()


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
    source: str = EMBEDDED  # the file's path, or EMBEDDED
    media: FetchPolicy = FetchPolicy()
    state: StateConfig = StateConfig()
    routed: Mapping[str, RoutedModelConfig] = field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()  # the defaults of every model
    observability: ObservabilityConfig = ObservabilityConfig()
    console: ConsoleConfig = ConsoleConfig()
    responses: ResponsesConfig = ResponsesConfig()

    @property
    def pid_path(self) -> str:
        """The pid file `gateway reload` reads (`pid_path`)."""
        return pid_path(self.server.pid_file, self.state.sqlite_path)


def pid_path(pid_file: str | None, sqlite_path: str) -> str:
    """`[server] pid_file`, else gateway.pid in the directory of `[state] sqlite_path`:
    where `gateway serve` writes its pid and `gateway reload` finds it."""
    return pid_file or str(Path(sqlite_path).parent / PID_FILE)
