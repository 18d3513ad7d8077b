"""This worker's metrics, and their Prometheus exposition for the whole gateway.

The hot path only adds to plain dicts (`Metrics.request`, `Metrics.attempt`: a few
dict updates and one bisect, ~2 us a request). prometheus-client's own multiprocess
values cost ~6 us per counter increment and ~10 us per histogram observation here (an
mmap write under a lock each; docs/performance.md), ~50 us for the dozen updates of
one request: too much on a path that costs ~700 us in all.

Across `--workers N` (a scrape that lands on any worker must report the whole
gateway): the parent makes a directory (`GATEWAY_METRICS_DIR`, removed when it
exits); every worker writes its totals there as one JSON file, `<pid>.json`, each
second and when it stops (`snapshot`, replaced atomically). A scrape merges the
scraping worker's live totals with every other file: counters and histograms summed
over all files (a worker that was restarted keeps its counts in its file, so totals
never go down), gauges over the files of live processes only (summed, or the max
where that is the meaning). Another worker's counts are at most a second old. With one
worker there is no directory and no file.

The exposition is prometheus-client's (`generate_latest`, OpenMetrics when asked):
this module only hands it metric families. Units and meanings follow the OpenTelemetry
GenAI semantic conventions where they name the measure (docs/operations.md).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gateway.config.environment import METRICS_DIR_ENV
from gateway.errors import BillingError, RateLimited
from gateway.observability.record import RequestRecord

DIR_ENV: Final = METRICS_DIR_ENV
SNAPSHOT_EVERY_S: Final = 1.0
MAX_MODELS: Final = 200  # model label values beyond the configured ids; then "other"
MAX_KEYS: Final = 10_000  # key label values, when per-key series are on; then "other"

# The OpenTelemetry GenAI conventions' advised boundaries (seconds).
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its name (without `_total`), labels and how workers merge."""

    name: str
    kind: Kind
    doc: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    merge: Literal["sum", "max"] = "sum"  # gauges: summed over live workers, or their max
    scale: float = 1.0  # the stored integer times this is the exposed value


