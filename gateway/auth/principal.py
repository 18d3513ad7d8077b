"""Bearer key -> Principal, and the model-scope check.

Keys are held only as SHA-256 digests; a presented key is hashed, looked up by
digest and compared with `hmac.compare_digest`, so neither the secret nor its
position in a table can be learned from timing. A slow KDF adds nothing for
high-entropy API keys (docs/reliability.md R18). Key stores sit behind the `KeyStore`
protocol so that the managed store (SQLite/Redis, with limits and spend) can join
the config-file keys without touching the routes.

Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.auth.keys import parse_key
from gateway.config import KeyConfig
from gateway.errors import AuthenticationFailed, PermissionDenied

if TYPE_CHECKING:
    from gateway.store.records import KeyLimits


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may use."""

    name: str
    models: frozenset[str] | None = None  # None: every model
    model_prefixes: tuple[str, ...] = ()  # from scope entries like "openai/*"
    key_id: str | None = None  # a managed key's id; None for the config file's keys
    limits: KeyLimits | None = None  # a managed key's RPM/TPM/spend limits; None: unlimited

    def may_use(self, model_id: str) -> bool:
        if self.models is None or model_id in self.models:
            return True
        return any(model_id.startswith(p) for p in self.model_prefixes)


def principal_for(name: str, scope: Iterable[str] | None) -> Principal:
    """A Principal from a scope list; `PROVIDER/*` entries allow every model of PROVIDER."""
    if scope is None:
        return Principal(name=name)
    exact = frozenset(s for s in scope if not s.endswith("/*"))
    prefixes = tuple(s[:-1] for s in scope if s.endswith("/*"))
    return Principal(name=name, models=exact, model_prefixes=prefixes)


def key_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class KeyStore(Protocol):
    """Finds the principal for a presented secret, or None."""

    def lookup(self, secret: str) -> Principal | None: ...


class StaticKeyStore:
    """The `[[keys]]` of the config file, held as digests."""

    def __init__(self, keys: Iterable[KeyConfig]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {}
        for k in keys:
            d = key_digest(k.key)
            self._by_digest[d] = (d, principal_for(k.name, k.models))

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, secret: str) -> Principal | None:
        d = key_digest(secret)
        entry = self._by_digest.get(d)
        if entry is not None and hmac.compare_digest(entry[0], d):
            return entry[1]
        return None


_MISSING = (
    "You didn't provide an API key. Send it in the Authorization header using Bearer "
    "auth (Authorization: Bearer YOUR_KEY)."
)
_NOT_BEARER = (
    "The Authorization header must read 'Bearer YOUR_KEY': it does not start with 'Bearer '."
    " Send the key after the word Bearer and a space."
)  # what came instead may be the key itself: never echoed
_NO_KEY = "The Authorization header says 'Bearer' but no key follows it."
_INVALID = "Incorrect API key provided."  # never echo the key back (docs/reliability.md R22)


def presented_key_id(authorization: bytes | None) -> str | None:
    """The public id of the managed key in an `Authorization: Bearer` value, if it holds a
    well-formed one: what a log line may name of a key that failed (never its secret)."""
    if not authorization:
        return None
    _, _, token = authorization.strip().partition(b" ")
    try:
        parsed = parse_key(token.strip().decode("ascii"))
    except UnicodeDecodeError:
        return None
    return None if parsed is None else parsed[0]


class Authenticator:
    """Checks the Authorization header against every key store in turn."""

    def __init__(self, stores: Sequence[KeyStore]) -> None:
        self._stores = tuple(stores)

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The principal for an `Authorization: Bearer KEY` header value, or 401."""
        if not authorization:
            raise AuthenticationFailed(_MISSING)
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer":
            raise AuthenticationFailed(_NOT_BEARER)
        if not token:
            raise AuthenticationFailed(_NO_KEY)
        try:
            secret = token.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(_INVALID) from None
        for store in self._stores:
            principal = store.lookup(secret)
            if principal is not None:
                return principal
        raise AuthenticationFailed(_INVALID)

    @staticmethod
    def authorize_model(principal: Principal, model_id: str, param: str = "model") -> None:
        """403 unless the principal's scope covers `model_id` (named by `param`)."""
        if not principal.may_use(model_id):
            raise PermissionDenied(
                f"The key '{principal.name}' is not allowed to use the model '{model_id}'.",
                param=param,
                code="model_not_allowed",
            )
