"""Model id -> deployment, with capability flags resolved model over provider."""

from __future__ import annotations

import pytest

from gateway.config import OpenAIOptions, parse_config
from gateway.errors import ModelNotFound
from gateway.upstream.router import Router

CONFIG = parse_config(
    {
        "providers": {
            "openai": {"kind": "openai", "api_key": "sk-up"},
            "local": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:8000/v1/",
                "developer_role": False,
                "max_tokens_field": "max_tokens",
                "stream_usage": False,
            },
        },
        "models": {
            "fast": {"provider": "local", "upstream_model": "qwen2.5-7b-instruct"},
            "modern": {"provider": "local", "developer_role": True},
            "org/model": {"provider": "openai", "upstream_model": "gpt-4o"},
        },
    },
    env={},
    source="t",
)


def test_configured_model() -> None:
    d = Router(CONFIG).resolve("fast")
    assert (d.provider_name, d.upstream_model, d.base_url) == (
        "local",
        "qwen2.5-7b-instruct",
        "http://127.0.0.1:8000/v1",
    )
    assert (
        d.options_of(OpenAIOptions).developer_role is False
        and d.options_of(OpenAIOptions).max_tokens_field == "max_tokens"
    )
    assert d.options_of(OpenAIOptions).stream_usage is False


def test_model_flag_wins_over_provider_flag() -> None:
    d = Router(CONFIG).resolve("modern")
    assert (
        d.options_of(OpenAIOptions).developer_role is True
        and d.options_of(OpenAIOptions).max_tokens_field == "max_tokens"
    )
    assert d.upstream_model == "modern"


def test_provider_slash_model() -> None:
    d = Router(CONFIG).resolve("openai/gpt-4.1")
    assert (d.provider_name, d.upstream_model, d.api_key) == ("openai", "gpt-4.1", "sk-up")
    assert (
        d.options_of(OpenAIOptions).developer_role is True
        and d.options_of(OpenAIOptions).stream_usage is True
    )  # built-in defaults
    assert d.base_url == "https://api.openai.com/v1"


def test_configured_id_with_slash_wins() -> None:
    assert Router(CONFIG).resolve("org/model").upstream_model == "gpt-4o"


@pytest.mark.parametrize("model", ["nope", "ghost/gpt-4", "openai/", "/x"])
def test_unknown_models_are_404(model: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        Router(CONFIG).resolve(model)
    assert info.value.code == "model_not_found" and info.value.http_status == 404


def test_listing_is_config_order() -> None:
    assert [r.id for r in Router(CONFIG).configured] == ["fast", "modern", "org/model"]
