"""TOML in, a validated `Config` out: every key checked, secrets resolved once.

The TOML shape is a contract (docs/configuration.md). Provider options are read
from the fields of the kind's options dataclass (`config/options.py`), so a new
option is one field with its default and comment, and nothing here changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import tomllib
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, get_args, get_origin

from gateway.config.model import (
    EMBEDDED,
    HTTP_SERVERS,
    LOG_FORMATS,
    LOG_LEVELS,
    TRANSPORTS,
    Config,
    ConsoleConfig,
    FetchPolicy,
    KeyConfig,
    ModelConfig,
    ObservabilityConfig,
    Price,
    ProviderConfig,
    ResponsesConfig,
    RoutedModelConfig,
    RoutingConfig,
    ServerConfig,
    StateConfig,
)
from gateway.config.options import (
    KINDS,
    OPTIONS_BY_KIND,
    MockOptions,
    ProviderKind,
    ProviderOptions,
)
from gateway.config.reader import ConfigError, Table
from gateway.config.routing import check_routes, read_fallbacks, read_routed_model, read_routing
from gateway.store.redis_url import parse_redis_url

T = TypeVar("T")

DEFAULT_BASE_URLS: dict[ProviderKind, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "mock": "mock://local/v1",
}
MAX_OPTION_INT = 10_000_000
PRICE_KEYS = {
    "price_input_per_mtok": "input_per_mtok",
    "price_cached_input_per_mtok": "cached_input_per_mtok",
    "price_output_per_mtok": "output_per_mtok",
}


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


class _Problems:
    """Problems that do not stop the reading (an environment variable not set, a key
    scope naming no model): all of them are reported together at its end, so that one
    run of check-config lists every variable to set."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, problem: str) -> None:
        self.found.append(problem)

    def raise_any(self) -> None:
        if self.found:
            raise ConfigError(*self.found)


def _secret(
    t: Table, value_key: str, env_key: str, env: Mapping[str, str], problems: _Problems
) -> str | None:
    """A secret given inline or by the name of an environment variable. A variable not
    set is a problem, reported at the end; meanwhile a placeholder unique to its place
    stands in (no secret can equal it)."""
    inline = t.text(value_key)
    env_name = t.text(env_key)
    if inline is not None and env_name is not None:
        raise ConfigError(f"{t.path}: set {value_key} or {env_key}, not both")
    if env_name is not None:
        value = env.get(env_name)
        if not value:
            problems.add(f"{t.at(env_key)}: environment variable {env_name} is not set")
            return f"\0unset {t.at(env_key)}"
        return value
    return inline  # type: ignore[no-any-return]


def _option_value(t: Table, key: str, hint: Any) -> Any:
    """One option read by the type of its dataclass field (None: not set)."""
    if get_origin(hint) in (typing.Union, UnionType):  # `X | None`
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is Literal:
        return t.text(key, choices=tuple(get_args(hint)))
    if hint is bool:
        return t.flag(key)
    if hint is int:
        return t.integer(key, minimum=1, maximum=MAX_OPTION_INT)
    if hint is float:
        return t.number(key)
    if hint is str:
        return t.text(key)
    raise TypeError(f"option {key}: no reader for {hint!r}")  # a new field type: add it here


def _options(t: Table, base: ProviderOptions) -> ProviderOptions:
    """`base` with the options this table sets (only the kind's own keys are read)."""
    hints = typing.get_type_hints(type(base))
    changes = {}
    for f in dataclasses.fields(base):
        value = _option_value(t, f.name, hints[f.name])
        if value is not None:
            changes[f.name] = value
    return dataclasses.replace(base, **changes) if changes else base


def _price(t: Table, base: Price) -> Price:
    changes = {}
    for key, name in PRICE_KEYS.items():
        value = t.number(key)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(base, **changes) if changes else base


def _max_output_tokens(t: Table, base: int | None) -> int | None:
    value = t.integer("max_output_tokens", minimum=1, maximum=MAX_OPTION_INT)
    return base if value is None else value


