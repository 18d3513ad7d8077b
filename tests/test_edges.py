"""Edges a newcomer hit, each through the public surface: the 404 for a mistyped model,
an Authorization header without `Bearer `, check-config's whole list of problems, the
live limiter state, CORS for browsers, `retry-after-ms` and `openai-processing-ms`.
(A port in use: tests/test_lifecycle.py.)"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from bench.fakes.threaded import BackgroundTrio
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import ADMIN_KEY, KEY_ALL, KEY_SCOPED, Stack, serve_app
from tests.test_cli import gateway as run_gateway

ROOT = Path(__file__).parent.parent
HI = [{"role": "user", "content": "hi"}]


def client(stack: Stack, key: str = KEY_ALL) -> OpenAI:
    return OpenAI(base_url=stack.url, api_key=key, max_retries=0, timeout=20)


def post(base: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=20)


def admin(stack: Stack, method: str, path: str, **kw: Any) -> Any:
    base = stack.url.removesuffix("/v1")
    r = httpx.request(
        method, f"{base}{path}", headers={"authorization": f"Bearer {ADMIN_KEY}"}, **kw
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


# ------------------------------------------------------------------ a mistyped model


def test_an_unknown_model_names_the_closest_ids_and_points_at_v1_models(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack).chat.completions.create(model="mock-fsat", messages=HI)  # type: ignore[arg-type]
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["message"].startswith("The model 'mock-fsat' does not exist")
    assert "Did you mean 'mock-fast'" in error["message"]
    assert "GET /v1/models lists the models your key can use" in error["message"]

    with pytest.raises(openai.NotFoundError) as caught:
        client(stack).chat.completions.create(model="nope/gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert "'nope/...' names no configured provider" in str(caught.value)
    assert "fake, " in str(caught.value)  # the providers it could have been

    # Suggestions stay within the key's scope.
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack, KEY_SCOPED).models.retrieve("gpt-tset")
    assert "gpt-test" not in str(caught.value).replace("gpt-tset", "")
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack).models.retrieve("gpt-tset")
    assert "Did you mean 'gpt-test'" in str(caught.value)


# ------------------------------------------------------------ Authorization: Bearer


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (KEY_ALL, "does not start with 'Bearer '"),
        (f"Basic {KEY_ALL}", "does not start with 'Bearer '"),
        ("Bearer", "no key follows it"),
        (None, "You didn't provide an API key"),
    ],
)
def test_an_authorization_header_without_bearer_says_so(
    stack: Stack, authorization: str | None, says: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    body = {"model": "mock-fast", "messages": HI}
    for r in (
        post(stack.url.removesuffix("/v1"), body, **headers),
        httpx.get(f"{stack.url}/models", headers=headers),
    ):
        assert r.status_code == 401
        message = r.json()["error"]["message"]
        assert says in message and KEY_ALL not in message


# ------------------------------------------------------------------- check-config


def test_check_config_lists_every_missing_variable_and_unknown_scope_model(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[providers.openai]\nkind = "openai"\napi_key_env = "EDGE_UNSET_1"\n'
        '[models."gpt-4o-mini"]\nprovider = "openai"\n'
        '[state]\nadmin_key_env = "EDGE_UNSET_2"\n'
        '[[keys]]\nname = "a"\nkey_env = "EDGE_UNSET_3"\n'
        'models = ["gpt-4o-mnii", "nope/*", "openai/*", "openai/gpt-4.1", "gpt-4o-mini"]\n'
    )
    r = run_gateway("check-config", str(config))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "invalid: providers.openai.api_key_env: environment variable EDGE_UNSET_1 is not set",
        "invalid: keys[0].key_env: environment variable EDGE_UNSET_3 is not set",
        "invalid: state.admin_key_env: environment variable EDGE_UNSET_2 is not set",
        "invalid: keys[0].models[0]: no model 'gpt-4o-mnii': neither a [models] id nor"
        " PROVIDER/MODEL of a configured provider; did you mean 'gpt-4o-mini'?",
        "invalid: keys[0].models[1]: no model 'nope/*': neither a [models] id nor"
        " PROVIDER/MODEL of a configured provider",
    ]
    r = run_gateway("serve", "--config", str(config))
    assert r.returncode == 2 and r.stderr.count("gateway: invalid config: ") == 5


# ------------------------------------------------------------- live limiter state


def test_admin_key_shows_the_real_remaining_rpm_and_tpm(stack: Stack) -> None:
    key = admin(stack, "POST", "/admin/keys", json={"name": "live", "rpm": 5, "tpm": 1000})
    long = [{"role": "user", "content": "word " * 150}]  # ~150 tokens: ~9 s to refill
    for _ in range(2):
        client(stack, key["key"]).chat.completions.create(
            model="mock-fast",
            messages=long,  # type: ignore[arg-type]
            max_tokens=20,
        )
    limits = admin(stack, "GET", f"/admin/keys/{key['id']}")["limits"]
    assert limits["requests"]["limit"] == 5 and limits["requests"]["remaining"] == 3
    assert limits["tokens"]["limit"] == 1000
    assert 0 < limits["tokens"]["remaining"] < 900


# ------------------------------------------------- retry hints and processing time


def test_a_429_carries_retry_after_ms_beside_retry_after(stack: Stack) -> None:
    key = admin(stack, "POST", "/admin/keys", json={"name": "one", "rpm": 1})
    base = stack.url.removesuffix("/v1")
    body = {"model": "mock-fast", "messages": HI}
    auth = {"authorization": f"Bearer {key['key']}"}
    assert post(base, body, **auth).status_code == 200
    r = post(base, body, **auth)
    assert r.status_code == 429
    millis = int(r.headers["retry-after-ms"])
    assert 0 < millis <= 60_000
    assert int(r.headers["retry-after"]) == max(1, math.ceil(millis / 1000))


def test_openai_processing_ms_on_every_api_answer(stack: Stack) -> None:
    base = stack.url.removesuffix("/v1")
    auth = {"authorization": f"Bearer {KEY_ALL}"}
    answers = [
        post(base, {"model": "mock-fast", "messages": HI}, **auth),
        post(base, {"model": "mock-fast", "messages": HI, "stream": True}, **auth),
        post(base, {"model": "mock-fast"}, **auth),  # 400
        post(base, {"model": "mock-fast", "messages": HI}),  # 401
        httpx.get(f"{stack.url}/models", headers=auth),
    ]
    for r in answers:
        assert r.headers["openai-processing-ms"].isdigit(), r.headers


# -------------------------------------------------------------------------- CORS

CORS_CONFIG = """
[server]
cors_origins = ["https://app.example"]
max_in_flight = 1

