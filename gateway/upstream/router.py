"""Model id -> Deployment: which upstream serves a request and how it behaves.

Configured `[models."ID"]` entries win. Otherwise an id of the form
`PROVIDER/UPSTREAM_MODEL` routes to the configured provider PROVIDER with that
upstream model name, so any model of a configured provider is reachable without a
`[models]` entry, with the provider's options and prices.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import Config, ModelConfig, ProviderConfig
from gateway.errors import ModelNotFound
from gateway.providers.base import Deployment
from gateway.upstream.unknown_model import model_not_found

_MAX_DYNAMIC = 4096  # bound the cache of PROVIDER/MODEL deployments


def make_deployment(
    model_id: str,
    provider: ProviderConfig,
    upstream_model: str,
    model: ModelConfig | None = None,
) -> Deployment:
    """One model's effective settings: a configured model's (already merged over its
    provider's), or the provider's own for a `PROVIDER/MODEL` id."""
    return Deployment(
        model_id=model_id,
        provider_name=provider.name,
        kind=provider.kind,
        upstream_model=upstream_model,
        base_url=provider.base_url,
        api_key=provider.api_key,
        headers=provider.headers,
        options=model.options if model is not None else provider.options,
        max_output_tokens=model.max_output_tokens if model else provider.max_output_tokens,
        price=model.price if model is not None else provider.price,
    )


class Router:
    """Resolves model ids; built once from the config, then read-only but for a cache."""

    def __init__(self, config: Config) -> None:
        self._providers = config.providers
        self._configured: dict[str, Deployment] = {
            m.id: make_deployment(m.id, config.providers[m.provider], m.upstream_model, m)
            for m in config.models.values()
        }
        self._dynamic: dict[str, Deployment] = {}

    def not_found(
        self, model_id: str, visible: Callable[[str], bool] | None = None
    ) -> ModelNotFound:
        """The 404 for `model_id`, suggesting configured ids that `visible` allows."""
        known = [m for m in self._configured if visible is None or visible(m)]
        return model_not_found(model_id, known, self._providers)

    @property
    def configured(self) -> list[Deployment]:
        """The `[models]` entries, in config order (what /v1/models lists)."""
        return list(self._configured.values())

    def resolve(self, model_id: str, visible: Callable[[str], bool] | None = None) -> Deployment:
        """The deployment for `model_id`, or ModelNotFound suggesting the closest
        configured ids (those `visible` allows: the caller's scope)."""
        dep = self._configured.get(model_id) or self._dynamic.get(model_id)
        if dep is not None:
            return dep
        provider_name, sep, upstream = model_id.partition("/")
        provider = self._providers.get(provider_name) if sep else None
        if provider is None or not upstream:
            raise self.not_found(model_id, visible)
        dep = make_deployment(model_id, provider, upstream)
        if len(self._dynamic) >= _MAX_DYNAMIC:
            self._dynamic.clear()
        self._dynamic[model_id] = dep
        return dep
