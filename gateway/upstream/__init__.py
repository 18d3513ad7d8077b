"""Talking to upstreams: routing a model id to a deployment, the relay (deadlines,
retries, cancellation, translation), the transports (in-process, our h11 pool, httpx)
and the safe fetcher of remote media."""
