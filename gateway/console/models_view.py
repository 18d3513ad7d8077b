"""The Models page's rows: what a person chooses a model on, and how it is doing.

Built from the router's configured routes (what /v1/models lists, in its order), the
providers' capabilities, and the live health: the gateway's metrics (every worker's,
as /metrics merges them) over the last minutes, and the deployments this worker's
passive health has in cooldown.

"The last minutes": the metrics are totals since start, so `HealthWindow` keeps a
sample of the per-model totals every `SAMPLE_EVERY_S` and the page shows what
changed since the oldest sample within `WINDOW_S` (since the start, in a gateway up
for less than that), saying over how long.

Pure module: no I/O; times come from the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.config import Config, Price
from gateway.providers.base import Capabilities, Deployment
from gateway.upstream.router import Route

WINDOW_S: Final = 300.0
SAMPLE_EVERY_S: Final = 30.0

Totals = dict[str, "ModelTotals"]


@dataclass(slots=True)
class ModelTotals:
    """One model's counts: requests, errors, and the duration and TTFT histograms
    (counts per bucket, +Inf last, then the sum)."""

    requests: int = 0
    errors: int = 0
    duration: list[float] = field(default_factory=list)  # empty: none seen
    ttft: list[float] = field(default_factory=list)

    def minus(self, old: ModelTotals) -> ModelTotals:
        return ModelTotals(
            self.requests - old.requests,
            self.errors - old.errors,
            _minus(self.duration, old.duration),
            _minus(self.ttft, old.ttft),
        )


def _minus(new: list[float], old: list[float]) -> list[float]:
    if not old:
        return list(new)
    return [a - b for a, b in zip(new, old, strict=True)]


def model_totals(merged: Mapping[str, Mapping[tuple[str, ...], Any]]) -> Totals:
    """Per-model totals from merged metrics (observability/metrics.py `merge`)."""
    out: Totals = {}

    def of(model: str) -> ModelTotals:
        t = out.get(model)
        if t is None:
            t = out[model] = ModelTotals()
        return t

    for (model, _provider, _status), n in merged.get("gateway_requests", {}).items():
        if model:
            of(model).requests += int(n)
    for (model, _provider, _code), n in merged.get("gateway_request_errors", {}).items():
        if model:
            of(model).errors += int(n)
    for name, attr in (
        ("gateway_request_duration_seconds", "duration"),
        ("gateway_time_to_first_token_seconds", "ttft"),
    ):
        for (model, _provider), h in merged.get(name, {}).items():
            into = getattr(of(model), attr)
            if not into:
                into.extend([0.0] * len(h))
            for i, x in enumerate(h):
                into[i] += x
    return out


def quantile(h: Sequence[float], bounds: Sequence[float], q: float) -> float | None:
    """The `q` quantile of a histogram (counts per bucket, +Inf, sum), interpolated
    within its bucket as Prometheus' histogram_quantile does; None when empty."""
    counts = h[:-1]
    total = sum(counts) if h else 0
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(counts):
        if seen + n >= rank and n > 0:
            if i >= len(bounds):  # the +Inf bucket: the highest finite bound
                return bounds[-1]
            low = 0.0 if i == 0 else bounds[i - 1]
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]


