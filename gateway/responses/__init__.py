"""The Responses API (`POST /v1/responses`) on every provider: the pure part.

- validate.py: the request schema, a 400 naming the field;
- history.py: the conversation a request continues (`previous_response_id`,
  `item_reference`);
- to_chat.py: the bridge, a Responses request as a chat completions request for the
  providers that speak chat (every provider kind);
- objects.py, output.py: the response object, its output items and its events;
- stream.py: the one translator from the providers' chat chunks to Responses events;
  complete.py: the non-streamed answer;
- native.py: an upstream that serves the Responses API itself (OpenAI), relayed with
  the same normalisation;
- surface.py: all of it as the routing chain's surface (gateway/upstream/surface.py).

The route (gateway/api/responses.py) reads the body, loads stored responses and
stores the new one (gateway/store/responses.py). docs/responses.md says what is
supported per provider.

Pure package: no I/O.
"""
