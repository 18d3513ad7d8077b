"""The paced-llm figures of ``python -m bench compare``: per 1,000 tokens, not per request.

A paced-llm run holds many long streams (200-800 tokens, 20-40 ms apart), so requests per
second says little; what a gateway costs there is its CPU per 1,000 streamed tokens, its
memory while holding the streams, and the inter-token latency it adds over the upstream
itself (``direct``, measured in the same block). The gaps between tokens (ITL) move with
the load generator's own delays; each token also carries its send time (the fake's
`stamp`), so its transit, arrival minus send, is measured too: the gateway's added
latency per token is its transit over direct's, without the gaps' noise.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["format_llm_table", "llm_figures"]

SCENARIO = "paced-llm"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def llm_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one group: CPU per 1,000 output tokens, inter-token
    latency p50/p99, output tokens per run; and the largest RSS at a run's end."""
    per_ktok = [
        r["server_cpu_s"] / r["output_tokens"] * 1000
        for r in runs
        if r.get("output_tokens") and r.get("server_cpu_s") is not None
    ]
    return {
        "cpu_per_ktok_s": _median(per_ktok),
        "itl_p50_s": _median([r["itl_p50_s"] for r in runs if r.get("itl_p50_s") is not None]),
        "itl_p99_s": _median([r["itl_p99_s"] for r in runs if r.get("itl_p99_s") is not None]),
        "transit_p50_s": _median(
            [r["transit_p50_s"] for r in runs if r.get("transit_p50_s") is not None]
        ),
        "transit_p99_s": _median(
            [r["transit_p99_s"] for r in runs if r.get("transit_p99_s") is not None]
        ),
        "output_tokens": _median([r.get("output_tokens") or 0 for r in runs]),
        "rss_bytes": max((r.get("rss_bytes") or 0 for r in runs), default=0),
    }


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:+.2f}" if signed else f"{value * 1000:.2f}"


def format_llm_table(rows: list[dict[str, Any]]) -> str:
    """The paced-llm rows (empty when there are none), with the added ITL over direct."""
    mine = [r for r in rows if r["scenario"] == SCENARIO]
    if not mine:
        return ""
    direct = {r.get("workers", 1): r for r in mine if r["target"] == "direct"}
    head = (
        f"{'streams':>7} {'workers':>7} {'target':<9} {'tokens/run':>10} {'CPU/1k tok ms':>13} "
        f"{'ITL p50 ms':>10} {'ITL p99 ms':>10} {'+ITL p99 ms':>11} {'transit p50':>11} "
        f"{'transit p99':>11} {'+transit p99':>12} {'RSS MB':>7} {'peak RSS MB':>11} {'failed':>6}"
    )
    out = [
        "paced-llm: first token after 300 ms, then 200-800 tokens 20-40 ms apart",
        head,
        "-" * len(head),
    ]
    for r in mine:
        base = direct.get(r.get("workers", 1))
        added = added_transit = None
        if r["target"] != "direct" and base and base["itl_p99_s"] is not None:
            added = r["itl_p99_s"] - base["itl_p99_s"] if r["itl_p99_s"] is not None else None
        mine_t, base_t = r.get("transit_p99_s"), base.get("transit_p99_s") if base else None
        if r["target"] != "direct" and mine_t is not None and base_t is not None:
            added_transit = mine_t - base_t
        out.append(
            f"{r['connections']:>7} {r.get('workers', 1):>7} {r['target']:<9} "
            f"{r['output_tokens'] or 0:>10,.0f} {_ms(r['cpu_per_ktok_s']):>13} "
            f"{_ms(r['itl_p50_s']):>10} {_ms(r['itl_p99_s']):>10} {_ms(added, True):>11} "
            f"{_ms(r.get('transit_p50_s')):>11} {_ms(mine_t):>11} "
            f"{_ms(added_transit, True):>12} "
            f"{r['rss_bytes'] / 2**20:>7.1f} {r['peak_rss_bytes'] / 2**20:>11.1f} "
            f"{r['failed']:>6}"
        )
    return "\n".join(out)
