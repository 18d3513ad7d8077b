"""Typed, frozen configuration, loaded and validated once at start.

The names most code needs, in one place: the dataclasses (`model`), the per-kind
provider options (`options`) and the loader (`load`). Units live in the names
(`connect_timeout_s`); no global mutable settings: the loaded `Config` is passed to
whoever needs it.
"""

from gateway.config.load import (
    DEFAULT_BASE_URLS,
    embedded_config,
    load_config,
    missing_extras,
    parse_config,
)
from gateway.config.model import (
    FREE,
    HTTP_SERVERS,
    LOG_FORMATS,
    LOG_LEVELS,
    TRANSPORTS,
    Config,
    ConsoleConfig,
    FetchPolicy,
    HttpServer,
    KeyConfig,
    LogFormat,
    LogLevel,
    ModelConfig,
    ObservabilityConfig,
    Price,
    ProviderConfig,
    ResponsesConfig,
    RoutedModelConfig,
    RoutingConfig,
    ServerConfig,
    StateConfig,
    Strategy,
    TargetConfig,
    Transport,
)
from gateway.config.options import (
    KINDS,
    OPTIONS_BY_KIND,
    AnthropicOptions,
    GeminiOptions,
    MockOptions,
    OpenAIOptions,
    ProviderKind,
    ProviderOptions,
)
from gateway.config.reader import ConfigError

__all__ = [
    "DEFAULT_BASE_URLS",
    "FREE",
    "HTTP_SERVERS",
    "KINDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OPTIONS_BY_KIND",
    "TRANSPORTS",
    "AnthropicOptions",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "FetchPolicy",
    "GeminiOptions",
    "HttpServer",
    "KeyConfig",
    "LogFormat",
    "LogLevel",
    "MockOptions",
    "ModelConfig",
    "ObservabilityConfig",
    "OpenAIOptions",
    "Price",
    "ProviderConfig",
    "ProviderKind",
    "ProviderOptions",
    "ResponsesConfig",
    "RoutedModelConfig",
    "RoutingConfig",
    "ServerConfig",
    "StateConfig",
    "Strategy",
    "TargetConfig",
    "Transport",
    "embedded_config",
    "load_config",
    "missing_extras",
    "parse_config",
]
