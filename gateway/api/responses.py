"""The Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

A create request takes the same way as a chat completion (model_call.py: auth,
limits, spend, ledger, routing, the error contract); what it adds is here: the
conversation it continues (`previous_response_id`, `item_reference`s), loaded from
the stored responses of the same key; the Responses surface its attempts speak
(gateway/responses/surface.py: bridged through chat completions, or native); and,
with `store` (the default), the response stored before the client hears it ended,
so that it can be continued at once on any provider. A failure to store is logged
and the answer still goes out: it was produced and billed.

Stored responses belong to the key that made them; any other key gets 404, as for an
id that never existed. The retention period is `[responses] retention_days`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import trio

from gateway.api.asgi import JSON_HEADERS, Receive, Scope, Send, header, send_bytes, send_error
from gateway.api.model_call import authenticate, serve_model_call
from gateway.auth.principal import Principal
from gateway.errors import (
    GatewayError,
    GatewayUnavailable,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)
from gateway.observability.record import RequestRecord
from gateway.openai.body import parse_body
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import Completion
from gateway.responses.history import (
    continued,
    referenced_responses,
    request_items,
    resolve_references,
)
from gateway.responses.objects import new_response_id, skeleton
from gateway.responses.surface import ResponsesSurface, speaks_responses
from gateway.responses.to_chat import Bridge, to_chat
from gateway.responses.validate import validate_responses_request
from gateway.state import Gateway, Snapshot
from gateway.store.records import StoreError
from gateway.store.responses import StoredResponse
from gateway.upstream.router import Plan
from gateway.upstream.surface import Surface

log = logging.getLogger("gateway")

PATH = "/v1/responses"
_ITEM_PATH = PATH + "/"

JSON = dict[str, Any]


def is_responses_path(path: str) -> bool:
    return path == PATH or path.startswith(_ITEM_PATH)


def owner_of(principal: Principal) -> str:
    """Who owns what a key stores: a managed key's id, or a config key's name."""
    return f"key:{principal.key_id}" if principal.key_id else f"config:{principal.name}"


def read_request(raw: bytes) -> JSON:
    """Parse and validate a body: a 400 naming what is wrong. O(size)."""
    return validate_responses_request(parse_body(raw))


def bridged(request: JSON, items: list[tuple[JSON, str]]) -> Bridge:
    """The chat form of the request, checked like a chat request (a safety net: the
    Responses validator should have refused anything the chat validator would)."""
    bridge = to_chat(request, items)
    if bridge.refusal is None:
        try:
            validate_chat_request(bridge.body)
        except InvalidRequest as e:
            raise InvalidRequest(
                f"The request cannot be sent as a chat completion: {e.message}", param=e.param
            ) from None
    return bridge


def store_unavailable() -> GatewayUnavailable:
    return GatewayUnavailable(
        "The response store is unavailable; try again.", code="store_unavailable"
    )


class ResponsesCall:
    """One `POST /v1/responses` (model_call.py's `ModelCall`)."""

    __slots__ = ("_gw", "_surface", "created", "owner", "request_id", "size", "store")

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self.request_id = new_response_id()  # the response's id is the ledger's request id
        self.created = int(time.time())
        self.size = 0
        self.owner = ""
        self.store = True
        self._surface: ResponsesSurface | None = None

    def read(self, raw: bytes) -> JSON:
        self.size = len(raw)
        return read_request(raw)

    async def _load(self, response_id: str) -> StoredResponse | None:
        gw = self._gw
        try:
            return await gw.responses.get(
                response_id, self.owner, time.time() - gw.responses_retention_s
            )
        except StoreError:
            log.exception("reading stored response %s failed", response_id)
            raise store_unavailable() from None

    async def prepare(
        self, gw: Gateway, snap: Snapshot, principal: Principal, body: JSON, plan: Plan
    ) -> JSON:
        self.owner = owner_of(principal)
        self.store = body.get("store") is not False
        items = request_items(body)
        outputs: dict[str, JSON] = {}  # stored response id -> its response object
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = await self._load(previous)
            if stored is None:
                raise NotFound(
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            outputs[previous] = orjson.loads(stored.response)
            history = continued(orjson.loads(stored.input_items), outputs[previous])
        for response_id in sorted(referenced_responses(items) - outputs.keys()):
            found = await self._load(response_id)
            if found is not None:
                outputs[response_id] = orjson.loads(found.response)
        items = resolve_references(items, outputs)
        every = [(item, "previous_response_id") for item in history] + items
        bridge = await gw.offload.run(self.size, bridged, body, every)
        if bridge.refusal is not None and not any(
            speaks_responses(snap.relays[dep.provider_name].provider, dep)
            for dep in plan.deployments
        ):
            raise bridge.refusal  # no deployment of this model could take it
        self._surface = ResponsesSurface(
            body,
            [item for item, _ in every],
            bridge,
            skeleton(body, self.request_id, self.created, self.store),
        )
        return bridge.body  # what billing counts; admission may add the output cap

    def surface(self, body: JSON) -> Surface | None:
        assert self._surface is not None
        self._surface.bridge.body = body
        return self._surface

    async def _keep(self, response: JSON | None) -> None:
        """Store the final response (with `store`), shielded: it is already billed."""
        if not self.store or response is None or self._surface is None:
            return
        record = StoredResponse(
            response_id=self.request_id,
            owner=self.owner,
            created_at=time.time(),
            response=orjson.dumps(response),
            input_items=orjson.dumps(self._surface.items),
        )
        with trio.CancelScope(shield=True):
            try:
                await self._gw.responses.put(record)
            except StoreError:
                log.exception("storing response %s failed", self.request_id)

    async def answered(self, completion: Completion) -> bytes:
        assert self._surface is not None
        await self._keep(self._surface.response)
        return completion.body

    async def settled(self, error: GatewayError | None) -> None:
        if self._surface is not None:
            await self._keep(self._surface.final(error))

    def stream_failure(self, error: GatewayError) -> bytes:
        assert self._surface is not None
        return self._surface.failure_event(error)


async def create_response(
    gw: Gateway, scope: Scope, receive: Receive, send: Send, rec: RequestRecord
) -> None:
    """POST /v1/responses."""
    await serve_model_call(gw, scope, receive, send, rec, ResponsesCall(gw))


async def _stored(
    gw: Gateway, scope: Scope, rec: RequestRecord, response_id: str
) -> tuple[str, StoredResponse]:
    principal = authenticate(gw.current.auth, header(scope, b"authorization"), rec)
    owner = owner_of(principal)
    since = time.time() - gw.responses_retention_s
    found = await gw.responses.get(response_id, owner, since)
    if found is None:
        raise NotFound(f"Response with id '{response_id}' not found.")
    return owner, found


async def responses_route(
    gw: Gateway, scope: Scope, receive: Receive, send: Send, rec: RequestRecord
) -> None:
    """Everything under /v1/responses: create, retrieve, delete. Every answer carries
    the request's id and its status goes to the request's record."""
    path: str = scope["path"]
    id_header = (b"x-request-id", rec.request_id.encode())

    async def answer(body: bytes) -> None:
        rec.status = 200
        await send_bytes(send, 200, body, [*JSON_HEADERS, id_header])

    async def refuse(error: GatewayError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        rec.fail(error)
        rec.status = error.http_status
        await send_error(send, error, [*(extra or []), id_header])

    method: str = scope["method"]
    if path == PATH:
        if method == "POST":
            await create_response(gw, scope, receive, send, rec)
            return
        allowed = b"POST"
    else:
        response_id = path[len(_ITEM_PATH) :]
        if not response_id or "/" in response_id:
            await refuse(NotFound(f"Unknown path: {method} {path}"))
            return
        try:
            if method == "GET":
                if b"stream=true" in scope["query_string"].lower():
                    raise InvalidRequest(
                        "Invalid value for 'stream': a stored response cannot be replayed "
                        "as a stream here; leave 'stream' out to get it as JSON.",
                        param="stream",
                    )
                _, found = await _stored(gw, scope, rec, response_id)
                await answer(found.response)
                return
            if method == "DELETE":
                owner, _ = await _stored(gw, scope, rec, response_id)
                await gw.responses.delete(response_id, owner)
                deleted = {"id": response_id, "object": "response.deleted", "deleted": True}
                await answer(orjson.dumps(deleted))
                return
        except GatewayError as e:
            await refuse(e)
            return
        except StoreError:
            log.exception("reading stored response %s failed", response_id)
            await refuse(store_unavailable())
            return
        allowed = b"GET, DELETE"
    error = MethodNotAllowed(f"Method {method} is not allowed on {path}.")
    await refuse(error, [(b"allow", allowed)])
