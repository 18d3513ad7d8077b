"""The Chat Completions contract, in one place: what a valid request is, what a
conforming answer looks like, and how to make a request invalid on purpose.

- `strategies`: hypothesis strategies of valid requests across the request schema
  (roles, content parts, tools and tool_choice, response_format, sampling fields, stop,
  n, max tokens, stream and stream_options), with real media bytes and JSON Schemas;
- `checks`: pure checks of a non-streamed answer, an error body and what an answer says
  (tools called, structured output, token bounds), each returning `Violation`s;
- `sse`: pure checks of a streamed answer's bytes;
- `mutations`: one invalid change of a valid request, with the path the error's
  `param` must name;
- `paths`: the `messages[2].content[0]` paths both sides use.

The facts come from OpenAI's OpenAPI document (CreateChatCompletionRequest,
CreateChatCompletionResponse, CreateChatCompletionStreamResponse, Error) and
docs/wire-formats.md A2-A7. `python -m bench conform`, fuzz/ and tests/ all use these
definitions, so there is one contract, not three.

Pure package: no I/O.
"""