[state]
sqlite_path = "{dir}/gw.sqlite3"
admin_key = "{admin}"

[providers.mock]
kind = "mock"

[models."mock-fast"]
provider = "mock"

[models."mock-slow"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 5

[[keys]]
name = "web"
key = "{key}"
"""

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def browser_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("cors") / "gw.toml"
    path.write_text(CORS_CONFIG.format(dir=path.parent, admin=ADMIN_KEY, key=KEY_ALL))
    app = create_app(load_config(path))
    with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
        yield f"http://127.0.0.1:{port}"


def preflight(base: str, path: str, origin: str = ORIGIN) -> httpx.Response:
    return httpx.options(
        f"{base}{path}",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/models", "/healthz", "/admin/keys", "/nowhere"]
)
def test_cors_preflight_on_every_route(browser_gateway: str, path: str) -> None:
    r = preflight(browser_gateway, path)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert (
        r.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    )
    assert "origin" in r.headers["vary"]


def test_cors_names_allowed_origins_only(browser_gateway: str) -> None:
    body = {"model": "mock-fast", "messages": HI}
    auth = {"authorization": f"Bearer {KEY_ALL}"}
    r = post(browser_gateway, body, origin=ORIGIN, **auth)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert "retry-after-ms" in r.headers["access-control-expose-headers"]
    r = post(browser_gateway, body, origin=ORIGIN)  # errors too, so the page can read them
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
    for origin in ("https://evil.example", None):
        headers = auth if origin is None else {"origin": origin, **auth}
        r = post(browser_gateway, body, **headers)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = preflight(browser_gateway, "/v1/chat/completions", "https://evil.example")
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_without_cors_origins_there_is_no_cors(stack: Stack) -> None:
    base = stack.url.removesuffix("/v1")
    assert preflight(base, "/v1/chat/completions").status_code == 405
    r = post(
        base,
        {"model": "mock-fast", "messages": HI},
        origin=ORIGIN,
        authorization=f"Bearer {KEY_ALL}",
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_a_shed_503_carries_retry_hints_and_cors(browser_gateway: str) -> None:
    """`max_in_flight = 1`: one slow stream holds the worker's only slot."""
    streaming = threading.Event()
    done = threading.Event()

    def hold() -> None:
        body = {"model": "mock-slow", "messages": HI, "stream": True}
        headers = {"authorization": f"Bearer {KEY_ALL}"}
        url = f"{browser_gateway}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=20) as r:
            for _ in r.iter_lines():
                streaming.set()
        done.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert streaming.wait(10)
        r = post(
            browser_gateway,
            {"model": "mock-fast", "messages": HI},
            origin=ORIGIN,
            authorization=f"Bearer {KEY_ALL}",
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
        assert r.headers["access-control-allow-origin"] == ORIGIN
    finally:
        holder.join(timeout=20)
    assert done.is_set()