FAMILIES: Final = (
    Family(
        "gateway_requests",
        "counter",
        "Requests answered, by model, provider and HTTP status (499: the client left first).",
        ("model", "provider", "status"),
    ),
    Family(
        "gateway_request_errors",
        "counter",
        "Requests that ended with an error, mid-stream ones included, by error code.",
        ("model", "provider", "code"),
    ),
    Family(
        "gateway_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its last byte (gen_ai.server.request.duration).",
        ("model", "provider"),
        DURATION_BUCKETS,
    ),
    Family(
        "gateway_time_to_first_token_seconds",
        "histogram",
        "Streams: time to the first body bytes (gen_ai.server.time_to_first_token).",
        ("model", "provider"),
        TTFT_BUCKETS,
    ),
    Family(
        "gateway_time_per_output_token_seconds",
        "histogram",
        "Streams: time per output token after the first (gen_ai.server.time_per_output_token).",
        ("model", "provider"),
        TPOT_BUCKETS,
    ),
    Family(
        "gateway_tokens",
        "counter",
        "Tokens used, by type: input, output, cached (of input; gen_ai.client.token.usage).",
        ("model", "provider", "type"),
    ),
    Family(
        "gateway_cost_usd",
        "counter",
        "What the requests cost at the configured prices, in US dollars.",
        ("model",),
        scale=1e-6,
    ),
    Family(
        "gateway_upstream_attempts",
        "counter",
        "Upstream attempts by deployment and outcome (ok, rate_limited, client_error, "
        "server_error, timeout, unreachable, error, cancelled).",
        ("deployment", "outcome"),
    ),
    Family(
        "gateway_rate_limited",
        "counter",
        "Requests refused by a key's limits: rpm, tpm (429), spend, credit (402).",
        ("limit",),
    ),
    Family(
        "gateway_key_requests",
        "counter",
        "Requests per key ([observability] metrics_per_key).",
        ("key_id", "key_name", "model"),
    ),
    Family(
        "gateway_key_tokens",
        "counter",
        "Tokens per key and type ([observability] metrics_per_key).",
        ("key_id", "key_name", "type"),
    ),
    Family(
        "gateway_key_cost_usd",
        "counter",
        "Cost per key in US dollars ([observability] metrics_per_key).",
        ("key_id", "key_name"),
        scale=1e-6,
    ),
    # Sampled from each worker's state every second and at each scrape.
    Family("gateway_in_flight_requests", "gauge", "Requests being served now."),
    Family(
        "gateway_shed_requests",
        "counter",
        "Requests refused with 503 overloaded by admission control ([server] max_in_flight, "
        "max_loop_busy_percent, max_loop_lag_ms).",
    ),
    Family(
        "gateway_event_loop_lag_seconds",
        "gauge",
        "The worst worker's event-loop lag at its last probe (with max_loop_lag_ms set).",
        merge="max",
    ),
    Family(
        "gateway_event_loop_busy_ratio",
        "gauge",
        "The busiest worker's share of wall time running tasks rather than waiting for I/O,"
        " over its last probe interval (with max_loop_busy_percent set).",
        merge="max",
    ),
    Family(
        "gateway_ledger_backlog_rows",
        "gauge",
        "Usage rows journaled but not yet in SQLite.",
    ),
    Family(
        "gateway_ledger_flush_failures",
        "counter",
        "Failed ledger flushes (their rows stay journaled and are retried).",
    ),
    Family(
        "gateway_limits_store_errors",
        "counter",
        "Failed or timed-out calls to the limits store (Redis).",
    ),
    Family(
        "gateway_limits_fail_open",
        "counter",
        "Requests admitted without their rate limits: the limits store was unreachable.",
    ),
    Family(
        "gateway_limits_fail_closed",
        "counter",
        "Requests refused (503) for a budgeted key: the limits store was unreachable.",
    ),
    Family(
        "gateway_limits_breaker_open",
        "gauge",
        "1 while a worker's breaker in front of the limits store is open.",
        merge="max",
    ),
    Family(
        "gateway_limits_reconcile_windows",
        "gauge",
        "Keys whose budget, seeded under traffic, is still being reconciled with the ledger.",
    ),
    Family(
        "gateway_upstream_connections",
        "gauge",
        "Pooled upstream connections by provider and state (busy, idle).",
        ("provider", "state"),
    ),
)
BY_NAME: Final = {f.name: f for f in FAMILIES}
SAMPLED: Final = frozenset(
    {
        "gateway_in_flight_requests",
        "gateway_shed_requests",
        "gateway_event_loop_lag_seconds",
        "gateway_ledger_backlog_rows",
        "gateway_ledger_flush_failures",
        "gateway_limits_store_errors",
        "gateway_limits_fail_open",
        "gateway_limits_fail_closed",
        "gateway_limits_breaker_open",
        "gateway_limits_reconcile_windows",
        "gateway_upstream_connections",
    }
)
_LIMIT_OF_CODE: Final = {"spend_limit_exceeded": "spend", "insufficient_quota": "credit"}

Labels = tuple[str, ...]
Histo = list[float]  # counts per bucket (the last one: +Inf), then the sum


def _histo(buckets: Sequence[float]) -> Histo:
    return [0.0] * (len(buckets) + 2)


