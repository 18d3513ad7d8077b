"""App factory: builds the gateway's state once and the ASGI app that serves it.

`Gateway` holds everything a request needs (config, router, authenticator, one
relay per provider). `GatewayApp` is the ASGI entry: the hot route goes straight to
`routes.chat_completions`; every other request, and the lifespan, goes to Quart,
whose `after_serving` closes the upstream clients.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from quart_trio import QuartTrio

from gateway.asgi import Receive, Scope, Send, send_error
from gateway.auth import Authenticator, StaticKeyStore
from gateway.config import Config, embedded_config, load_config
from gateway.errors import MethodNotAllowed
from gateway.fetch import MediaFetcher
from gateway.providers.registry import provider_for
from gateway.relay import Relay, Timeouts, make_transport
from gateway.router import Router
from gateway.routes import chat_completions, make_quart_app

CHAT_PATH = "/v1/chat/completions"
CONFIG_ENV = "GATEWAY_CONFIG"  # path of the TOML config, for worker processes
DEV_KEY_ENV = "GATEWAY_DEV_KEY"  # the dev key of the embedded defaults
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class Gateway:
    """The state shared by every request of one worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(config)
        self.auth = Authenticator([StaticKeyStore(config.keys)])
        self.relays: dict[str, Relay] = {}
        for name, p in config.providers.items():
            provider = provider_for(p.kind)
            self.relays[name] = Relay(make_transport(p, provider), Timeouts.of(p), provider)
        self.fetcher = MediaFetcher(config.media)
        self.ready = False

    async def aclose(self) -> None:
        for relay in self.relays.values():
            await relay.transport.aclose()
        await self.fetcher.aclose()


class GatewayApp:
    """ASGI entry: the hot route in raw ASGI, everything else through Quart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.quart: QuartTrio = make_quart_app(gateway)
        self._quart_asgi: Any = self.quart  # Quart types its ASGI arguments narrowly

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH:
            if scope["method"] == "POST":
                await chat_completions(self.gateway, scope, receive, send)
            else:
                error = MethodNotAllowed(f"Method {scope['method']} is not allowed on {CHAT_PATH}.")
                await send_error(send, error, [(b"allow", b"POST")])
            return
        await self._quart_asgi(scope, receive, send)


def create_app(config: Config) -> GatewayApp:
    return GatewayApp(Gateway(config))


def setup_logging() -> None:
    """Log to stderr, once per process (worker processes start with no handlers)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # httpx logs every request at INFO: noise, and a cost on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def app_from_env() -> GatewayApp:
    """The app a hypercorn worker process loads: config path or dev key from the env."""
    setup_logging()
    path = os.environ.get(CONFIG_ENV)
    if path:
        return create_app(load_config(path))
    return create_app(embedded_config(os.environ[DEV_KEY_ENV]))
