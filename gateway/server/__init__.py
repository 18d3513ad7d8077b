"""The built-in HTTP/1.1 server: the wire format (pure), connections, worker processes.

It speaks HTTP/1.1 and ASGI and knows nothing else of the gateway: it imports only
`gateway.errors`, for the shape of the few errors it answers itself."""