class Metrics:
    """One worker's totals since it started, updated at the end of each request."""

    def __init__(self, configured_models: Iterable[str] = (), *, per_key: bool = False) -> None:
        self.per_key = per_key
        self.values: dict[str, dict[Labels, Any]] = {f.name: {} for f in FAMILIES}
        self._models: set[str] = set(configured_models)
        self._dynamic = 0
        self._keys: set[tuple[str, str]] = set()
        v = self.values
        self._requests = v["gateway_requests"]
        self._errors = v["gateway_request_errors"]
        self._duration = v["gateway_request_duration_seconds"]
        self._ttft = v["gateway_time_to_first_token_seconds"]
        self._tpot = v["gateway_time_per_output_token_seconds"]
        self._tokens = v["gateway_tokens"]
        self._cost = v["gateway_cost_usd"]
        self._attempts = v["gateway_upstream_attempts"]
        self._limited = v["gateway_rate_limited"]

    def configure(self, configured_models: Iterable[str]) -> None:
        """The configured model ids (each always gets its own label value)."""
        self._models.update(configured_models)

    def _model_label(self, model: str) -> str:
        """The model's label value: bounded, so clients naming models cannot grow the
        series without limit (`PROVIDER/...` ids are open-ended)."""
        if not model or model in self._models:
            return model
        if self._dynamic >= MAX_MODELS:
            return "other"
        self._models.add(model)
        self._dynamic += 1
        return model

    def request(self, r: RequestRecord) -> None:
        """Count one ended request (its record is complete)."""
        model = self._model_label(r.model)
        provider = r.provider
        key = (model, provider, str(r.status))
        self._requests[key] = self._requests.get(key, 0) + 1
        code = r.error_code
        if code is not None:
            key = (model, provider, code)
            self._errors[key] = self._errors.get(key, 0) + 1
            error = r.error
            if isinstance(error, RateLimited) and error.limits:
                for limit in error.limits:
                    self._limited[(limit,)] = self._limited.get((limit,), 0) + 1
            elif isinstance(error, BillingError) and code in _LIMIT_OF_CODE:
                limit_key = (_LIMIT_OF_CODE[code],)
                self._limited[limit_key] = self._limited.get(limit_key, 0) + 1
        if not model:  # refused before a model was resolved: counted above only
            return
        pair = (model, provider)
        latency = r.ended - r.started
        _observe(self._duration, pair, DURATION_BUCKETS, latency)
        if r.first_byte is not None:
            first = r.first_byte - r.started
            _observe(self._ttft, pair, TTFT_BUCKETS, first)
            if r.completion_tokens > 1:
                tpot = (latency - first) / (r.completion_tokens - 1)
                _observe(self._tpot, pair, TPOT_BUCKETS, tpot)
        tokens = self._tokens
        for kind, n in (
            ("input", r.prompt_tokens),
            ("output", r.completion_tokens),
            ("cached", r.cached_tokens),
        ):
            if n:
                key = (model, provider, kind)
                tokens[key] = tokens.get(key, 0) + n
        if r.cost_micros:
            self._cost[(model,)] = self._cost.get((model,), 0) + r.cost_micros
        if self.per_key and r.key_name is not None:
            self._per_key(r, model)

    def _per_key(self, r: RequestRecord, model: str) -> None:
        who = (r.key_id or "", r.key_name or "")
        if who not in self._keys:
            if len(self._keys) >= MAX_KEYS:
                who = ("other", "other")
            else:
                self._keys.add(who)
        v = self.values
        requests = v["gateway_key_requests"]
        requests[(*who, model)] = requests.get((*who, model), 0) + 1
        tokens = v["gateway_key_tokens"]
        for kind, n in (("input", r.prompt_tokens), ("output", r.completion_tokens)):
            if n:
                tokens[(*who, kind)] = tokens.get((*who, kind), 0) + n
        cost = v["gateway_key_cost_usd"]
        cost[who] = cost.get(who, 0) + r.cost_micros

    def attempt(self, deployment: str, outcome: str) -> None:
        key = (deployment, outcome)
        self._attempts[key] = self._attempts.get(key, 0) + 1

    def sample(self, name: str, value: float, labels: Labels = ()) -> None:
        """Set a sampled value (a gauge, or a counter the worker keeps itself)."""
        self.values[name][labels] = value

    def clear_gauges(self) -> None:
        for family in FAMILIES:
            if family.kind == "gauge":
                self.values[family.name].clear()

    def snapshot(self) -> dict[str, Any]:
        """The totals as JSON-ready data (histograms as lists)."""
        return {
            "pid": os.getpid(),
            "values": {
                name: [[*labels, value] for labels, value in series.items()]
                for name, series in self.values.items()
                if series
            },
        }


