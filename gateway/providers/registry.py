"""Provider kind name -> Provider: the only list of provider implementations.

The kind names and their option classes are data in `gateway.config.options` (config
never imports providers); `tests/providers/test_registry.py` checks the two lists agree.
"""

from __future__ import annotations

from gateway.config import ProviderKind
from gateway.providers.anthropic.provider import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.gemini.provider import GeminiProvider
from gateway.providers.mock.provider import MockProvider
from gateway.providers.openai import OpenAIProvider

PROVIDERS: dict[ProviderKind, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "gemini": GeminiProvider(),
    "mock": MockProvider(),
}


def provider_for(kind: ProviderKind) -> Provider:
    """The provider for a configured kind (config validation guarantees it exists)."""
    return PROVIDERS[kind]
