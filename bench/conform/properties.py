"""The properties ``python -m bench conform`` holds an endpoint to.

Each `Property` draws cases (hypothesis strategies from `bench.contract.strategies`
and `.mutations`), sends each to the endpoint and judges what came back with the
pure checks of `bench.contract`, returning an `Outcome`: violations (the property
fails, and hypothesis shrinks the case), or a *declination*.

**Declared unsupported.** A valid request answered with 400 or 422 in the OpenAI error
shape whose `param` names a field the request holds is the endpoint saying it does not
support that field or value (`n` > 1 on a vendor without it, audio input...). That is
not a failure: the case is set aside (hypothesis draws another) and the field is listed
in the report. A property whose every case was declined is *not applicable*, with the
declarations as the reason. A 4xx that names no field of the request, or a 5xx, is a
failure. Likewise a property needing something the run lacks (a key for `auth`, an
`--error-model` for `mid_stream_error`) and the stream-agreement property on a model
that answered one request two ways (not deterministic) are not applicable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from bench.conform.http import Endpoint, Exchange, encode_json
from bench.contract.checks import (
    Answer,
    Violation,
    answer_of,
    check_completion,
    check_error,
    check_max_tokens,
    check_structured,
    check_tools,
    compare_answers,
)
from bench.contract.mutations import Mutation, mutated
from bench.contract.paths import MISSING, format_path, parse_param, resolve, same_place
from bench.contract.sse import check_stream
from bench.contract.strategies import chat_requests

__all__ = ["PROPERTIES", "Case", "Context", "Declined", "Outcome", "Property"]

Body = dict[str, Any]


@dataclass(frozen=True)
class Declined:
    """An endpoint's answer that it does not support a field of a valid request."""

    feature: str  # the field's path with indexes dropped: messages[].content[]
    param: str
    status: int
    message: str


@dataclass
class Outcome:
    """How one case went: violations, or a reason to set it aside, and the exchanges."""

    exchanges: list[Exchange] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    declined: Declined | None = None
    skipped: str | None = None  # set aside for another reason (a nondeterministic answer)


@dataclass
class Context:
    """What every property run shares: the endpoint, the model, what was declared."""

    endpoint: Endpoint
    model: str
    error_model: str | None = None
    declared: dict[str, Declined] = field(default_factory=dict)

    def post(self, body: Body, **kwargs: Any) -> Exchange:
        return self.endpoint.post(encode_json(body), **kwargs)


@dataclass(frozen=True)
class Case:
    """One generated input: a body (or raw bytes), how to authenticate, the mutation."""

    body: Body | None = None
    raw: bytes | None = None
    auth: str | bool | None = True
    mutation: Mutation | None = None

    def shown(self) -> Any:
        """The request as the report shows it."""
        if self.body is not None:
            return self.body
        return (self.raw or b"").decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Property:
    """A named property: the cases it draws, how it judges one, what it needs."""

    name: str
    group: str
    summary: str
    cases: Callable[[Context], st.SearchStrategy[Case]]
    judge: Callable[[Context, Case], Outcome]
    unavailable: Callable[[Context], str | None] = lambda ctx: None


# --------------------------------------------------------------------------- helpers


def _json(exchange: Exchange) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(exchange.response)
    except orjson.JSONDecodeError:
        return False, None


def declined_by(exchange: Exchange, body: Body) -> Declined | None:
    """The declination in `exchange`, if it is one (see the module doc)."""
    if exchange.status not in (400, 422):
        return None
    ok, doc = _json(exchange)
    if not ok or check_error(doc):
        return None
    param = doc["error"]["param"]
    path = parse_param(param) if isinstance(param, str) else None
    if path is None or resolve(body, path) is MISSING:
        return None
    feature = format_path(tuple("[]" if isinstance(s, int) else s for s in path))
    return Declined(feature.replace(".[]", "[]"), param, exchange.status, doc["error"]["message"])


def _refused(exchange: Exchange, body: Body) -> Outcome | None:
    """None when `exchange` is a 200; else the outcome of a valid request refused."""
    outcome = Outcome([exchange])
    if exchange.status == 200:
        return None
    if exchange.status is None:
        outcome.violations.append(Violation("http", "", f"no answer: {exchange.transport_error}"))
        return outcome
    outcome.declined = declined_by(exchange, body)
    if outcome.declined is None:
        ok, doc = _json(exchange)
        shape = "" if ok and not check_error(doc) else " (not in the error shape)"
        outcome.violations.append(
            Violation("valid.refused", "status", f"a valid request was answered {exchange.status}"
                      f"{shape} without naming a field it holds")
        )  # fmt: skip
    return outcome


def _answer(ctx: Context, body: Body, outcome: Outcome) -> Answer | None:
    """Send `body`; the answer a client assembles, or None (the outcome says why)."""
    exchange = ctx.post(body)
    outcome.exchanges.append(exchange)
    early = _refused(exchange, body)
    if early is not None:
        outcome.violations += early.violations
        outcome.declined = early.declined
        return None
    if body.get("stream") is True:
        result = check_stream(exchange.response, body)
        if result.error is not None:
            message = result.error.get("error") if isinstance(result.error, dict) else None
            outcome.violations.append(
                Violation("answer.failed", "stream", f"error event: {message}")
            )
            return None
        return result.answer
    ok, doc = _json(exchange)
    if not ok:
        outcome.violations.append(Violation("completion.json", "body", "not JSON"))
        return None
    return answer_of(doc)


