"""The client-facing contract: the Chat Completions request validator and the SSE codec.
Pure: no I/O."""
