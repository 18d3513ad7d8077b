"""Provider kind name -> Provider: the only list of provider kinds."""

from __future__ import annotations

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.gemini import GeminiProvider
from gateway.providers.mock import MockProvider
from gateway.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "gemini": GeminiProvider(),
    "mock": MockProvider(),
}

KINDS: tuple[str, ...] = tuple(PROVIDERS)


def provider_for(kind: str) -> Provider:
    """The provider for a configured kind (config validation guarantees it exists)."""
    return PROVIDERS[kind]
