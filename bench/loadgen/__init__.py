"""The load generator behind ``python -m bench load``: client, schedulers, figures, reports.

from bench.loadgen import LoadConfig, run_load
result = await run_load(LoadConfig(url="http://127.0.0.1:8080/v1", model="m",
                                   concurrency=16, duration_s=10))
print(format_report(result))
"""

from bench.loadgen.metrics import Distribution, RequestRecord, Summary, percentile, summarize
from bench.loadgen.report import format_report, plot, to_document, write_json
from bench.loadgen.runner import LoadConfig, LoadResult, LoadRun, Progress, run_load

__all__ = [
    "Distribution",
    "LoadConfig",
    "LoadResult",
    "LoadRun",
    "Progress",
    "RequestRecord",
    "Summary",
    "format_report",
    "percentile",
    "plot",
    "run_load",
    "summarize",
    "to_document",
    "write_json",
]