def _valid(ctx: Context, **options: Any) -> st.SearchStrategy[Case]:
    return chat_requests(st.just(ctx.model), **options).map(lambda body: Case(body))


def _with_usage(body: Body) -> Body:
    if body.get("stream") is True:
        return {**body, "stream_options": {"include_usage": True}}
    return body


# --------------------------------------------------------------------------- judges


def _completion(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None
    exchange = ctx.post(case.body)
    early = _refused(exchange, case.body)
    if early is not None:
        return early
    outcome = Outcome([exchange])
    kind = exchange.header("content-type") or ""
    if not kind.startswith("application/json"):
        outcome.violations.append(Violation("completion.type", "content-type", repr(kind)))
    ok, doc = _json(exchange)
    if not ok:
        outcome.violations.append(Violation("completion.json", "body", "not JSON"))
    else:
        outcome.violations += check_completion(doc, case.body)
    return outcome


def _stream(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None
    exchange = ctx.post(case.body)
    early = _refused(exchange, case.body)
    if early is not None:
        return early
    outcome = Outcome([exchange])
    kind = exchange.header("content-type") or ""
    if not kind.startswith("text/event-stream"):
        outcome.violations.append(Violation("sse.type", "content-type", repr(kind)))
    result = check_stream(exchange.response, case.body)
    outcome.violations += result.violations
    if exchange.transport_error and result.error is None:
        outcome.violations.append(
            Violation("stream.end", "connection", f"broken mid-answer: {exchange.transport_error}")
        )
    if result.error is not None:
        message = result.error.get("error") if isinstance(result.error, dict) else result.error
        outcome.violations.append(
            Violation("answer.failed", "stream", f"a valid request's stream failed: {message}")
        )
    return outcome


def _semantic(
    check: Callable[[Answer, Body], list[Violation]],
) -> Callable[[Context, Case], Outcome]:
    def judge(ctx: Context, case: Case) -> Outcome:
        assert case.body is not None
        outcome = Outcome()
        answer = _answer(ctx, case.body, outcome)
        if answer is not None:
            outcome.violations += check(answer, case.body)
        return outcome

    return judge


def _agree(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None
    whole = {**case.body, "stream": False}
    whole.pop("stream_options", None)
    outcome = Outcome()
    first = _answer(ctx, whole, outcome)
    second = _answer(ctx, whole, outcome) if first is not None else None
    if first is None or second is None:
        return outcome
    if compare_answers(second, first):
        outcome.skipped = "not deterministic: one request answered two ways"
        return outcome
    streamed = _answer(ctx, {**whole, "stream": True}, outcome)
    if streamed is not None:
        outcome.violations += compare_answers(streamed, first)
    return outcome


def _invalid(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None and case.mutation is not None
    exchange = ctx.post(case.body)
    outcome = Outcome([exchange])
    status = exchange.status
    if status is None or not 400 <= status < 500:
        what = f"answered {status}" if status else f"not answered: {exchange.transport_error}"
        rule = "invalid.5xx" if status and status >= 500 else "invalid.status"
        outcome.violations.append(
            Violation(rule, "status", f"{case.mutation.describe()}: {what}, not a 4xx")
        )
        return outcome
    ok, doc = _json(exchange)
    shape = check_error(doc if ok else exchange.response[:200])
    if shape:
        outcome.violations += shape
        return outcome
    param = doc["error"]["param"]
    path = parse_param(param) if isinstance(param, str) else None
    if path is not None and same_place(path, case.mutation.path):
        return outcome
    if path is not None and resolve(case.body, path) is not MISSING:
        feature = declined_by(exchange, case.body)
        if feature is not None and feature.feature in ctx.declared:
            outcome.declined = feature  # a field it declared unsupported before: not this one
            return outcome
    outcome.violations.append(
        Violation(
            "invalid.param",
            "error.param",
            f"{case.mutation.describe()}: param {param!r}, not {case.mutation.param!r}",
        )
    )
    return outcome


_BAD_JSON = st.sampled_from(
    [b"", b"{", b'{"model": ', b"not json", b"[1, 2", b'{"model": "m",}', b"\xff\xfe{}", b"null",
     b"[]", b'"a string"', b"42"]
) | st.binary(max_size=24).filter(lambda b: not b.strip().startswith(b"{"))  # fmt: skip


def _bad_json(ctx: Context, case: Case) -> Outcome:
    assert case.raw is not None
    exchange = ctx.endpoint.post(case.raw)
    outcome = Outcome([exchange])
    if exchange.status is None or not 400 <= exchange.status < 500:
        outcome.violations.append(
            Violation(
                "invalid.status", "status", f"a body that is no JSON object: {exchange.status}"
            )
        )
        return outcome
    ok, doc = _json(exchange)
    outcome.violations += check_error(
        doc if ok else exchange.response[:200].decode(errors="replace")
    )
    return outcome


def _auth_cases(ctx: Context) -> st.SearchStrategy[Case]:
    body = {"model": ctx.model, "messages": [{"role": "user", "content": "Hello!"}]}
    wrong = st.from_regex(r"sk-[A-Za-z0-9]{8,40}", fullmatch=True).filter(
        lambda key: key != ctx.endpoint.key
    )
    headers = st.one_of(
        st.none(),
        wrong.map(lambda key: f"Bearer {key}"),
        st.sampled_from(["Basic dXNlcjpwYXNz", "Bearer", "token"]),
    )
    return st.builds(lambda auth, stream: Case({**body, "stream": stream}, auth=auth), headers,
                     st.booleans())  # fmt: skip


def _auth(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None
    exchange = ctx.post(case.body, auth=case.auth)
    outcome = Outcome([exchange])
    if exchange.status != 401:
        outcome.violations.append(
            Violation(
                "auth.status", "status", f"Authorization {case.auth!r}: {exchange.status}, not 401"
            )
        )
    ok, doc = _json(exchange)
    outcome.violations += check_error(
        doc if ok else exchange.response[:200].decode(errors="replace")
    )
    return outcome


def _error_cases(ctx: Context) -> st.SearchStrategy[Case]:
    model = ctx.error_model or ctx.model
    return chat_requests(
        st.just(model), stream=True, tools="none", response_format="none", n=False, media=False
    ).map(lambda body: Case(body))


def _mid_stream(ctx: Context, case: Case) -> Outcome:
    assert case.body is not None
    exchange = ctx.post(case.body)
    outcome = Outcome([exchange])
    if exchange.status != 200:
        ok, doc = _json(exchange)
        outcome.violations += check_error(
            doc if ok else exchange.response[:200].decode(errors="replace")
        )
        return outcome
    result = check_stream(exchange.response, case.body)
    outcome.violations += result.violations
    if result.done and result.error is None:
        outcome.violations.append(
            Violation("stream.error", "end", "a stream that failed ended with [DONE], as a success")
        )
    return outcome


# --------------------------------------------------------------------------- the list

PROPERTIES: tuple[Property, ...] = (
    Property(
        "completion", "shape",
        "a non-streamed answer has the exact shape and types, one choice per n",
        lambda ctx: _valid(ctx, stream=False), _completion,
    ),
    Property(
        "stream", "stream",
        "a stream is well-formed SSE of chunks that keep id/created/model, role first, "
        "tool-call deltas with index then id and name, one finish reason last, usage "
        "only when asked, then [DONE]",
        lambda ctx: _valid(ctx, stream=True), _stream,
    ),
    Property(
        "stream_agrees", "stream",
        "for a deterministic model, a stream says what the completion says",
        lambda ctx: _valid(ctx, stream=False, media=False), _agree,
    ),
    Property(
        "structured_output", "structured",
        "json_schema with strict: true gives content that parses and validates",
        lambda ctx: _valid(ctx, tools="none", response_format="strict").map(
            lambda case: Case(_with_usage(case.body or {}))
        ),
        _semantic(check_structured),
    ),
    Property(
        "tool_calls", "tools",
        "calls name a declared tool, arguments validate against its parameters, "
        "tool_choice none/required/a named function is obeyed",
        lambda ctx: _valid(ctx, tools="strict", response_format="none"), _semantic(check_tools),
    ),
    Property(
        "max_tokens", "limits",
        "max_tokens / max_completion_tokens bounds usage.completion_tokens (text answers)",
        lambda ctx: st.builds(
            lambda case, key, limit: Case(_with_usage({**(case.body or {}), key: limit})),
            _valid(ctx, max_tokens=False, tools="none", response_format="none"),
            st.sampled_from(["max_tokens", "max_completion_tokens"]),
            st.integers(1, 16),
        ),
        _semantic(check_max_tokens),
    ),
    Property(
        "invalid_request", "errors",
        "one invalid change to a valid request gets a 4xx in the error shape whose param "
        "names the changed field, never a 5xx",
        lambda ctx: mutated(chat_requests(st.just(ctx.model), n=False)).map(
            lambda pair: Case(pair[0], mutation=pair[1])
        ),
        _invalid,
    ),
    Property(
        "invalid_json", "errors",
        "a body that is not a JSON object gets a 4xx in the error shape",
        lambda ctx: _BAD_JSON.map(lambda raw: Case(raw=raw)), _bad_json,
    ),
    Property(
        "auth", "auth",
        "no key, a wrong key or a malformed Authorization header gets 401 in the error shape",
        _auth_cases, _auth,
        lambda ctx: None if ctx.endpoint.key else "no --key: the endpoint's auth is not known",
    ),
    Property(
        "mid_stream_error", "errors",
        "a failure after the stream started is a final data: {\"error\": ...} event, "
        "never a silent cut or a [DONE]",
        _error_cases, _mid_stream,
        lambda ctx: None if ctx.error_model else "no --error-model: nothing fails mid-stream",
    ),
)  # fmt: skip
