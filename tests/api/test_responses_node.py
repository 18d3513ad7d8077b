"""The Responses API from JavaScript clients as their users run them: the Vercel AI
SDK's default OpenAI provider (`openai(model)` in `generateText` / `streamText`, which
speaks the Responses API, tools and all) and the `openai` Node SDK.

Runs when `node` and `npm` are installed and the npm registry answers: the packages are
installed once per session in a temporary folder of the test's own (skipped otherwise).
The client script is tests/api/node/responses_clients.mjs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bench.fakes import anthropic as fake_anthropic
from bench.fakes.threaded import BackgroundTrio
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import serve_app

KEY = "sk-responses-node-0123456789"
SCRIPT = Path(__file__).parent / "node" / "responses_clients.mjs"
PACKAGES = ["ai@6", "@ai-sdk/openai@3", "openai@6"]

CONFIG = """
[state]
sqlite_path = "{state_dir}/gateway.sqlite3"

[providers.mock]
kind = "mock"

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"

[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0

[models."claude-test"]
provider = "anthropic"
upstream_model = "claude-fake"

[[keys]]
name = "node"
key = "{key}"
"""


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the JavaScript clients installed, once per session."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed")
    folder = tmp_path_factory.mktemp("node-clients")
    (folder / "package.json").write_text('{"name": "responses-clients", "private": true}')
    try:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", *PACKAGES],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"npm could not install {' '.join(PACKAGES)} (no registry?): {e}")
    shutil.copy(SCRIPT, folder / SCRIPT.name)
    return folder


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_anthropic.run_fake_anthropic() as (_, anthropic_url):
        path = tmp_path_factory.mktemp("responses-node") / "gateway.toml"
        path.write_text(
            CONFIG.format(
                state_dir=path.parent,
                anthropic=anthropic_url,
                anthropic_key=fake_anthropic.DEFAULT_KEY,
                key=KEY,
            )
        )
        app = create_app(load_config(path))
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            yield f"http://127.0.0.1:{port}/v1"


def run_clients(folder: Path, url: str, model: str) -> dict[str, Any]:
    env = {**os.environ, "GATEWAY_URL": url, "GATEWAY_KEY": KEY, "GATEWAY_MODEL": model}
    done = subprocess.run(
        ["node", SCRIPT.name], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("model", ["mock-fast", "claude-test"])
def test_the_vercel_ai_sdk_and_the_node_sdk_work_unchanged(
    node_modules: Path, gateway_url: str, model: str
) -> None:
    out = run_clients(node_modules, gateway_url, model)
    assert out["generate"]["text"] and out["generate"]["finish"] == "stop"
    assert out["generate"]["usage"]["outputTokens"] > 0
    assert out["stream"]["text"] and out["stream"]["finish"] == "stop"
    # generateText with a tool: the call, its result sent back, then the answer.
    assert out["tools"]["calls"] == ["get_weather"] and out["tools"]["steps"] == 2
    assert out["tools"]["results"][0]["temp_c"] == 3 and out["tools"]["text"]
    assert out["node"]["status"] == "completed" and out["node"]["text"]
    assert [n for _, n in out["nodeStream"]] == list(range(len(out["nodeStream"])))
    kinds = [k for k, _ in out["nodeStream"]]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert out["continued"]["previous"] == out["node"]["id"] and out["continued"]["text"]
    assert out["retrieved"] == out["node"]["id"]
    assert out["error"] == {"status": 400, "param": "temperature", "type": "invalid_request_error"}