def _unknown_key_hint(t: Table, kind: ProviderKind) -> None:
    """Reject keys no reader asked for, naming the kinds that would take an option."""
    for key in t.data:
        if key in t.seen:
            continue
        owners = [k for k, cls in OPTIONS_BY_KIND.items() if key in _field_names(cls)]
        if owners:
            raise ConfigError(
                f"{t.at(key)}: not an option of kind {kind!r} (only of {', '.join(owners)})"
            )
        raise ConfigError(f"{t.at(key)}: unknown key")


def _mock_speaks_chat_only(t: Table, options: ProviderOptions) -> None:
    """The mock inherits OpenAI's options but answers chat completions only."""
    if isinstance(options, MockOptions) and options.responses_api and "responses_api" in t.data:
        raise ConfigError(
            f"{t.at('responses_api')}: the mock provider speaks chat completions only"
        )


def _field_names(cls: type[ProviderOptions]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _provider(name: str, t: Table, env: Mapping[str, str], problems: _Problems) -> ProviderConfig:
    kind: ProviderKind = t.text("kind", required=True, choices=KINDS)
    base_url = t.text("base_url") or DEFAULT_BASE_URLS[kind]
    if kind != "mock" and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{t.at('base_url')}: must start with http:// or https://")
    headers: dict[str, str] = {}
    ht = t.table("headers")
    if ht is not None:
        for hname in ht.data:
            headers[hname.lower()] = ht.text(hname, required=True)
    d = ProviderConfig(name=name, kind=kind, base_url=base_url)
    p = ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=_secret(t, "api_key", "api_key_env", env, problems),
        options=_options(t, OPTIONS_BY_KIND[kind]()),
        max_output_tokens=_max_output_tokens(t, None),
        price=_price(t, d.price),
        headers=headers,
        connect_timeout_s=_or(t.number("connect_timeout_s"), d.connect_timeout_s),
        first_byte_timeout_s=_or(t.number("first_byte_timeout_s"), d.first_byte_timeout_s),
        idle_timeout_s=_or(t.number("idle_timeout_s"), d.idle_timeout_s),
        total_timeout_s=_or(t.number("total_timeout_s"), d.total_timeout_s),
        max_connections=_or(
            t.integer("max_connections", minimum=1, maximum=100_000), d.max_connections
        ),
        transport=_or(t.text("transport", choices=TRANSPORTS), d.transport),
    )
    _mock_speaks_chat_only(t, p.options)
    _unknown_key_hint(t, kind)
    return p


def _model(
    model_id: str, t: Table, providers: Mapping[str, ProviderConfig], routing: RoutingConfig
) -> ModelConfig:
    provider_name = t.text("provider")
    if provider_name is None:
        raise ConfigError(f"{t.path}: set provider (one deployment) or targets (several)")
    provider = providers.get(provider_name)
    if provider is None:
        raise ConfigError(f"{t.at('provider')}: no provider named {provider_name!r}")
    m = ModelConfig(
        id=model_id,
        provider=provider_name,
        upstream_model=_or(t.text("upstream_model"), model_id),
        options=_options(t, provider.options),
        max_output_tokens=_max_output_tokens(t, provider.max_output_tokens),
        price=_price(t, provider.price),
        fallbacks=read_fallbacks(t),
        routing=read_routing(t, routing),
    )
    if "strategy" in t.data:
        raise ConfigError(f"{t.at('strategy')}: only a model with targets has a strategy")
    _mock_speaks_chat_only(t, m.options)
    _unknown_key_hint(t, provider.kind)
    return m


