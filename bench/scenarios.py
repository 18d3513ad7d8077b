"""The kinds of request ``python -m bench compare`` measures, and the model names for them.

A scenario is one kind of chat completion (non-streamed, streamed at once, paced, paced
like a real model) made by directives in the fake upstream's model name. The targets
(`bench.targets`, `bench.peers`) serve every scenario, so their configs and
`Server.model_for` are built from here; `bench.compare` picks which scenarios run.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_SCENARIOS", "LLM_STREAMS", "SCENARIOS", "UPSTREAM_MODEL", "Scenario"]

UPSTREAM_MODEL = "fake-model"
STREAM_DIRECTIVES = "chunks=50"  # written at once by the fake
PACED_DIRECTIVES = "chunks=50&chunk_interval_ms=1"
# Four times the chunks of `paced`, each as lone: against `paced`, what one more relayed
# chunk costs, the request's own work cancelled out ((paced200 - paced) / 150).
PACED200_DIRECTIVES = "chunks=200&chunk_interval_ms=1"
# Like a real model: the first token after 300 ms, then one every 20-40 ms (30 +- 10,
# drawn per gap), 200-800 tokens (drawn per request).
# `stamp`: each token carries its send time, so the load generator measures how long
# every token took to arrive (`transit`), relays included, besides the gaps between them.
LLM_DIRECTIVES = (
    "ttft_ms=300&chunk_interval_ms=30&chunk_jitter_ms=10&chunks=200&chunks_max=800&stamp=1"
)
LLM_STREAMS = 1000  # paced-llm: concurrent streams, whatever --connections says


@dataclass(frozen=True)
class Scenario:
    """One kind of request: its name, whether it streams, how the fake answers it."""

    name: str
    stream: bool
    directives: str  # appended to the upstream model name after "@" ("" for none)
    gateway_model: str  # the model name clients send to a gateway
    connections: int | None = None  # a fixed count of connections (None: --connections)
    max_tokens: int | None = None  # the requests' max_tokens (None: the load generator's)

    @property
    def upstream_model(self) -> str:
        return UPSTREAM_MODEL + (f"@{self.directives}" if self.directives else "")


SCENARIOS = {
    "json": Scenario("json", False, "", "m"),
    "stream": Scenario("stream", True, STREAM_DIRECTIVES, "m-stream50"),
    "paced": Scenario("paced", True, PACED_DIRECTIVES, "m-paced50"),
    "paced200": Scenario("paced200", True, PACED200_DIRECTIVES, "m-paced200", max_tokens=1024),
    "paced-llm": Scenario(
        "paced-llm", True, LLM_DIRECTIVES, "m-paced-llm", LLM_STREAMS, max_tokens=1024
    ),
}
DEFAULT_SCENARIOS = ("json", "stream")
