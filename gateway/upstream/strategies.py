"""How a routed model orders its targets for one request, and the load they are judged by.

Each strategy returns every target once, best first; the chain tries them in that order
(skipping the ejected), so the order is the failover order too:

- `weighted`: a random order drawn by weight without replacement: the first target is
  target i with probability w_i / sum(w), the next among the rest likewise.
- `least-busy`: fewest attempts in flight on this worker first (ties: by weight, at random).
- `latency`: lowest recent latency first (an exponentially weighted mean of the time to
  the response, or to a stream's first event); a target not measured yet goes first,
  so it gets measured.
- `priority`: the configured order.

`Load` holds what `least-busy` and `latency` read, per worker. Pure module: randomness
comes from the caller (`rand`, returning floats in [0, 1)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from gateway.config import Strategy

T = TypeVar("T")
Rand = Callable[[], float]
LATENCY_WEIGHT = 0.3  # of a new sample in the moving mean


class Load:
    """Attempts in flight and recent latency per deployment, on one worker."""

    __slots__ = ("inflight", "latency_s")

    def __init__(self) -> None:
        self.inflight: dict[str, int] = {}
        self.latency_s: dict[str, float] = {}

    def started(self, key: str) -> None:
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def ended(self, key: str) -> None:
        left = self.inflight.get(key, 1) - 1
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)

    def observe(self, key: str, seconds: float) -> None:
        """A latency sample of `key` (time to its response, or first streamed event)."""
        mean = self.latency_s.get(key)
        self.latency_s[key] = seconds if mean is None else mean + LATENCY_WEIGHT * (seconds - mean)


def weighted_order(items: Sequence[T], weights: Sequence[float], rand: Rand) -> list[T]:
    """`items` in a random order drawn by weight, without replacement."""
    if len(items) == 1:
        return [items[0]]
    pool = list(range(len(items)))
    left = [float(w) for w in weights]
    total = sum(left)
    out: list[T] = []
    while pool:
        x = rand() * total
        chosen = len(pool) - 1  # rounding: the last one
        for j, i in enumerate(pool):
            x -= left[i]
            if x < 0:
                chosen = j
                break
        i = pool.pop(chosen)
        total -= left[i]
        out.append(items[i])
    return out


def order(
    strategy: Strategy,
    items: Sequence[T],
    keys: Sequence[str],
    weights: Sequence[float],
    load: Load,
    rand: Rand,
) -> list[T]:
    """`items` (named `keys`, weighted `weights`) in the order `strategy` tries them."""
    if strategy == "priority" or len(items) == 1:
        return list(items)
    if strategy == "weighted":
        return weighted_order(items, weights, rand)
    # Break ties by weight, at random: draw a weighted order, then sort stably on load.
    drawn = weighted_order(list(range(len(items))), weights, rand)
    stat: Mapping[str, float] | Mapping[str, int]
    if strategy == "least-busy":
        stat = load.inflight
        drawn.sort(key=lambda i: stat.get(keys[i], 0))
    else:  # latency: unmeasured first
        stat = load.latency_s
        drawn.sort(key=lambda i: stat.get(keys[i], 0.0))
    return [items[i] for i in drawn]
