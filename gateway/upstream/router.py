"""Model id -> route plan: the deployments one request may try, in order.

A `Deployment` is one upstream model at one provider. A configured `[models."ID"]` with
`provider` is one deployment; one with `targets` spreads over several (each any
routable id: PROVIDER/MODEL, or another `[models]` id whose own plan is spliced in).
An id of the form `PROVIDER/UPSTREAM_MODEL` routes to the configured provider PROVIDER
with that upstream model name, so any model of a configured provider is reachable
without a `[models]` entry, with the provider's options and prices. Configured ids win.

`Router.plan` orders a request's deployments: the model's targets by its strategy
(strategies.py), then its fallbacks (or the request's own `models` list, which replaces
them), each expanded the same way, every deployment once. Deployments ejected by
passive health (health.py) are left out, unless all are: then the least recently
ejected one is kept, so a model is never refused for want of a deployment. A model
that can only ever be one deployment has its plan precomputed: planning it is a dict
lookup.

The router holds the worker's routing state: health, load (for least-busy and latency)
and a retry budget per configured model. Config cycles were refused at load.

Pure module: no I/O; `now` and randomness come from the caller.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.config import Config, ModelConfig, ProviderConfig, RoutingConfig, Strategy
from gateway.errors import ModelNotFound
from gateway.providers.base import Deployment
from gateway.upstream.health import Health
from gateway.upstream.retry_budget import RetryBudget
from gateway.upstream.strategies import Load, Rand, order
from gateway.upstream.unknown_model import model_not_found

_MAX_DYNAMIC = 4096  # bound the cache of PROVIDER/MODEL routes


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


class Route:
    """A model id as the router plans it; built once from the config."""

    __slots__ = (
        "budget",
        "fallbacks",
        "id",
        "keys",
        "owner",
        "policy",
        "single",
        "strategy",
        "targets",
        "weights",
    )

    def __init__(
        self,
        model_id: str,
        owner: str,
        strategy: Strategy,
        policy: RoutingConfig,
        budget: RetryBudget,
    ) -> None:
        self.id = model_id
        self.owner = owner  # what /v1/models says owns it
        self.strategy = strategy
        self.policy = policy
        self.budget = budget
        self.targets: tuple[Route | Deployment, ...] = ()
        self.keys: tuple[str, ...] = ()
        self.weights: tuple[float, ...] = ()
        self.fallbacks: tuple[Route | Deployment, ...] = ()
        self.single: tuple[Deployment, ...] | None = None  # the plan, when it is always one

    def set_targets(
        self,
        targets: Sequence[Route | Deployment],
        weights: Sequence[float],
        fallbacks: Sequence[Route | Deployment],
    ) -> None:
        self.targets = tuple(targets)
        self.keys = tuple(t.id if isinstance(t, Route) else t.model_id for t in targets)
        self.weights = tuple(weights)
        self.fallbacks = tuple(fallbacks)
        if not fallbacks and len(targets) == 1:
            only = targets[0]
            self.single = only.single if isinstance(only, Route) else (only,)


class Plan:
    """One request's way: the deployments to try in order, under its model's policy."""

    __slots__ = ("budget", "deployments", "policy", "route")

    def __init__(self, route: Route, deployments: Sequence[Deployment]) -> None:
        self.route = route
        self.deployments = deployments
        self.policy = route.policy
        self.budget = route.budget


class Router:
    """Resolves model ids and plans requests; holds the worker's routing state."""

    def __init__(self, config: Config, rand: Rand = random.random) -> None:
        self._providers = config.providers
        self._config = config
        self._rand = rand
        self.health = Health()
        self.load = Load()
        default = config.routing
        self._default_budget = RetryBudget(
            default.retry_budget_ratio, default.retry_budget_min_per_s
        )
        self._routes: dict[str, Route] = {}
        self._dynamic: dict[str, Route] = {}
        for m in config.models.values():
            self._build(m.id)
        for r in config.routed.values():
            self._build(r.id)

    # -- building ------------------------------------------------------------------

    def _build(self, model_id: str) -> Route:
        """The route of a configured id, building the ones it refers to first."""
        route = self._routes.get(model_id)
        if route is not None:
            return route
        c = self._config
        m = c.models.get(model_id)
        if m is not None:
            policy = m.routing
            route = Route(model_id, m.provider, "priority", policy, self._budget_for(policy))
            dep = make_deployment(m.id, c.providers[m.provider], m.upstream_model, m)
            targets: list[Route | Deployment] = [dep]
            weights = [1.0]
        else:
            r = c.routed[model_id]
            policy = r.routing
            route = Route(model_id, "gateway", r.strategy, policy, self._budget_for(policy))
            targets = [self._target(t.model) for t in r.targets]
            weights = [t.weight for t in r.targets]
        fallbacks = [self._target(f) for f in (m or c.routed[model_id]).fallbacks]
        route.set_targets(targets, weights, fallbacks)
        self._routes[model_id] = route
        return route

    def _budget_for(self, policy: RoutingConfig) -> RetryBudget:
        return RetryBudget(policy.retry_budget_ratio, policy.retry_budget_min_per_s)

    def _target(self, ref: str) -> Route | Deployment:
        """A target or fallback: a configured route, or a PROVIDER/MODEL deployment."""
        if ref in self._config.models or ref in self._config.routed:
            return self._build(ref)
        return self._dynamic_route(ref).targets[0]

    def _dynamic_route(self, model_id: str) -> Route:
        route = self._dynamic.get(model_id)
        if route is not None:
            return route
        provider_name, sep, upstream = model_id.partition("/")
        provider = self._providers.get(provider_name) if sep else None
        if provider is None or not upstream:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist or you do not have access to it.",
                param="model",
            )
        route = Route(
            model_id, provider.name, "priority", self._config.routing, self._default_budget
        )
        route.set_targets([make_deployment(model_id, provider, upstream)], [1.0], [])
        if len(self._dynamic) >= _MAX_DYNAMIC:
            self._dynamic.clear()
        self._dynamic[model_id] = route
        return route

    # -- reading -------------------------------------------------------------------

    @property
    def configured(self) -> list[Route]:
        """The `[models]` entries, in config order (what /v1/models lists)."""
        return list(self._routes.values())

    def not_found(
        self, model_id: str, visible: Callable[[str], bool] | None = None, param: str = "model"
    ) -> ModelNotFound:
        """The 404 for `model_id` naming `param`, suggesting the closest configured ids
        that `visible` allows (the caller's scope; unknown_model.py)."""
        known = [m for m in self._routes if visible is None or visible(m)]
        error = model_not_found(model_id, known, self._providers)
        error.param = param
        return error

    def route(
        self, model_id: str, param: str = "model", visible: Callable[[str], bool] | None = None
    ) -> Route:
        """The route of `model_id`, or ModelNotFound naming `param` (`not_found`)."""
        route = self._routes.get(model_id) or self._dynamic.get(model_id)
        if route is not None:
            return route
        try:
            return self._dynamic_route(model_id)
        except ModelNotFound:
            raise self.not_found(model_id, visible, param) from None

    def resolve(self, model_id: str) -> Deployment:
        """The first deployment `model_id` is served by (its only one, mostly)."""
        route = self.route(model_id)
        first = route.targets[0]
        while isinstance(first, Route):
            first = first.targets[0]
        return first

    # -- planning ------------------------------------------------------------------

    def plan(
        self,
        model_id: str,
        now: float,
        fallbacks: Sequence[str] | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> Plan:
        """The deployments a request for `model_id` tries, in order. `fallbacks`: the
        request's own list (ids already checked against the key's scope), which
        replaces the model's configured fallbacks. `visible`: the ids a 404 may suggest."""
        route = self.route(model_id, visible=visible)
        if fallbacks is None and route.single is not None:
            return Plan(route, route.single)
        out: list[Deployment] = []
        seen: set[str] = set()
        if fallbacks is None:
            self._expand(route, out, seen, with_fallbacks=True)
        else:
            self._expand(route, out, seen, with_fallbacks=False)
            for i, ref in enumerate(fallbacks):
                self._add(self.route(ref, f"models[{i}]", visible), out, seen)
        health = self.health
        if len(health) and len(out) > 1:
            live = [d for d in out if health.available(d.model_id, now)]
            if not live:  # never all out: the least recently ejected one
                live = [min(out, key=lambda d: health.ejected_at(d.model_id))]
            out = live
        return Plan(route, out)

    def _expand(
        self, route: Route, out: list[Deployment], seen: set[str], *, with_fallbacks: bool
    ) -> None:
        targets = route.targets
        if len(targets) > 1:
            targets = tuple(
                order(route.strategy, targets, route.keys, route.weights, self.load, self._rand)
            )
        for target in targets:
            self._add(target, out, seen)
        if with_fallbacks:
            for fallback in route.fallbacks:
                self._add(fallback, out, seen)

    def _add(self, target: Route | Deployment, out: list[Deployment], seen: set[str]) -> None:
        if isinstance(target, Route):
            if target.single is not None:
                target = target.single[0]
            else:
                self._expand(target, out, seen, with_fallbacks=True)
                return
        if target.model_id not in seen:
            seen.add(target.model_id)
            out.append(target)
