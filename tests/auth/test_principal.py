"""Bearer keys: digests, constant-time compare, scopes."""

from __future__ import annotations

import pytest

from gateway.auth.principal import Authenticator, StaticKeyStore, principal_for
from gateway.config import KeyConfig
from gateway.errors import AuthenticationFailed, PermissionDenied

KEYS = [
    KeyConfig(name="alice", key="sk-alice-123", models=("gpt-4o-mini", "fast")),
    KeyConfig(name="ops", key="sk-ops-456", models=None),
    KeyConfig(name="team", key="sk-team-789", models=("openai/*", "fast")),
]
AUTH = Authenticator([StaticKeyStore(KEYS)])


def test_store_holds_no_plaintext_secret() -> None:
    store = StaticKeyStore(KEYS)
    assert b"sk-alice-123" not in repr(store.__dict__).encode()


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"Bearer sk-alice-123", "alice"),
        (b"bearer  sk-ops-456 ", "ops"),
        (b"BEARER sk-team-789", "team"),
    ],
)
def test_valid_keys(header: bytes, name: str) -> None:
    assert AUTH.authenticate(header).name == name


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic sk-alice-123",
        b"sk-alice-123",
        b"Bearer sk-alice-12",
        b"Bearer sk-alice-1234",
        "Bearer \u00e9".encode("latin-1"),
    ],
)
def test_invalid_or_missing_keys_are_401(header: bytes | None) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        AUTH.authenticate(header)
    assert info.value.http_status == 401
    assert "sk-alice" not in info.value.message


def test_scopes() -> None:
    alice = AUTH.authenticate(b"Bearer sk-alice-123")
    AUTH.authorize_model(alice, "fast")
    with pytest.raises(PermissionDenied):
        AUTH.authorize_model(alice, "gpt-4o")
    team = AUTH.authenticate(b"Bearer sk-team-789")
    AUTH.authorize_model(team, "openai/gpt-4.1")
    with pytest.raises(PermissionDenied):
        AUTH.authorize_model(team, "openaix/gpt-4.1")
    ops = AUTH.authenticate(b"Bearer sk-ops-456")
    AUTH.authorize_model(ops, "anything")


def test_principal_for_splits_prefix_scopes() -> None:
    p = principal_for("x", ["a", "b/*"])
    assert p.models == frozenset({"a"}) and p.model_prefixes == ("b/",)
