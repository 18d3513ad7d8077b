"""The built-in offline provider: deterministic answers in OpenAI's exact wire format,
served in-process, and the JSON-schema instance generator it (and the fake vendors)
use for structured output."""