class HealthWindow:
    """Samples of per-model totals over the last `WINDOW_S` (oldest first)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self._samples: deque[tuple[float, Totals]] = deque()

    def add(self, now: float, totals: Totals) -> None:
        if self._samples and now - self._samples[-1][0] < SAMPLE_EVERY_S / 2:
            return
        self._samples.append((now, totals))
        while len(self._samples) > 1 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()

    def since(self, now: float, totals: Totals) -> tuple[float, Totals]:
        """(seconds covered, per-model changes over them)."""
        base: Totals = {}
        at = self.started
        for t, sample in self._samples:
            if now - t <= WINDOW_S:
                base, at = sample, t
                break
        empty = ModelTotals()
        return now - at, {m: t.minus(base.get(m, empty)) for m, t in totals.items()}


@dataclass(frozen=True, slots=True)
class Live:
    """A model's health over the window."""

    requests: int
    error_rate: float | None
    p50_s: float | None
    ttft_p50_s: float | None


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment a model may be served by (target or fallback)."""

    model_id: str
    provider: str
    kind: str
    upstream_model: str
    price: Price
    max_output_tokens: int | None
    capabilities: Capabilities
    cooling: bool  # ejected by passive health now (this worker)
    weight: float | None = None  # among targets


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: str
    owner: str  # the provider's name, or "gateway" for a routed model
    strategy: str | None  # for a model with several targets
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...]
    live: Live

    @property
    def first(self) -> Target:
        return self.targets[0]

    def price(self, which: str) -> str:
        """A price of the model per million tokens ("input", "cached" or "output"):
        its targets' range when they differ."""
        values = sorted({_price(t.price, which) for t in self.targets})
        if len(values) == 1:
            return per_mtok(values[0])
        return f"{per_mtok(values[0])} to {per_mtok(values[-1])}"

    @property
    def capabilities(self) -> Capabilities:
        """What every target carries: a request may reach any of them."""
        caps = [t.capabilities for t in self.targets]
        modes = {c.json_schema for c in caps}
        return Capabilities(
            streaming=all(c.streaming for c in caps),
            tools=all(c.tools for c in caps),
            vision=all(c.vision for c in caps),
            audio=all(c.audio for c in caps),
            files=all(c.files for c in caps),
            json_schema=modes.pop() if len(modes) == 1 else "mixed",
        )

    @property
    def max_output(self) -> str:
        caps = {t.max_output_tokens for t in self.targets}
        known = sorted(c for c in caps if c is not None)
        if not known:
            return "—"
        if None in caps or len(known) > 1:
            return f"up to {known[-1]:,}"
        return f"{known[0]:,}"

    @property
    def cooling(self) -> list[str]:
        return [t.model_id for t in self.targets if t.cooling]

    @property
    def search(self) -> str:
        """What the filter box matches against."""
        words = [self.id, self.owner, *(f"{t.provider} {t.upstream_model}" for t in self.targets)]
        return " ".join(words).lower()


def _price(price: Price, which: str) -> float:
    if which == "input":
        return price.input_per_mtok
    if which == "output":
        return price.output_per_mtok
    cached = price.cached_input_per_mtok
    return price.input_per_mtok if cached is None else cached


def _deployments(target: Route | Deployment) -> list[tuple[Deployment, float | None]]:
    if isinstance(target, Deployment):
        return [(target, None)]
    if len(target.targets) == 1 and not isinstance(target.targets[0], Route):
        return [(target.targets[0], None)]
    out: list[tuple[Deployment, float | None]] = []
    for t in target.targets:
        out.extend(_deployments(t))
    return out


def model_rows(
    routes: Iterable[Route],
    capabilities: Callable[[Deployment], Capabilities],
    cooling: Callable[[str], bool],
    changes: Totals,
    bounds: tuple[Sequence[float], Sequence[float]],
) -> list[ModelRow]:
    """One row per configured model, in config order. `bounds`: the duration and TTFT
    histograms' bucket bounds (observability/metrics.py)."""
    rows = []
    for route in routes:
        targets: list[Target] = []
        for i, t in enumerate(route.targets):
            weight = route.weights[i] if len(route.targets) > 1 else None
            for dep, _ in _deployments(t):
                targets.append(
                    Target(
                        model_id=dep.model_id,
                        provider=dep.provider_name,
                        kind=dep.kind,
                        upstream_model=dep.upstream_model,
                        price=dep.price,
                        max_output_tokens=dep.max_output_tokens,
                        capabilities=capabilities(dep),
                        cooling=cooling(dep.model_id),
                        weight=weight,
                    )
                )
        fallbacks = tuple(f.id if isinstance(f, Route) else f.model_id for f in route.fallbacks)
        seen = changes.get(route.id) or ModelTotals()
        live = Live(
            requests=seen.requests,
            error_rate=seen.errors / seen.requests if seen.requests else None,
            p50_s=quantile(seen.duration, bounds[0], 0.5),
            ttft_p50_s=quantile(seen.ttft, bounds[1], 0.5),
        )
        strategy = route.strategy if len(route.targets) > 1 else None
        rows.append(ModelRow(route.id, route.owner, strategy, tuple(targets), fallbacks, live))
    return rows


def groups(rows: Sequence[ModelRow], config: Config) -> list[tuple[str, str, list[ModelRow]]]:
    """Rows grouped by provider, in order of first appearance: (name, kind, rows);
    routed models (several targets) under "routed"."""
    out: dict[str, list[ModelRow]] = {}
    for row in rows:
        out.setdefault(row.owner, []).append(row)
    named: list[tuple[str, str, list[ModelRow]]] = []
    for owner, members in out.items():
        provider = config.providers.get(owner)
        kind = provider.kind if provider is not None else "routed"
        named.append((owner if provider is not None else "routed", kind, members))
    return named


def per_mtok(usd: float | None) -> str:
    """A price per million tokens for people."""
    if usd is None:
        return "—"
    if usd == 0:
        return "free"
    return f"${usd:,.2f}" if usd >= 0.1 else f"${usd:,.4f}"


def seconds(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
