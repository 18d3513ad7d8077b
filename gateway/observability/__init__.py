"""What an operator sees of the gateway: request ids, logs, metrics and traces.

record.py holds one request's facts (`RequestRecord`, the current one in a context
variable) and the request id; logs.py the log formats and the access line; metrics.py
this worker's counters and their exposition across workers; traces.py the tracer
(a no-op unless `[observability] traces` is on, then otel.py); observer.py ties them
to the start and end of a request and of each upstream attempt.

Low in the import graph: it knows no route, provider or store, only what the routes
put in a `RequestRecord`.
"""
