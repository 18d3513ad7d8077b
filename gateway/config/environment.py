"""The environment variables through which `gateway serve` hands its choices to worker
processes. Constants only, so that the supervisor of `--workers N` can name them
without importing the app (docs/performance.md: a lean supervisor)."""

from __future__ import annotations

from typing import Final

CONFIG_ENV: Final = "GATEWAY_CONFIG"  # path of the TOML config, for worker processes
DEV_KEY_ENV: Final = "GATEWAY_DEV_KEY"  # the dev key of the embedded defaults
DEV_ADMIN_KEY_ENV: Final = "GATEWAY_DEV_ADMIN_KEY"  # their admin key (the console's login)
METRICS_DIR_ENV: Final = "GATEWAY_METRICS_DIR"  # where workers share metrics snapshots