def _server(st: Table) -> ServerConfig:
    d = ServerConfig()
    server = ServerConfig(
        host=_or(st.text("host"), d.host),
        port=_or(st.integer("port", minimum=0, maximum=65535), d.port),
        workers=_or(st.integer("workers", minimum=1, maximum=256), d.workers),
        max_body_bytes=_or(
            st.integer("max_body_bytes", minimum=1024, maximum=1 << 30), d.max_body_bytes
        ),
        body_timeout_s=_or(st.number("body_timeout_s"), d.body_timeout_s),
        keep_alive_timeout_s=_or(st.number("keep_alive_timeout_s"), d.keep_alive_timeout_s),
        graceful_timeout_s=_or(st.number("graceful_timeout_s"), d.graceful_timeout_s),
        http_server=_or(st.text("http_server", choices=HTTP_SERVERS), d.http_server),
        send_timeout_s=_or(st.number("send_timeout_s", minimum=0.1), d.send_timeout_s),
        max_connections=st.integer("max_connections", minimum=1, maximum=10_000_000),
        max_in_flight=st.integer("max_in_flight", minimum=1, maximum=10_000_000),
        max_loop_lag_ms=_or(st.number("max_loop_lag_ms"), d.max_loop_lag_ms),
        max_loop_busy_percent=_or(
            st.number("max_loop_busy_percent", minimum=0, maximum=100), d.max_loop_busy_percent
        ),
        drain_delay_s=_or(st.number("drain_delay_s"), d.drain_delay_s),
        log_format=st.text("log_format", choices=LOG_FORMATS),
        log_level=_or(st.text("log_level", choices=LOG_LEVELS), d.log_level),
        pid_file=st.text("pid_file"),
        cors_origins=_cors_origins(st),
    )
    st.done()
    return server


def _cors_origins(st: Table) -> tuple[str, ...]:
    """Browser origins as a browser sends them (`https://app.example.com`, no path), or
    "*" for any."""
    origins = st.str_list("cors_origins") or ()
    for i, origin in enumerate(origins):
        scheme, sep, rest = origin.partition("://")
        if origin == "*":
            if len(origins) > 1:
                raise ConfigError(f'{st.at("cors_origins")}: "*" allows every origin alone')
        elif scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ConfigError(
                f"{st.at('cors_origins')}[{i}]: {origin!r} is not an origin like "
                '"https://app.example.com" (scheme and host, no path), or "*"'
            )
    return tuple(origins)


def _keys(raw_keys: object, env: Mapping[str, str], problems: _Problems) -> tuple[KeyConfig, ...]:
    if not isinstance(raw_keys, list):
        raise ConfigError("keys: expected an array of tables ([[keys]])")
    keys: list[KeyConfig] = []
    seen_names: set[str] = set()
    seen_secrets: dict[str, int] = {}
    for i, item in enumerate(raw_keys):
        kt = Table(item, f"keys[{i}]")
        name = kt.text("name", required=True)
        if name in seen_names:
            raise ConfigError(f"keys[{i}].name: duplicate key name {name!r}")
        seen_names.add(name)
        secret = _secret(kt, "key", "key_env", env, problems)
        if secret is None:
            raise ConfigError(f"keys[{i}]: set key or key_env")
        if secret in seen_secrets:
            raise ConfigError(f"keys[{i}]: the same secret as keys[{seen_secrets[secret]}]")
        seen_secrets[secret] = i
        keys.append(KeyConfig(name=name, key=secret, models=kt.str_list("models")))
        kt.done()
    return tuple(keys)


def _state(stt: Table, env: Mapping[str, str], problems: _Problems) -> StateConfig:
    d = StateConfig()
    redis_url = stt.text("redis_url")
    if redis_url is not None:
        try:
            parse_redis_url(redis_url)
        except ValueError as e:
            raise ConfigError(f"state.redis_url: {e}") from None
    postgres_url = _secret(stt, "postgres_url", "postgres_url_env", env, problems)
    if postgres_url is not None and not postgres_url.startswith(
        ("postgresql://", "postgres://", "\0unset")
    ):
        raise ConfigError(
            f"{stt.at('postgres_url')}: must start with postgresql:// (a libpq connection URL)"
        )
    state = StateConfig(
        sqlite_path=_or(stt.text("sqlite_path"), d.sqlite_path),
        postgres_url=postgres_url,
        postgres_timeout_s=_or(stt.number("postgres_timeout_s", minimum=0.1), d.postgres_timeout_s),
        postgres_pool_size=_or(
            stt.integer("postgres_pool_size", minimum=1, maximum=100), d.postgres_pool_size
        ),
        journal_path=stt.text("journal_path"),
        redis_url=redis_url,
        redis_timeout_s=_or(stt.number("redis_timeout_s", minimum=0.01), d.redis_timeout_s),
        admin_key=_secret(stt, "admin_key", "admin_key_env", env, problems),
        default_output_tokens=_or(
            stt.integer("default_output_tokens", minimum=1, maximum=MAX_OPTION_INT),
            d.default_output_tokens,
        ),
        fsync=_or(stt.flag("fsync"), d.fsync),
    )
    stt.done()
    return state


