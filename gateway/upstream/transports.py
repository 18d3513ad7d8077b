"""Which transport serves a configured provider: in-process, our h11 pool, or httpx.

httpx is an optional extra (`pip install 'gateway[httpx]'`), imported only when a
provider asks for it.
"""

from __future__ import annotations

from gateway.config import ConfigError, ProviderConfig
from gateway.offload import Offload
from gateway.providers.base import Provider
from gateway.upstream.h11_pool import H11Transport
from gateway.upstream.local import LocalProvider, LocalTransport
from gateway.upstream.transport import Transport


def make_transport(
    p: ProviderConfig, provider: Provider, offload: Offload | None = None
) -> Transport:
    """The transport for one configured provider (`transport` in its config); an
    in-process provider answers big requests in `offload`'s threads."""
    if isinstance(provider, LocalProvider):
        return LocalTransport(provider, offload)
    if p.transport == "httpx":
        try:
            from gateway.upstream.httpx_transport import HttpxTransport
        except ImportError as e:  # the optional extra is not installed
            raise ConfigError(
                f'providers.{p.name}.transport: "httpx" needs the httpx package '
                f"(pip install 'gateway[httpx]'): {e}"
            ) from None
        return HttpxTransport(p)
    return H11Transport(p)
