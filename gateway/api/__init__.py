"""HTTP endpoints: the ASGI plumbing and the chat route (hot, raw ASGI), and every
other route on Quart (models, health, admin)."""