def _observability(ot: Table, state: StateConfig) -> ObservabilityConfig:
    d = ObservabilityConfig()
    endpoint = ot.text("otlp_endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{ot.at('otlp_endpoint')}: must start with http:// or https://")
    ratio = ot.number("trace_sample_ratio")
    if ratio is not None and ratio > 1:
        raise ConfigError(f"{ot.at('trace_sample_ratio')}: must be between 0 and 1")
    obs = ObservabilityConfig(
        access_log=_or(ot.flag("access_log"), d.access_log),
        metrics=_or(ot.flag("metrics"), d.metrics),
        metrics_auth=_or(ot.flag("metrics_auth"), d.metrics_auth),
        metrics_per_key=_or(ot.flag("metrics_per_key"), d.metrics_per_key),
        traces=_or(ot.flag("traces"), d.traces),
        otlp_endpoint=endpoint,
        service_name=_or(ot.text("service_name"), d.service_name),
        trace_sample_ratio=_or(ratio, d.trace_sample_ratio),
    )
    if obs.metrics_auth and not state.admin_key:
        raise ConfigError(
            f"{ot.at('metrics_auth')}: needs [state] admin_key (or admin_key_env) to check"
        )
    ot.done()
    return obs


def _console(ct: Table) -> ConsoleConfig:
    d = ConsoleConfig()
    console = ConsoleConfig(
        enabled=_or(ct.flag("enabled"), d.enabled),
        public_models=_or(ct.flag("public_models"), d.public_models),
        session_max_age_s=_or(ct.number("session_max_age_s", minimum=60), d.session_max_age_s),
        login_attempts_per_minute=_or(
            ct.integer("login_attempts_per_minute", minimum=1, maximum=10_000),
            d.login_attempts_per_minute,
        ),
    )
    ct.done()
    return console


def _media(mt: Table) -> FetchPolicy:
    d = FetchPolicy()
    media = FetchPolicy(
        max_bytes=_or(mt.integer("max_bytes", minimum=1, maximum=1 << 30), d.max_bytes),
        timeout_s=_or(mt.number("timeout_s"), d.timeout_s),
        max_redirects=_or(mt.integer("max_redirects", minimum=0, maximum=20), d.max_redirects),
        allow_private=_or(mt.flag("allow_private_addresses"), d.allow_private),
    )
    mt.done()
    return media


