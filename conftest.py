"""Settings for every test run from this checkout (tests/ and fuzz/).

Hypothesis keeps no example database here (`database=None`): a failing example saved
in a local `.hypothesis/` would be replayed first by every later run of the checkout,
and after a change to a property's strategy or to the code it could fail for a reason
the code no longer has, on one machine and not on another. A failure prints its
falsifying example and a `@reproduce_failure` blob instead; once understood, it becomes
an explicit `@example` or a file in `fuzz/corpus/`, where every run replays it
(docs/testing.md). `HYPOTHESIS_PROFILE=dev` brings the local database back while
hunting a bug.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("gateway", database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gateway"))
