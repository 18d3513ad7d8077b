"""The routing part of the config: `[routing]`, a model's targets and fallbacks, and the
checks that every routable id exists and that no model reaches itself.

`[routing]` sets the defaults of every model; a `[models."ID"]` table may set any of
the same keys for itself (read by `read_routing` over the defaults). The shape is
documented in docs/configuration.md and docs/routing.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.config.model import (
    NEVER_RETRIED,
    RETRY_EVENTS,
    STRATEGIES,
    ModelConfig,
    ProviderConfig,
    RoutedModelConfig,
    RoutingConfig,
    Strategy,
    TargetConfig,
)
from gateway.config.reader import ConfigError, Table

MAX_ATTEMPTS = 10
MAX_TARGETS = 64


def _float_in(t: Table, key: str, lo: float, hi: float, *, open_lo: bool = False) -> Any:
    value = t.number(key, minimum=lo)
    if value is not None and (value > hi or (open_lo and value == lo)):
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise ConfigError(f"{t.at(key)}: must be {low} and <= {hi:g}")
    return value


def _retry_on(t: Table) -> dict[str, Any]:
    """`retry_on`: statuses and event names, as the RoutingConfig fields they set."""
    t.seen.add("retry_on")
    raw = t.data.get("retry_on")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{t.at('retry_on')}: expected a list of statuses and event names")
    statuses: set[int] = set()
    events: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{t.at('retry_on')}[{i}]"
        if isinstance(item, str):
            if item not in RETRY_EVENTS:
                raise ConfigError(f"{where}: must be a status or one of {', '.join(RETRY_EVENTS)}")
            events.add(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not 400 <= item <= 599:
                raise ConfigError(f"{where}: a status from 400 to 599")
            if item in NEVER_RETRIED:
                raise ConfigError(
                    f"{where}: {item} is an answer about the request itself, never retried"
                )
            statuses.add(item)
        else:
            raise ConfigError(f"{where}: expected a status or an event name")
    return {
        "retry_on_statuses": frozenset(statuses),
        "retry_on_connect": "connect" in events,
        "retry_on_first_byte_timeout": "first_byte_timeout" in events,
    }


def read_routing(t: Table, base: RoutingConfig) -> RoutingConfig:
    """`base` with the routing keys this table sets (`[routing]` or a model's table)."""
    read = {
        "max_attempts": t.integer("max_attempts", minimum=1, maximum=MAX_ATTEMPTS),
        "retry_after_send": t.flag("retry_after_send"),
        "retry_budget_ratio": _float_in(t, "retry_budget_ratio", 0, 1),
        "retry_budget_min_per_s": _float_in(t, "retry_budget_min_per_s", 0, 1000),
        "backoff_base_ms": _float_in(t, "backoff_base_ms", 0, 60_000),
        "max_retry_after_s": _float_in(t, "max_retry_after_s", 0, 3600),
        "cooldown_s": _float_in(t, "cooldown_s", 0, 86_400, open_lo=True),
        "cooldown_max_s": _float_in(t, "cooldown_max_s", 0, 86_400, open_lo=True),
        "eject_consecutive_failures": t.integer(
            "eject_consecutive_failures", minimum=1, maximum=1000
        ),
        "eject_failure_rate": _float_in(t, "eject_failure_rate", 0, 1, open_lo=True),
        "eject_min_requests": t.integer("eject_min_requests", minimum=1, maximum=1_000_000),
    }
    changes = {k: v for k, v in read.items() if v is not None}
    changes.update(_retry_on(t))
    routing = dataclasses.replace(base, **changes) if changes else base
    if routing.cooldown_max_s < routing.cooldown_s:
        raise ConfigError(f"{t.path or 'routing'}: cooldown_max_s must be >= cooldown_s")
    return routing


def read_fallbacks(t: Table) -> tuple[str, ...]:
    return t.str_list("fallbacks") or ()


def read_targets(t: Table) -> tuple[TargetConfig, ...]:
    """`targets`: tables `{ model = "ID", weight = W }`, or bare ids (weight 1)."""
    t.seen.add("targets")
    raw = t.data["targets"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{t.at('targets')}: expected a non-empty list of targets")
    if len(raw) > MAX_TARGETS:
        raise ConfigError(f"{t.at('targets')}: at most {MAX_TARGETS} targets")
    targets = []
    for i, item in enumerate(raw):
        where = f"{t.at('targets')}[{i}]"
        if isinstance(item, str) and item:
            targets.append(TargetConfig(item))
            continue
        tt = Table(item, where)
        model = tt.text("model", required=True)
        weight = tt.number("weight")
        if weight is not None and weight <= 0:
            raise ConfigError(f"{tt.at('weight')}: must be > 0")
        tt.done()
        targets.append(TargetConfig(model, 1.0 if weight is None else weight))
    ids = [target.model for target in targets]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{t.at('targets')}: a target is listed twice")
    return tuple(targets)


def read_routed_model(model_id: str, t: Table, defaults: RoutingConfig) -> RoutedModelConfig:
    """A `[models."ID"]` table with `targets`: a model served by several deployments."""
    strategy: Strategy | None = t.text("strategy", choices=STRATEGIES)
    m = RoutedModelConfig(
        id=model_id,
        targets=read_targets(t),
        strategy=strategy or "weighted",
        fallbacks=read_fallbacks(t),
        routing=read_routing(t, defaults),
    )
    for key in t.data:
        if key not in t.seen:
            raise ConfigError(
                f"{t.at(key)}: unknown key (a model with targets takes strategy, targets, "
                "fallbacks and routing keys; options and prices belong to its targets)"
            )
    return m


def check_routes(
    models: Mapping[str, ModelConfig],
    routed: Mapping[str, RoutedModelConfig],
    providers: Mapping[str, ProviderConfig],
) -> None:
    """Every target and fallback is routable, and no model reaches itself."""
    edges: dict[str, list[str]] = {}
    entries: list[ModelConfig | RoutedModelConfig] = [*models.values(), *routed.values()]
    for entry in entries:
        model_id = entry.id
        refs = [("fallbacks", f) for f in entry.fallbacks]
        if isinstance(entry, RoutedModelConfig):
            refs = [("targets", t.model) for t in entry.targets] + refs
        edges[model_id] = []
        for key, ref in refs:
            if ref in models or ref in routed:
                edges[model_id].append(ref)
                continue
            provider, sep, upstream = ref.partition("/")
            if not (sep and upstream and provider in providers):
                raise ConfigError(
                    f'models."{model_id}".{key}: {ref!r} is neither a [models] id nor '
                    "PROVIDER/MODEL with a configured provider"
                )
    cycle = _find_cycle(edges)
    if cycle:
        path = " -> ".join(f'models."{m}"' for m in cycle)
        raise ConfigError(f"routing cycle: {path} (a model must not reach itself)")


def _find_cycle(edges: Mapping[str, list[str]]) -> list[str]:
    """One cycle of the graph as a path that returns to its start, or []."""
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                path.append(node)
                on_path.add(node)
            nexts = edges.get(node, [])
            if i < len(nexts):
                stack.append((node, i + 1))
                nxt = nexts[i]
                if nxt in on_path:
                    return [*path[path.index(nxt) :], nxt]
                if nxt not in done:
                    stack.append((nxt, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)
    return []
