"""The provider registry and the config's list of kinds describe the same kinds."""

from gateway.config import KINDS, OPTIONS_BY_KIND
from gateway.providers.registry import PROVIDERS


def test_every_kind_has_a_provider_and_an_options_class() -> None:
    assert set(PROVIDERS) == set(KINDS) == set(OPTIONS_BY_KIND)
    for kind, provider in PROVIDERS.items():
        assert provider.kind == kind