def _check_scopes(
    keys: tuple[KeyConfig, ...],
    model_ids: Collection[str],
    providers: Collection[str],
    problems: _Problems,
) -> None:
    """Every model a key's scope names must route somewhere: a configured id, or
    PROVIDER/MODEL or PROVIDER/* of a configured provider (a typo would otherwise
    silently lock the key out of the model it was meant for)."""
    for i, key in enumerate(keys):
        for j, entry in enumerate(key.models or ()):
            prefix, slash, rest = entry.partition("/")
            if entry in model_ids or (slash and rest and prefix in providers):
                continue
            close = difflib.get_close_matches(entry, list(model_ids), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.add(
                f"keys[{i}].models[{j}]: no model {entry!r}: neither a [models] id nor"
                f" PROVIDER/MODEL of a configured provider{hint}"
            )


MAX_RETENTION_DAYS = 3650


def _responses(rt: Table) -> ResponsesConfig:
    d = ResponsesConfig()
    days = rt.number("retention_days", minimum=0.001)
    if days is not None and not days <= MAX_RETENTION_DAYS:  # NaN and inf too
        raise ConfigError(f"{rt.at('retention_days')}: must be at most {MAX_RETENTION_DAYS}")
    responses = ResponsesConfig(retention_days=_or(days, d.retention_days))
    rt.done()
    return responses


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str], source: str) -> Config:
    """Validate a parsed TOML document into a `Config`; raises ConfigError naming the key
    (every missing environment variable and unknown scope model at once)."""
    problems = _Problems()
    root = Table(dict(data), "")
    st = root.table("server")
    server = _server(st) if st is not None else ServerConfig()

    providers: dict[str, ProviderConfig] = {}
    pt = root.table("providers")
    if pt is not None:
        for name in pt.data:
            if "/" in name:
                raise ConfigError(f"providers.{name}: a provider name must not contain '/'")
            sub = pt.table(name)
            assert sub is not None
            providers[name] = _provider(name, sub, env, problems)

    rt = root.table("routing")
    routing = RoutingConfig()
    if rt is not None:
        routing = read_routing(rt, routing)
        rt.done()

    models: dict[str, ModelConfig] = {}
    routed: dict[str, RoutedModelConfig] = {}
    mt = root.table("models")
    if mt is not None:
        for model_id in mt.data:
            sub = mt.table(model_id)
            assert sub is not None
            if "targets" in sub.data:
                if "provider" in sub.data:
                    raise ConfigError(f"{sub.path}: set provider or targets, not both")
                routed[model_id] = read_routed_model(model_id, sub, routing)
            else:
                models[model_id] = _model(model_id, sub, providers, routing)
    check_routes(models, routed, providers)

    root.seen.add("keys")
    raw_keys = root.data.get("keys")
    keys = _keys(raw_keys, env, problems) if raw_keys is not None else ()
    stt = root.table("state")
    state = _state(stt, env, problems) if stt is not None else StateConfig()
    met = root.table("media")
    media = _media(met) if met is not None else FetchPolicy()
    ot = root.table("observability")
    observability = _observability(ot, state) if ot is not None else ObservabilityConfig()
    ct = root.table("console")
    console = _console(ct) if ct is not None else ConsoleConfig()
    rst = root.table("responses")
    responses = _responses(rst) if rst is not None else ResponsesConfig()
    root.done()
    _check_scopes(keys, [*models, *routed], providers, problems)
    problems.raise_any()
    return Config(
        server=server,
        providers=providers,
        models=models,
        keys=keys,
        source=source,
        media=media,
        state=state,
        routed=routed,
        routing=routing,
        observability=observability,
        console=console,
        responses=responses,
    )


OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def missing_extras(config: Config) -> list[str]:
    """What the config asks for that needs an optional extra which is not installed."""
    out = []
    if config.server.http_server == "hypercorn" and importlib.util.find_spec("hypercorn") is None:
        out.append(
            'server.http_server: "hypercorn" needs the hypercorn package '
            "(pip install 'gateway[hypercorn]')"
        )
    if importlib.util.find_spec("httpx") is None:
        out.extend(
            f'providers.{p.name}.transport: "httpx" needs the httpx package '
            "(pip install 'gateway[httpx]')"
            for p in config.providers.values()
            if p.transport == "httpx"
        )
    if config.state.postgres_url and not all(map(_installed, ("psycopg", "psycopg_pool"))):
        out.append(
            "state.postgres_url: needs psycopg and psycopg_pool (pip install 'gateway[postgres]')"
        )
    if config.observability.traces and not all(map(_installed, OTEL_MODULES)):
        out.append(
            "observability.traces: needs the OpenTelemetry SDK and OTLP exporter "
            "(pip install 'gateway[otel]')"
        )
    return out


def read_config_file(path: str | Path) -> bytes:
    """The bytes of a config file; ConfigError if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def config_from_bytes(raw: bytes, source: str, *, env: Mapping[str, str] | None = None) -> Config:
    """Validate the bytes of a TOML config file read from `source`."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return parse_config(data, env=os.environ if env is None else env, source=source)


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    return config_from_bytes(read_config_file(path), str(path), env=env)


def embedded_config(dev_key: str, admin_key: str | None = None) -> Config:
    """The defaults `gateway serve` runs without --config: the offline mock provider;
    with `admin_key`, the admin API and the console too (docs/console.md)."""
    data: dict[str, Any] = {
        "providers": {"mock": {"kind": "mock", "ttft_ms": 150, "tokens_per_s": 80}},
        "models": {
            "mock-gpt": {"provider": "mock"},
            "mock-fast": {"provider": "mock", "ttft_ms": 0, "tokens_per_s": 0},
            "mock-slow": {"provider": "mock", "ttft_ms": 800, "tokens_per_s": 15},
        },
        "keys": [{"name": "dev", "key": dev_key}],
    }
    if admin_key is not None:
        data["state"] = {"admin_key": admin_key}
    return parse_config(data, env={}, source=EMBEDDED)
