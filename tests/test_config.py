"""Config loading: the documented TOML shape, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    AnthropicOptions,
    ConfigError,
    OpenAIOptions,
    embedded_config,
    load_config,
    parse_config,
)

DOC_EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "gateway.toml"


def test_documented_example_loads() -> None:
    c = load_config(DOC_EXAMPLE, env={"OPENAI_API_KEY": "sk-x"})
    assert c.server.port == 8080
    assert c.providers["openai"].api_key == "sk-x"
    local = c.providers["local"].options
    assert isinstance(local, OpenAIOptions)
    assert local.developer_role is False and local.max_tokens_field == "max_tokens"
    assert c.models["fast"].upstream_model == "qwen2.5-7b-instruct"
    assert c.models["gpt-4o-mini"].upstream_model == "gpt-4o-mini"
    assert c.keys[0].name == "alice" and c.keys[0].models == ("gpt-4o-mini", "fast")


def test_all_vendors_example_loads() -> None:
    env = {
        "OPENAI_API_KEY": "sk-o",
        "ANTHROPIC_API_KEY": "sk-a",
        "GEMINI_API_KEY": "g",
        "GATEWAY_APP_KEY": "sk-app",
    }
    c = load_config(DOC_EXAMPLE.parent / "all-vendors.toml", env=env)
    assert {p.kind for p in c.providers.values()} == {"openai", "anthropic", "gemini", "mock"}
    assert c.providers["claude"].base_url == "https://api.anthropic.com/v1"
    assert c.providers["claude"].options == AnthropicOptions(default_max_tokens=4096)
    assert c.providers["google"].base_url == "https://generativelanguage.googleapis.com/v1beta"


def test_vendor_options_reach_the_deployment() -> None:
    from gateway.upstream.router import Router

    c = parse_config(
        {
            "providers": {
                "a": {"kind": "anthropic", "structured_output": "native", "reasoning_output": True}
            },
            "models": {
                "m": {
                    "provider": "a",
                    "default_max_tokens": 1000,
                    "fetch_media": True,
                    "max_output_tokens": 32000,
                }
            },
        },
        env={},
        source="t",
    )
    dep = Router(c).resolve("m")
    assert dep.options == AnthropicOptions(
        default_max_tokens=1000,
        structured_output="native",
        reasoning_output=True,
        fetch_media=True,
    )
    assert dep.max_output_tokens == 32000


def test_embedded_defaults_serve_the_mock() -> None:
    c = embedded_config("sk-dev-1")
    assert {p.kind for p in c.providers.values()} == {"mock"}
    assert "mock-gpt" in c.models and c.keys[0].key == "sk-dev-1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"serverr": {}}, "serverr: unknown key"),
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"server": {"port": "80"}}, "server.port: expected an integer"),
        ({"server": {"port": 70000}}, "server.port: must be between"),
        ({"providers": {"p": {}}}, "providers.p.kind: missing required key"),
        ({"providers": {"p": {"kind": "nope"}}}, "providers.p.kind: must be one of"),
        (
            {"providers": {"p": {"kind": "openai", "developer_rol": False}}},
            "providers.p.developer_rol: unknown key",
        ),
        (
            {"providers": {"p": {"kind": "openai", "developer_role": "no"}}},
            "providers.p.developer_role: expected a boolean",
        ),
        (
            {"providers": {"p": {"kind": "openai", "max_tokens_field": "max"}}},
            "providers.p.max_tokens_field: must be one of",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "ftp://x"}}},
            "providers.p.base_url: must start with http",
        ),
        (
            {"providers": {"p": {"kind": "openai", "api_key_env": "NOPE_NOT_SET"}}},
            "providers.p.api_key_env: environment variable NOPE_NOT_SET is not set",
        ),
        (
            {"providers": {"p": {"kind": "openai", "api_key": "a", "api_key_env": "B"}}},
            "set api_key or api_key_env, not both",
        ),
        ({"providers": {"a/b": {"kind": "openai"}}}, "must not contain '/'"),
        ({"models": {"m": {"provider": "ghost"}}}, "models.m.provider: no provider named 'ghost'"),
        (
            {"providers": {"p": {"kind": "mock"}}, "models": {"m": {"provider": "p", "x": 1}}},
            "models.m.x: unknown key",
        ),
        ({"keys": [{"name": "a"}]}, "keys[0]: set key or key_env"),
        ({"keys": [{"name": "a", "key": "k", "models": [1]}]}, "keys[0].models[0]"),
        (
            {"keys": [{"name": "a", "key": "k"}, {"name": "a", "key": "j"}]},
            "keys[1].name: duplicate key name",
        ),
        ({"keys": {"name": "a"}}, "keys: expected an array of tables"),
        (
            {"keys": [{"name": "a", "key": "k"}, {"name": "b", "key": "k"}]},
            "keys[1]: the same secret as keys[0]",
        ),
        ({"server": {"body_timeout_s": -1}}, "server.body_timeout_s: must be >= 0"),
        (
            {"providers": {"p": {"kind": "anthropic", "structured_output": "json"}}},
            "providers.p.structured_output: must be one of tool, native",
        ),
        ({"media": {"max_bytes": 0}}, "media.max_bytes: must be between"),
        (
            {"providers": {"p": {"kind": "openai", "transport": "curl"}}},
            "providers.p.transport: must be one of h11, httpx",
        ),
        ({"media": {"allow_private": True}}, "media.allow_private: unknown key"),
        ({"server": {"send_timeout_s": 0}}, "server.send_timeout_s: must be >= 0.1"),
        ({"server": {"max_connections": 0}}, "server.max_connections: must be between 1"),
        ({"server": {"max_in_flight": -5}}, "server.max_in_flight: must be between 1"),
        ({"server": {"max_loop_lag_ms": -1}}, "server.max_loop_lag_ms: must be >= 0"),
        (
            {"server": {"max_loop_busy_percent": 101}},
            "server.max_loop_busy_percent: must be <= 100",
        ),
        ({"server": {"drain_delay_s": "5"}}, "server.drain_delay_s: expected a number"),
        (
            {"server": {"http_server": "uvicorn"}},
            "server.http_server: must be one of builtin, hypercorn",
        ),
        ({"responses": {"retention_days": 0}}, "responses.retention_days: must be >= 0.001"),
        ({"responses": {"retention_days": 1e9}}, "responses.retention_days: must be at most"),
        ({"responses": {"retention_days": float("nan")}}, "responses.retention_days: must be"),
        ({"responses": {"retention_hours": 1}}, "responses.retention_hours: unknown key"),
        (
            {"providers": {"p": {"kind": "mock", "responses_api": True}}},
            "providers.p.responses_api: the mock provider speaks chat completions only",
        ),
        (
            {
                "providers": {"p": {"kind": "mock"}},
                "models": {"m": {"provider": "p", "responses_api": True}},
            },
            "models.m.responses_api: the mock provider speaks chat completions only",
        ),
        (
            {"providers": {"p": {"kind": "anthropic", "responses_api": True}}},
            "providers.p.responses_api: not an option of kind 'anthropic' (only of openai, mock)",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(data, env={}, source="t")
    assert message in str(info.value)


def test_model_flags_override_provider_flags() -> None:
    c = parse_config(
        {
            "providers": {
                "p": {"kind": "openai", "developer_role": False, "max_tokens_field": "max_tokens"}
            },
            "models": {"m": {"provider": "p", "developer_role": True}},
        },
        env={},
        source="t",
    )
    eff = c.models["m"].options
    assert isinstance(eff, OpenAIOptions)
    assert eff.developer_role is True and eff.max_tokens_field == "max_tokens"


def test_an_option_of_another_kind_is_refused_naming_its_kinds() -> None:
    with pytest.raises(ConfigError, match=r"providers.p.api_version: not an option of kind "):
        parse_config(
            {"providers": {"p": {"kind": "openai", "api_version": "x"}}}, env={}, source="t"
        )
    with pytest.raises(ConfigError, match=r"models.m.ttft_ms: not an option of kind 'gemini'"):
        parse_config(
            {
                "providers": {"g": {"kind": "gemini"}},
                "models": {"m": {"provider": "g", "ttft_ms": 1}},
            },
            env={},
            source="t",
        )


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_an_option_needing_a_missing_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from gateway.config import missing_extras

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("httpx", "hypercorn") else real(name, *a),
    )
    config = parse_config(
        {
            "server": {"http_server": "hypercorn"},
            "providers": {"p": {"kind": "openai", "transport": "httpx"}, "q": {"kind": "openai"}},
        },
        env={},
        source="t",
    )
    hypercorn, httpx = missing_extras(config)
    assert hypercorn.startswith('server.http_server: "hypercorn" needs the hypercorn package')
    assert "pip install 'gateway[hypercorn]'" in hypercorn
    assert httpx.startswith('providers.p.transport: "httpx" needs the httpx package')
    assert "pip install 'gateway[httpx]'" in httpx


# ------------------------------------------------------------------- routing

ROUTING_PROVIDERS = {"o": {"kind": "openai"}, "a": {"kind": "anthropic"}}


def routing_config(models: dict[str, object], **root: object) -> object:
    return parse_config(
        {"providers": ROUTING_PROVIDERS, "models": models, **root}, env={}, source="t"
    )


def test_routing_defaults_and_per_model_overrides() -> None:
    from gateway.config import Config, RoutingConfig

    c = routing_config(
        {
            "chat": {
                "strategy": "least-busy",
                "targets": ["o/gpt", {"model": "a/claude", "weight": 2.5}],
                "fallbacks": ["solo"],
                "max_attempts": 5,
                "retry_after_send": True,
            },
            "solo": {"provider": "o", "fallbacks": ["a/claude"], "cooldown_s": 1},
        },
        routing={"retry_on": [429, 503, "connect"], "backoff_base_ms": 50},
    )
    assert isinstance(c, Config)
    assert c.routing.retry_on == (429, 503, "connect")
    assert c.routing.backoff_base_ms == 50 and c.routing.max_attempts == 3
    chat = c.routed["chat"]
    assert chat.strategy == "least-busy" and chat.fallbacks == ("solo",)
    assert [(t.model, t.weight) for t in chat.targets] == [("o/gpt", 1.0), ("a/claude", 2.5)]
    assert chat.routing.max_attempts == 5 and chat.routing.retry_after_send
    assert chat.routing.backoff_base_ms == 50  # the [routing] default under the model's keys
    assert c.models["solo"].routing.cooldown_s == 1 and c.models["solo"].fallbacks == ("a/claude",)
    assert RoutingConfig().retry_on == (
        429,
        500,
        502,
        503,
        504,
        529,
        "connect",
        "first_byte_timeout",
    )


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"m": {"targets": ["o/x"], "provider": "o"}}, "set provider or targets, not both"),
        ({"m": {"upstream_model": "x"}}, r"models.m: set provider \(one deployment\) or targets"),
        ({"m": {"targets": []}}, "models.m.targets: expected a non-empty list"),
        ({"m": {"targets": ["o/x", "o/x"]}}, "a target is listed twice"),
        ({"m": {"targets": [{"model": "o/x", "weight": 0}]}}, r"targets\[0\].weight: must be > 0"),
        ({"m": {"targets": [{"model": "o/x", "w": 1}]}}, r"targets\[0\].w: unknown key"),
        ({"m": {"targets": ["ghost/x"]}}, "'ghost/x' is neither a \\[models\\] id"),
        ({"m": {"provider": "o", "fallbacks": ["nope"]}}, "models.\"m\".fallbacks: 'nope'"),
        ({"m": {"targets": ["o/x"], "strategy": "fastest"}}, "models.m.strategy: must be one of"),
        ({"m": {"provider": "o", "strategy": "weighted"}}, "only a model with targets"),
        ({"m": {"targets": ["o/x"], "developer_role": False}}, "options and prices belong"),
        ({"m": {"provider": "o", "retry_on": [400]}}, r"retry_on\[0\]: 400 is an answer about"),
        ({"m": {"provider": "o", "retry_on": ["reset"]}}, r"retry_on\[0\]: must be a status or"),
        ({"m": {"provider": "o", "max_attempts": 0}}, "max_attempts: must be between 1 and 10"),
        ({"m": {"provider": "o", "cooldown_s": 10, "cooldown_max_s": 5}}, "cooldown_max_s must"),
        ({"m": {"provider": "o", "eject_failure_rate": 0}}, "eject_failure_rate: must be > 0"),
        ({"m": {"provider": "o", "fallbacks": ["m"]}}, 'routing cycle: models."m" -> models."m"'),
        (
            {
                "a": {"targets": ["b"]},
                "b": {"provider": "o", "fallbacks": ["c"]},
                "c": {"targets": ["a"]},
            },
            'routing cycle: models."b" -> models."c" -> models."a" -> models."b"',
        ),
    ],
)
def test_routing_mistakes_are_refused_naming_the_key(
    models: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        routing_config(models)


def test_unknown_routing_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"routing\.max_retries: unknown key"):
        routing_config({}, routing={"max_retries": 2})


def test_routing_example_loads() -> None:
    env = {
        "OPENAI_API_KEY": "sk-o",
        "AZURE_OPENAI_API_KEY": "sk-z",
        "ANTHROPIC_API_KEY": "sk-a",
        "GEMINI_API_KEY": "g",
        "GATEWAY_APP_KEY": "sk-app",
    }
    c = load_config(DOC_EXAMPLE.parent / "routing.toml", env=env)
    chat = c.routed["chat"]
    assert chat.strategy == "weighted" and chat.fallbacks == ("claude-haiku", "gemini-flash")
    assert [t.weight for t in chat.targets] == [3, 1]
    assert (
        c.routing.retry_budget_ratio == 0.2
        and not c.models["gemini-flash"].routing.retry_after_send
    )


def test_observability_keys_are_read_and_checked() -> None:
    c = parse_config(
        {
            "server": {"log_format": "text", "log_level": "debug"},
            "state": {"admin_key": "sk-admin"},
            "observability": {
                "access_log": False,
                "metrics_auth": True,
                "metrics_per_key": True,
                "traces": True,
                "otlp_endpoint": "http://127.0.0.1:4318/v1/traces",
                "service_name": "gw",
                "trace_sample_ratio": 0.25,
            },
        },
        env={},
        source="t",
    )
    assert (c.server.log_format, c.server.log_level) == ("text", "debug")
    obs = c.observability
    assert not obs.access_log and obs.metrics and obs.metrics_auth and obs.metrics_per_key
    assert obs.traces and obs.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (obs.service_name, obs.trace_sample_ratio) == ("gw", 0.25)
    defaults = parse_config({}, env={}, source="t")
    assert defaults.server.log_format is None and defaults.server.log_level == "info"
    assert defaults.observability.metrics and not defaults.observability.traces


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"log_format": "xml"}}, "server.log_format: must be one of json, text"),
        ({"server": {"log_level": "loud"}}, "server.log_level: must be one of debug"),
        ({"observability": {"metrics_auth": True}}, "observability.metrics_auth: needs"),
        ({"observability": {"otlp_endpoint": "udp://x"}}, "observability.otlp_endpoint"),
        ({"observability": {"trace_sample_ratio": 2}}, "between 0 and 1"),
        ({"observability": {"tracing": True}}, "observability.tracing: unknown key"),
    ],
)
def test_observability_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, env={}, source="t")


def test_traces_without_the_otel_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from gateway.config import missing_extras

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a),
    )
    config = parse_config({"observability": {"traces": True}}, env={}, source="t")
    assert missing_extras(config) == [
        "observability.traces: needs the OpenTelemetry SDK and OTLP exporter "
        "(pip install 'gateway[otel]')"
    ]


def test_postgres_url_is_checked_and_needs_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from gateway.config import missing_extras

    url = "postgresql://gw:secret@db.internal/gateway"
    config = parse_config({"state": {"postgres_url_env": "PG"}}, env={"PG": url}, source="t")
    assert config.state.postgres_url == url
    assert "secret" not in repr(config.state)
    with pytest.raises(ConfigError, match=r"state\.postgres_url: must start with postgresql://"):
        parse_config({"state": {"postgres_url": "mysql://x"}}, env={}, source="t")
    with pytest.raises(ConfigError, match="environment variable PG is not set"):
        parse_config({"state": {"postgres_url_env": "PG"}}, env={}, source="t")
    with pytest.raises(ConfigError, match="postgres_pool_size"):
        parse_config({"state": {"postgres_url": url, "postgres_pool_size": 0}}, env={}, source="t")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    assert missing_extras(config) == [
        "state.postgres_url: needs psycopg and psycopg_pool (pip install 'gateway[postgres]')"
    ]


def test_the_responses_api_settings() -> None:
    c = parse_config(
        {
            "providers": {"o": {"kind": "openai", "responses_api": True}},
            "models": {"m": {"provider": "o"}, "n": {"provider": "o", "responses_api": False}},
            "responses": {"retention_days": 7},
        },
        env={},
        source="t",
    )
    assert c.responses.retention_days == 7.0
    assert c.models["m"].options == OpenAIOptions(responses_api=True)
    assert c.models["n"].options == OpenAIOptions(responses_api=False)
    assert parse_config({}, env={}, source="t").responses.retention_days == 30.0
