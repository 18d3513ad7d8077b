"""Model id -> deployment, with capability flags resolved model over provider."""

from __future__ import annotations

import random

import pytest

from gateway.config import OpenAIOptions, parse_config
from gateway.errors import ModelNotFound
from gateway.upstream.router import Plan, Router

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


# ------------------------------------------------------------------- route plans

ROUTED = parse_config(
    {
        "providers": {
            "openai": {"kind": "openai", "api_key": "sk-up"},
            "azure": {"kind": "openai", "base_url": "https://azure.example/v1"},
            "claude": {"kind": "anthropic"},
        },
        "models": {
            "chat": {
                "strategy": "weighted",
                "targets": [
                    {"model": "openai/gpt-4o-mini", "weight": 3},
                    {"model": "azure/gpt-4o-mini", "weight": 1},
                ],
                "fallbacks": ["claude-haiku", "openai/gpt-4o-mini"],
            },
            "claude-haiku": {"provider": "claude", "upstream_model": "claude-haiku-4-5"},
            "ordered": {"strategy": "priority", "targets": ["azure/a", "openai/b", "openai/c"]},
            "busy": {"strategy": "least-busy", "targets": ["openai/x", "openai/y"]},
            "fast": {"strategy": "latency", "targets": ["openai/x", "openai/y", "openai/z"]},
            "nested": {"strategy": "priority", "targets": ["ordered", "chat"]},
            "solo": {"targets": ["openai/gpt-4o"], "fallbacks": []},
        },
    },
    env={},
    source="t",
)


def ids(plan: Plan) -> list[str]:
    return [d.model_id for d in plan.deployments]


def test_weights_hold_over_a_thousand_plans() -> None:
    router = Router(ROUTED, rand=random.Random(7).random)
    firsts = [ids(router.plan("chat", 0.0))[0] for _ in range(1000)]
    assert abs(firsts.count("openai/gpt-4o-mini") / 1000 - 0.75) < 0.03


def test_a_plan_has_every_target_then_the_fallbacks_each_once() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    for _ in range(20):
        plan = ids(router.plan("chat", 0.0))
        assert sorted(plan[:2]) == ["azure/gpt-4o-mini", "openai/gpt-4o-mini"]
        assert plan[2:] == ["claude-haiku"]  # the repeated openai fallback is not tried twice


def test_priority_keeps_the_config_order_and_nested_models_are_spliced_in() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    assert ids(router.plan("ordered", 0.0)) == ["azure/a", "openai/b", "openai/c"]
    nested = ids(router.plan("nested", 0.0))
    assert nested[:3] == ["azure/a", "openai/b", "openai/c"]
    assert sorted(nested[3:5]) == ["azure/gpt-4o-mini", "openai/gpt-4o-mini"]
    assert nested[5:] == ["claude-haiku"]


def test_least_busy_goes_to_the_target_with_fewer_attempts_in_flight() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    router.load.started("openai/x")
    assert all(ids(router.plan("busy", 0.0)) == ["openai/y", "openai/x"] for _ in range(20))
    router.load.ended("openai/x")
    firsts = {ids(router.plan("busy", 0.0))[0] for _ in range(50)}
    assert firsts == {"openai/x", "openai/y"}  # a tie: spread by weight


def test_latency_tries_the_unmeasured_then_the_fastest() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    router.load.observe("openai/x", 0.5)
    router.load.observe("openai/y", 0.1)
    assert ids(router.plan("fast", 0.0)) == ["openai/z", "openai/y", "openai/x"]
    router.load.observe("openai/z", 2.0)
    router.load.observe("openai/z", 2.0)
    assert ids(router.plan("fast", 0.0)) == ["openai/y", "openai/x", "openai/z"]


def test_the_request_fallbacks_replace_the_configured_ones() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    plan = ids(router.plan("chat", 0.0, ["ordered", "claude/other"]))
    assert plan[2:] == ["azure/a", "openai/b", "openai/c", "claude/other"]
    with pytest.raises(ModelNotFound) as info:
        router.plan("chat", 0.0, ["claude-haiku", "nope"])
    assert info.value.param == "models[1]"


def test_ejected_deployments_are_left_out_but_never_all() -> None:
    router = Router(ROUTED, rand=random.Random(1).random)
    policy = ROUTED.routing
    router.health.failure("openai/b", 10.0, policy, retry_after_s=30)
    assert ids(router.plan("ordered", 11.0)) == ["azure/a", "openai/c"]
    router.health.failure("azure/a", 12.0, policy, retry_after_s=30)
    router.health.failure("openai/c", 13.0, policy, retry_after_s=30)
    assert ids(router.plan("ordered", 14.0)) == ["openai/b"]  # the least recently ejected
    assert ids(router.plan("ordered", 41.0)) == ["openai/b"]  # half-open again: its probe


def test_a_single_deployment_plan_is_precomputed() -> None:
    router = Router(ROUTED)
    route = router.route("solo")
    assert router.plan("solo", 0.0).deployments is route.single
    assert router.plan("claude-haiku", 0.0).deployments is router.route("claude-haiku").single
    dynamic = router.plan("openai/gpt-4.1", 0.0)
    assert ids(dynamic) == ["openai/gpt-4.1"] and dynamic.policy == ROUTED.routing


def test_routes_say_who_owns_them() -> None:
    router = Router(ROUTED)
    assert router.route("chat").owner == "gateway"
    assert router.route("claude-haiku").owner == "claude"
    assert router.resolve("chat").model_id in {"openai/gpt-4o-mini", "azure/gpt-4o-mini"}
