"""The Anthropic Messages API: request, response, stream and error translation."""
