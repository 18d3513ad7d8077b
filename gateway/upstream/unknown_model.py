"""The 404 for a model id that routes nowhere: what it may have meant, and where to look.

A newcomer who mistypes a model id (`gpt-4o-mnii`, `mock/gpt`) learns from the answer
which configured ids are closest, that `PROVIDER/MODEL` needs a configured provider,
and that `GET /v1/models` lists what their key can use. Only ids the caller may use
are suggested.

Pure module: no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Final

from gateway.errors import ModelNotFound

__all__ = ["model_not_found"]

MAX_SUGGESTED: Final = 3
MAX_COMPARED: Final = 200  # longer ids are not compared (the cost grows with the length)


def model_not_found(model_id: str, known: Iterable[str], providers: Iterable[str]) -> ModelNotFound:
    """ModelNotFound for `model_id`, suggesting the closest of `known` (configured ids
    the caller may use) and naming `providers` when a `PROVIDER/` prefix matches none."""
    shown = model_id if len(model_id) <= MAX_COMPARED else model_id[:MAX_COMPARED] + "..."
    parts = [f"The model '{shown}' does not exist or you do not have access to it."]
    if len(model_id) <= MAX_COMPARED:
        close = difflib.get_close_matches(model_id, list(known), n=MAX_SUGGESTED, cutoff=0.6)
        if close:
            parts.append("Did you mean " + " or ".join(f"'{m}'" for m in close) + "?")
    prefix, slash, _ = model_id.partition("/")
    names = sorted(providers)
    if slash and prefix not in names and names:
        parts.append(
            f"'{prefix}/...' names no configured provider (PROVIDER/MODEL ids work for: "
            f"{', '.join(names)})."
        )
    parts.append("GET /v1/models lists the models your key can use.")
    return ModelNotFound(" ".join(parts), param="model")