def _observe(series: dict[Labels, Histo], key: Labels, bounds: Sequence[float], x: float) -> None:
    h = series.get(key)
    if h is None:
        h = series[key] = _histo(bounds)
    h[bisect_left(bounds, x)] += 1
    h[-1] += x


# ------------------------------------------------------------------ across workers


def write_snapshot(directory: Path, snapshot: Mapping[str, Any]) -> None:
    """This worker's file, replaced atomically (a reader never sees half of it)."""
    pid = snapshot["pid"]
    tmp = directory / f"{pid}.json.tmp"
    tmp.write_bytes(orjson.dumps(snapshot))
    os.replace(tmp, directory / f"{pid}.json")


def read_snapshots(directory: Path, skip_pid: int) -> list[dict[str, Any]]:
    """Every other worker's last file; unreadable ones are skipped."""
    out = []
    for path in directory.glob("*.json"):
        if path.stem == str(skip_pid):
            continue
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            out.append(data)
    return out


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, dict[Labels, Any]]:
    """Totals over workers: counters and histograms summed over all, gauges over the
    live ones (summed, or their max)."""
    merged: dict[str, dict[Labels, Any]] = {f.name: {} for f in FAMILIES}
    for snap in snapshots:
        live: bool | None = None
        for name, rows in snap["values"].items():
            family = BY_NAME.get(name)
            if family is None:
                continue
            if family.kind == "gauge":
                if live is None:
                    live = snap["pid"] == os.getpid() or _alive(snap["pid"])
                if not live:
                    continue
            width = len(family.labels)
            into = merged[name]
            for row in rows:
                labels, value = tuple(row[:width]), row[width]
                prev = into.get(labels)
                if prev is None:
                    into[labels] = list(value) if family.kind == "histogram" else value
                elif family.kind == "histogram":
                    into[labels] = [a + b for a, b in zip(prev, value, strict=True)]
                elif family.merge == "max":
                    into[labels] = max(prev, value)
                else:
                    into[labels] = prev + value
    return merged


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(float(b))


def families(merged: Mapping[str, Mapping[Labels, Any]]) -> Iterator[Metric]:
    """Prometheus metric families of merged totals (sampled ones only where present)."""
    for f in FAMILIES:
        series = merged.get(f.name, {})
        labels = list(f.labels)
        metric: Metric
        if f.kind == "histogram":
            metric = HistogramMetricFamily(f.name, f.doc, labels=labels)
            for key, h in sorted(series.items()):
                cumulative = []
                total = 0.0
                for bound, count in zip((*f.buckets, float("inf")), h[:-1], strict=True):
                    total += count
                    cumulative.append((_bound(bound), total))
                metric.add_metric(list(key), cumulative, h[-1])
        elif f.kind == "counter":
            metric = CounterMetricFamily(f.name, f.doc, labels=labels)
            for key, value in sorted(series.items()):
                metric.add_metric(list(key), value * f.scale)
        else:
            metric = GaugeMetricFamily(f.name, f.doc, labels=labels)
            for key, value in sorted(series.items()):
                metric.add_metric(list(key), value * f.scale)
        yield metric


class _Families(Collector):
    def __init__(self, merged: Mapping[str, Mapping[Labels, Any]]) -> None:
        self._merged = merged

    def collect(self) -> Iterable[Metric]:
        return families(self._merged)


def render(merged: Mapping[str, Mapping[Labels, Any]], accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of a scrape: the Prometheus text format, or OpenMetrics when
    the scraper's Accept header asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Families(merged)), content_type
