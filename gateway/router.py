"""Model id -> Deployment: which upstream serves a request and how it behaves.

Configured `[models."ID"]` entries win. Otherwise an id of the form
`PROVIDER/UPSTREAM_MODEL` routes to the configured provider PROVIDER with that
upstream model name, so any model of a configured provider is reachable without a
`[models]` entry. Capability flags are resolved once here: the model's flags over
the provider's over the built-in defaults.

Pure module: no I/O.
"""

from __future__ import annotations

from gateway.config import Capabilities, Config, ProviderConfig
from gateway.errors import ModelNotFound
from gateway.providers.base import Deployment
from gateway.spend import Price

_MAX_DYNAMIC = 4096  # bound the cache of PROVIDER/MODEL deployments


def make_deployment(
    model_id: str, provider: ProviderConfig, upstream_model: str, caps: Capabilities
) -> Deployment:
    """Resolve one model's effective settings from its own flags and its provider's."""
    eff = caps.over(provider.caps)
    return Deployment(
        model_id=model_id,
        provider_name=provider.name,
        kind=provider.kind,
        upstream_model=upstream_model,
        base_url=provider.base_url,
        api_key=provider.api_key,
        developer_role=eff.developer_role if eff.developer_role is not None else True,
        max_tokens_field=eff.max_tokens_field,
        stream_usage=eff.stream_usage if eff.stream_usage is not None else True,
        headers=provider.headers,
        options=eff.options(),
        price=Price(
            input_per_mtok=eff.price_input_per_mtok or 0.0,
            cached_input_per_mtok=eff.price_cached_input_per_mtok,
            output_per_mtok=eff.price_output_per_mtok or 0.0,
        ),
    )


class Router:
    """Resolves model ids; built once from the config, then read-only but for a cache."""

    def __init__(self, config: Config) -> None:
        self._providers = config.providers
        self._configured: dict[str, Deployment] = {
            m.id: make_deployment(m.id, config.providers[m.provider], m.upstream_model, m.caps)
            for m in config.models.values()
        }
        self._dynamic: dict[str, Deployment] = {}

    @property
    def configured(self) -> list[Deployment]:
        """The `[models]` entries, in config order (what /v1/models lists)."""
        return list(self._configured.values())

    def resolve(self, model_id: str) -> Deployment:
        """The deployment for `model_id`, or ModelNotFound."""
        dep = self._configured.get(model_id) or self._dynamic.get(model_id)
        if dep is not None:
            return dep
        provider_name, sep, upstream = model_id.partition("/")
        provider = self._providers.get(provider_name) if sep else None
        if provider is None or not upstream:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist or you do not have access to it.",
                param="model",
            )
        dep = make_deployment(model_id, provider, upstream, Capabilities())
        if len(self._dynamic) >= _MAX_DYNAMIC:
            self._dynamic.clear()
        self._dynamic[model_id] = dep
        return dep
