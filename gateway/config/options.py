"""What each provider kind can be told, typed: one frozen dataclass per kind.

A provider table sets these for all of its models; a model table may set them again
for itself (the model's value wins). Each kind accepts only its own keys, so a key
meant for another kind (`api_version` on an OpenAI provider) is an error at load,
not a setting that silently does nothing. Defaults live here and nowhere else.

Settings every kind shares (the output cap, prices) are not options: they sit on
`ProviderConfig` / `ModelConfig` and reach the providers as `Deployment` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ProviderKind = Literal["openai", "anthropic", "gemini", "mock"]
KINDS: tuple[ProviderKind, ...] = get_args(ProviderKind)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
StructuredOutput = Literal["tool", "native"]


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """`kind = "openai"`: OpenAI and OpenAI-compatible servers."""

    developer_role: bool = True  # False: role "developer" is sent as "system"
    # The max tokens field the upstream understands (the other is renamed); None: as sent.
    max_tokens_field: MaxTokensField | None = None
    # Ask the upstream for stream usage (stream_options.include_usage); False for servers
    # that reject stream_options.
    stream_usage: bool = True
    # The upstream serves POST /responses itself (OpenAI does): Responses API requests
    # go to it as they are, not bridged through chat completions (docs/responses.md).
    responses_api: bool = False


@dataclass(frozen=True, slots=True)
class MockOptions(OpenAIOptions):
    """`kind = "mock"`: the offline provider, which speaks OpenAI's wire format."""

    ttft_ms: float = 0.0  # delay before the first token
    tokens_per_s: float = 0.0  # streaming speed; 0: as fast as possible


@dataclass(frozen=True, slots=True)
class AnthropicOptions:
    """`kind = "anthropic"`: the Anthropic Messages API."""

    api_version: str = "2023-06-01"  # the anthropic-version header
    default_max_tokens: int = 4096  # max_tokens when the client sent none (required upstream)
    # response_format through a forced tool (every model) or output_config.format.
    structured_output: StructuredOutput = "tool"
    reasoning_output: bool = False  # thinking surfaces as delta.reasoning_content
    fetch_media: bool = False  # fetch http(s) media and send it inline (Anthropic fetches URLs)


@dataclass(frozen=True, slots=True)
class GeminiOptions:
    """`kind = "gemini"`: the Gemini API (generateContent)."""

    reasoning_output: bool = False  # thought parts surface as delta.reasoning_content
    fetch_media: bool = True  # Gemini cannot fetch arbitrary URLs: send the bytes inline


ProviderOptions = OpenAIOptions | AnthropicOptions | GeminiOptions  # MockOptions is an OpenAI one

OPTIONS_BY_KIND: dict[ProviderKind, type[ProviderOptions]] = {
    "openai": OpenAIOptions,
    "anthropic": AnthropicOptions,
    "gemini": GeminiOptions,
    "mock": MockOptions,
}
