"""The operator's commands besides `serve`: `gateway keys ...` (and more to come).

Each command works on the stores directly, in its own process; a running gateway
picks the changes up through its key cache refresher.
"""
