"""The peer gateways ``python -m bench compare`` measures ours against: LiteLLM, Portkey.

Each runs as it is installed (nothing is installed here), on a free loopback port, in
front of the same fake upstream as our gateway and serving the same scenarios
(`bench.scenarios`). LiteLLM gets a generated config (``--num_workers`` for more than
one worker) and an environment without a database or cost-map fetch. Portkey has no
config file: each request names its upstream in headers (`portkey_headers`), and a
preload module keeps it on the loopback and works around Portkey-AI/gateway#1389 (the
details are in `bench.compare`'s doc, which is ``compare --help``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.processes import HOST, Processes, free_port, log_tail, wait_listening
from bench.scenarios import SCENARIOS
from bench.targets import UPSTREAM_KEY, Server, trusting_env

__all__ = [
    "PORTKEY_NPX",
    "find_litellm",
    "litellm_config",
    "portkey_command",
    "portkey_headers",
    "start_litellm",
    "start_portkey",
]

PORTKEY_NPX = "npx"  # --portkey without a value


# -- LiteLLM -----------------------------------------------------------------------


def litellm_config(upstream_url: str) -> str:
    """LiteLLM's proxy config: each scenario's gateway model routed to the fake."""
    lines = ["model_list:"]
    for scenario in SCENARIOS.values():
        lines += [
            f"  - model_name: {scenario.gateway_model}",
            "    litellm_params:",
            f'      model: "openai/{scenario.upstream_model}"',
            f'      api_base: "{upstream_url}"',
            f'      api_key: "{UPSTREAM_KEY}"',
        ]
    lines += ["general_settings:", '  master_key: "sk-bench-litellm"']
    return "\n".join(lines) + "\n"


def find_litellm(path: str | None) -> str | None:
    """`path` (--litellm) if given, else ``litellm`` on PATH, else None."""
    if path:
        return path
    return shutil.which("litellm")


def start_litellm(
    procs: Processes, upstream: Server, exe: str, timeout_s: float, workers: int = 1
) -> Server:
    """LiteLLM's proxy (`exe`) in front of `upstream`, with `workers` workers."""
    port = free_port()
    config = procs.log_dir / "litellm.yaml"
    config.write_text(litellm_config(upstream.base_url))
    argv = [exe, "--config", str(config), "--host", HOST, "--port", str(port)]
    if workers > 1:
        argv += ["--num_workers", str(workers)]
    # No database (so no spend logs), no fetch of the model cost map from GitHub; the
    # worker count is ours alone (the variable would change LiteLLM's default).
    drop = {"DATABASE_URL", "DEFAULT_NUM_WORKERS_LITELLM_PROXY"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True")
    env = trusting_env(upstream, env)  # an HTTPS fake: SSL_CERT_FILE, REQUESTS_CA_BUNDLE
    proc, log = procs.start("litellm", argv, env=env)
    wait_listening(proc, port, timeout_s, "litellm")
    models = {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server(
        "litellm", proc, port, f"http://{HOST}:{port}/v1", models, "sk-bench-litellm", log_path=log
    )


# -- Portkey -----------------------------------------------------------------------

# Loaded into Portkey's Node process with NODE_OPTIONS=--import (see bench/compare.py's doc).
PORTKEY_PRELOAD = r"""// Preload of the Portkey gateway (node --import), by bench/peers.py.
import net from "node:net";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

// 1. Listen on 127.0.0.1 only when no host is given (Portkey gives none).
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] !== "string") {
      if (args.length > 1 && args[1] == null) args[1] = "127.0.0.1";
      else args.splice(1, 0, "127.0.0.1");
    }
  } else if (first && typeof first === "object" && !Array.isArray(first) &&
             first.path === undefined && first.fd === undefined && first.handle === undefined &&
             first._handle === undefined && first.host === undefined) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};

// 2. No outgoing connection but to the loopback: nothing reaches the internet.
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0];  // net.connect passes normalized args
  let host, port;
  if (options && typeof options === "object") {
    if (options.path === undefined) { host = options.host ?? "localhost"; port = options.port; }
  } else if (typeof options === "number" || /^\d+$/.test(String(options))) {
    port = options;
    host = typeof args[1] === "string" ? args[1] : "localhost";
  }
  if (host !== undefined && !LOOPBACK.has(String(host))) {
    const error = new Error(`bench-compare: blocked a connection to ${host}:${port}`);
    console.error(error.message);
    process.nextTick(() => this.destroy(error));
    return this;
  }
  return connect.apply(this, args);
};

// 3. Portkey-AI/gateway#1389: with @hono/node-server > 1.14.2 a streamed answer keeps
// fetch's immutable Headers and Portkey's header updates throw "TypeError: immutable".
// Give event-stream responses a mutable copy (undici's Response, taken before
// @hono/node-server replaces the global one).
const NodeResponse = globalThis.Response;
const nodeFetch = globalThis.fetch;
globalThis.fetch = async function fetch(input, init) {
  const response = await nodeFetch(input, init);
  const type = response.headers.get("content-type") || "";
  if (!response.body || !type.startsWith("text/event-stream")) return response;
  return new NodeResponse(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: new Headers(response.headers),
  });
};
"""
# Settings that would make Portkey connect somewhere by itself.
_PORTKEY_ENV_DROP = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "REDIS_CONNECTION_STRING",
     "ALBUS_BASEPATH", "PORT"}
)  # fmt: skip


def portkey_command(spec: str) -> list[str]:
    """argv (without the port) of Portkey: `spec` is PORTKEY_NPX or its executable."""
    if spec == PORTKEY_NPX:
        npx = shutil.which("npx")
        if npx is None:
            raise RuntimeError("--portkey needs npx on PATH (or give --portkey PATH)")
        return [npx, "--no-install", "@portkey-ai/gateway"]
    path = Path(spec).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(f"--portkey {spec}: not an executable file")
    return [str(path.absolute())]


def portkey_headers(upstream: Server) -> list[tuple[str, str]]:
    """The headers that route a request through Portkey to the fake (with its key)."""
    return [("x-portkey-provider", "openai"), ("x-portkey-custom-host", upstream.base_url)]


def start_portkey(procs: Processes, upstream: Server, spec: str, timeout_s: float) -> Server:
    """Portkey (`spec`: PORTKEY_NPX or its executable) with the preload, headless."""
    argv = portkey_command(spec)
    port = free_port()
    preload = procs.log_dir / "portkey-preload.mjs"
    preload.write_text(PORTKEY_PRELOAD)
    env = {k: v for k, v in os.environ.items() if k not in _PORTKEY_ENV_DROP}
    node_options = f"--import={preload.resolve().as_uri()}"
    if env.get("NODE_OPTIONS"):
        node_options += " " + env["NODE_OPTIONS"]
    env["NODE_OPTIONS"] = node_options
    env = trusting_env(upstream, env)  # an HTTPS fake: NODE_EXTRA_CA_CERTS
    proc, log = procs.start("portkey", [*argv, f"--port={port}", "--headless"], env=env)
    try:
        wait_listening(proc, port, timeout_s, "portkey")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; its log ({log}) ends:\n{log_tail(log, 5)}") from None
    models = {name: s.upstream_model for name, s in SCENARIOS.items()}
    return Server(
        "portkey",
        proc,
        port,
        f"http://{HOST}:{port}/v1",
        models,
        UPSTREAM_KEY,
        portkey_headers(upstream),
        log,
    )
