"""``python -m bench compare``: our gateway against the upstream itself and peer gateways.

    python -m bench compare [--rounds 2] [--duration 5] [--connections 16,64]
        [--scenarios json,stream] [--workers 1,2] [--half-saturation]
        [--targets direct,gateway,litellm,portkey] [--litellm PATH] [--portkey [PATH]]
        [--json FILE] [--log-dir DIR]

Starts a fake OpenAI upstream (``python -m bench upstream``) in its own process, then,
for each worker count W of ``--workers`` in turn (a "block"), each target in its own
process: ``direct`` (the fake itself: the same process throughout, measured again in
every block so that each block has its own baseline), ``gateway`` (``gateway serve``
with W workers, a generated config and a managed key with RPM, TPM and prepaid credit
on a priced model, so auth, limits and accounting are on), ``litellm`` (when a
``litellm`` executable is on PATH or given with --litellm; ``--num_workers W`` when
W > 1) and ``portkey`` (only with --portkey; one Node process, so only in the W = 1
block). The servers of a block are stopped before the next block starts. Nothing is
installed.

The gateway with W > 1 needs a shared store: compare starts its own ``redis-server``
(from PATH) on a free loopback port, without persistence (``--save "" --appendonly
no``), puts ``[state] redis_url = "redis://127.0.0.1:PORT/0"`` in the generated config,
empties it (FLUSHALL) before each block and stops it at the end. Without redis-server
the gateway is skipped in the W > 1 blocks ("skipped" in the output says so).

Scenarios: ``json`` (non-streamed), ``stream`` (50 content chunks that the upstream
writes at once, unpaced: directive ``chunks=50``) and ``paced`` (50 chunks 1 ms apart:
``chunks=50&chunk_interval_ms=1``). Default: json,stream.

Within a block, for every round, scenario and connection count it runs the same
closed-loop load against each target in turn (A B A B ...), in process with
`bench.loadgen`. Per (scenario, connections, workers, target) it reports the median
over the rounds of: throughput, p50/p99 latency, added p50/p99 over direct in the same
block, CPU per request of the target's process tree (utime + stime of the server and
its descendants from /proc, before and after the run) and the peak RSS of the tree (sum
of VmHWM); then the ratios gateway/peer within the same (scenario, connections,
workers). ``--json FILE`` writes every run's raw figures.

``--half-saturation`` adds, at the end of each block, open-loop runs (a fixed arrival
rate; latency counts from each request's due time) of the json scenario at half the
gateway's saturation, which is its best closed-loop json req/s in that block, each for
--duration, A B A B over the rounds, against direct, the gateway and each peer for which
that rate is below 80% of the peer's own best closed-loop json req/s in the block (a
peer above that is skipped, and "skipped" says why). Its own table gives p50/p99 and
the added p50/p99 over direct, checked against the issue's targets (added p50 < 1 ms,
added p99 < 5 ms). At most max(1024, rate) requests are in flight, one connection each
(`bench.loadgen.runner` drops arrivals beyond its ``max_inflight``); drops are reported
(``dropped``), never silent.

Portkey: ``--portkey`` runs ``npx --no-install @portkey-ai/gateway``; ``--portkey PATH``
runs that executable, e.g. ``node_modules/.bin/gateway`` of an ``npm install
@portkey-ai/gateway``, which also keeps npx's own Node process out of the CPU and RSS
figures. It is started as ``EXE --port=PORT --headless`` (``--port=`` is the only way
to set its port; ``--headless`` drops the web UI and its log stream). It has no config
file: each request names its upstream in headers, which compare sends::

    x-portkey-provider: openai
    x-portkey-custom-host: http://127.0.0.1:UPSTREAM_PORT/v1
    Authorization: Bearer <the fake's key>     (forwarded to the upstream as its key)

with the upstream's own model name (directives included) in the body. 127.0.0.1 is in
Portkey's default TRUSTED_CUSTOM_HOSTS. Its environment loses HTTP(S)_PROXY,
REDIS_CONNECTION_STRING and ALBUS_BASEPATH (the settings that make it connect somewhere
by itself), and NODE_OPTIONS gets ``--import`` of a small preload module (written next
to its log) that (1) makes its server listen on 127.0.0.1 only (it would listen on every
interface), (2) refuses any outgoing connection to a host other than 127.0.0.1,
localhost or ::1, logging "bench-compare: blocked ...", so it cannot reach the
internet, and (3) works around Portkey-AI/gateway issue #1389: with @hono/node-server
> 1.14.2 (npm installs 1.19.x under Portkey 1.15.2) every streamed answer fails with
"TypeError: immutable" (Portkey adds headers to a Response that still holds fetch's
immutable Headers), so the preload gives fetch's event-stream responses a mutable copy
of their headers (a few microseconds per stream). Portkey also sleeps 25 ms before it
relays the first event of every stream (its stream reader does that on purpose): its
stream latency shows it.

Everything listens on 127.0.0.1. Every process started here is in its own process group
and is stopped at the end of its block or of the run (also on Ctrl-C or an error):
SIGINT, then SIGKILL after 5 s. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from bench.fakes.openai import DEFAULT_KEY as UPSTREAM_KEY
from bench.loadgen.runner import LoadConfig, LoadRun

__all__ = ["SCENARIOS", "CompareOptions", "add_parser", "compare", "run"]

HOST = "127.0.0.1"
UPSTREAM_MODEL = "fake-model"
STREAM_DIRECTIVES = "chunks=50"  # written at once by the fake
PACED_DIRECTIVES = "chunks=50&chunk_interval_ms=1"
TARGETS = ("direct", "gateway", "litellm", "portkey")
PORTKEY_NPX = "npx"  # --portkey without a value
HALF_SATURATION_PEER_LIMIT = 0.8  # a peer runs at a rate below this share of its saturation
HALF_SATURATION_TARGETS = {"p50": 0.001, "p99": 0.005}  # added latency, seconds (issue 5)
OPEN_LOOP_MIN_SLOTS = 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    directives: str  # appended to the upstream model name after "@" ("" for none)
    gateway_model: str  # the model name clients send to a gateway

    @property
    def upstream_model(self) -> str:
        return UPSTREAM_MODEL + (f"@{self.directives}" if self.directives else "")


SCENARIOS = {
    "json": Scenario("json", False, "", "m"),
    "stream": Scenario("stream", True, STREAM_DIRECTIVES, "m-stream50"),
    "paced": Scenario("paced", True, PACED_DIRECTIVES, "m-paced50"),
}
DEFAULT_SCENARIOS = ("json", "stream")


@dataclass
class CompareOptions:
    rounds: int = 2
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: Sequence[int] = (16, 64)
    scenarios: Sequence[str] = DEFAULT_SCENARIOS
    targets: Sequence[str] | None = None  # None: direct, gateway and every peer available
    litellm: str | None = None  # path of the litellm executable (None: look on PATH)
    portkey: str | None = None  # PORTKEY_NPX or the path of its executable; None: not run
    workers: Sequence[int] = (1,)  # one block per worker count, in this order
    half_saturation: bool = False
    timeout_s: float = 30.0
    start_timeout_s: float = 60.0
    log_dir: Path | None = None  # where the servers' output goes (default: a temp dir)
    echo: bool = True  # print progress lines on stderr


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on {HOST}:{port} within {timeout_s:g} s")
        time.sleep(0.05)


@dataclass
class Server:
    """One process (group) started by compare."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    base_url: str
    model_for: dict[str, str]  # scenario name -> model name to send
    api_key: str | None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    log_path: Path | None = None


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGINT the process group `proc` leads, then SIGKILL it after `grace_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # Kill what is left of the group (workers that outlived their parent) in any case.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


class Processes:
    """Starts processes in their own group; `close` stops them all, last first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.log_dir,
            )
        self.started.append(proc)
        return proc, log_path

    def close(self) -> None:
        while self.started:
            stop_process(self.started.pop())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.started]


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- /proc -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds so far of each process of the tree of `root`."""
    out = {}
    for pid in process_tree(root):
        st = _stat(pid)
        if st is not None:
            out[pid] = st[1]
    return out


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) of the tree of `root`, in bytes."""
    hwm = rss = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) * 1024
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return hwm, rss


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


# -- targets ---------------------------------------------------------------------


def _python() -> str:
    return sys.executable


def _venv_bin(name: str) -> str:
    """`name` next to the running interpreter (the venv's), else on PATH, else `name`."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or name


def start_upstream(procs: Processes, opts: CompareOptions) -> Server:
    port = free_port()
    proc, log = procs.start(
        "upstream",
        [
            _python(),
            "-m",
            "bench",
            "upstream",
            "--kind",
            "openai",
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        env=_env_with_repo(),
    )
    _wait_listening(proc, port, opts.start_timeout_s, "the fake upstream")
    models = {name: s.upstream_model for name, s in SCENARIOS.items()}
    return Server(
        "direct", proc, port, f"http://{HOST}:{port}/v1", models, UPSTREAM_KEY, log_path=log
    )


def _env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# -- redis (the gateway's shared store when W > 1) ---------------------------------


def _redis_command(port: int, *args: str, timeout_s: float = 2.0) -> bytes:
    """Send one command to the redis on HOST:`port`; return its first reply line."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


def start_redis(procs: Processes, opts: CompareOptions, binary: str) -> str:
    """Start `binary` (redis-server) on a free loopback port; return its redis:// URL."""
    port = free_port()
    proc, log = procs.start(
        "redis",
        [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(procs.log_dir), "--protected-mode", "yes"],
    )  # fmt: skip
    deadline = time.monotonic() + opts.start_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if _redis_command(port, "PING", timeout_s=0.5) == b"+PONG":
                return f"redis://{HOST}:{port}/0"
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer on {HOST}:{port}:\n{_tail(log)}")
        time.sleep(0.05)


def _redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


# -- the gateway -----------------------------------------------------------------


def gateway_config(
    port: int, upstream_url: str, sqlite_path: Path, workers: int, redis_url: str | None = None
) -> str:
    lines = [
        "[server]",
        f'host = "{HOST}"',
        f"port = {port}",
        f"workers = {workers}",
        "[state]",
        f'sqlite_path = "{sqlite_path}"',
    ]
    if redis_url is not None:
        lines.append(f'redis_url = "{redis_url}"')
    lines += [
        "[providers.fake]",
        'kind = "openai"',
        f'base_url = "{upstream_url}"',
        f'api_key = "{UPSTREAM_KEY}"',
    ]
    for scenario in SCENARIOS.values():
        lines += [
            f'[models."{scenario.gateway_model}"]',
            'provider = "fake"',
            f'upstream_model = "{scenario.upstream_model}"',
            "price_input_per_mtok = 0.15",
            "price_output_per_mtok = 0.60",
        ]
    return "\n".join(lines) + "\n"


def start_gateway(
    procs: Processes,
    opts: CompareOptions,
    upstream: Server,
    workers: int = 1,
    redis_url: str | None = None,
) -> Server:
    port = free_port()
    config = procs.log_dir / "gateway.toml"
    config.write_text(
        gateway_config(
            port, upstream.base_url, procs.log_dir / "gateway.sqlite3", workers, redis_url
        )
    )
    gw = _venv_bin("gateway")
    created = subprocess.run(
        [gw, "keys", "create", "--config", str(config), "--name", "bench-compare",
         "--rpm", "10000000", "--tpm", "1000000000", "--credit", "1000000", "--json"],
        capture_output=True, cwd=procs.log_dir, timeout=60, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"gateway keys create failed: {created.stderr.decode(errors='replace')}")
    key = orjson.loads(created.stdout)["key"]
    proc, log = procs.start("gateway", [gw, "serve", "--config", str(config)])
    _wait_listening(proc, port, opts.start_timeout_s, "the gateway")
    models = {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server("gateway", proc, port, f"http://{HOST}:{port}/v1", models, key, log_path=log)


# -- LiteLLM -----------------------------------------------------------------------


def litellm_config(upstream_url: str) -> str:
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


def find_litellm(opts: CompareOptions) -> str | None:
    if opts.litellm:
        return opts.litellm
    return shutil.which("litellm")


def start_litellm(
    procs: Processes, opts: CompareOptions, upstream: Server, exe: str, workers: int = 1
) -> Server:
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
    proc, log = procs.start("litellm", argv, env=env)
    _wait_listening(proc, port, opts.start_timeout_s, "litellm")
    models = {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server(
        "litellm", proc, port, f"http://{HOST}:{port}/v1", models, "sk-bench-litellm", log_path=log
    )


# -- Portkey -----------------------------------------------------------------------

# Loaded into Portkey's Node process with NODE_OPTIONS=--import (see the module doc).
PORTKEY_PRELOAD = r"""// Preload of the Portkey gateway (node --import), by bench/compare.py.
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


def start_portkey(procs: Processes, opts: CompareOptions, upstream: Server) -> Server:
    argv = portkey_command(opts.portkey or PORTKEY_NPX)
    port = free_port()
    preload = procs.log_dir / "portkey-preload.mjs"
    preload.write_text(PORTKEY_PRELOAD)
    env = {k: v for k, v in os.environ.items() if k not in _PORTKEY_ENV_DROP}
    node_options = f"--import={preload.resolve().as_uri()}"
    if env.get("NODE_OPTIONS"):
        node_options += " " + env["NODE_OPTIONS"]
    env["NODE_OPTIONS"] = node_options
    proc, log = procs.start("portkey", [*argv, f"--port={port}", "--headless"], env=env)
    try:
        _wait_listening(proc, port, opts.start_timeout_s, "portkey")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; its log ({log}) ends:\n{_tail(log, 5)}") from None
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


# -- runs ------------------------------------------------------------------------


def _open_loop_slots(rate: float) -> int:
    """Requests in flight allowed in open loop at `rate`: a second of arrivals, at least
    OPEN_LOOP_MIN_SLOTS, within the file descriptors this process may open."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(OPEN_LOOP_MIN_SLOTS, math.ceil(rate))
    if soft != resource.RLIM_INFINITY:
        wanted = min(wanted, max(64, soft - 256))
    return wanted


def _load(
    server: Server,
    scenario: Scenario,
    connections: int | None,
    duration_s: float,
    timeout_s: float,
    rate: float | None = None,
) -> LoadRun:
    """Closed loop with `connections`, or open loop at `rate` when it is given."""
    common: dict[str, Any] = {
        "url": server.base_url,
        "model": server.model_for[scenario.name],
        "stream": scenario.stream,
        "duration_s": duration_s,
        "timeout_s": timeout_s,
        "api_key": server.api_key,
    }
    if rate is not None:
        config = LoadConfig(rate=rate, max_inflight=_open_loop_slots(rate), **common)
    else:
        config = LoadConfig(concurrency=connections, **common)
    load = LoadRun(config)
    if server.extra_headers:
        head = load.workload._head
        headers = list(head.headers) + [(k.encode(), v.encode()) for k, v in server.extra_headers]
        load.workload._head = h11.Request(method=head.method, target=head.target, headers=headers)
    return load


def measure(
    server: Server,
    scenario: Scenario,
    connections: int | None,
    duration_s: float,
    timeout_s: float,
    rate: float | None = None,
) -> dict[str, Any]:
    """One load run against `server` (open loop at `rate` if given), with the CPU and
    memory of its process tree."""
    load = _load(server, scenario, connections, duration_s, timeout_s, rate)
    before = tree_cpu(server.proc.pid)
    trio.run(load.run)
    after = tree_cpu(server.proc.pid)
    hwm, rss = tree_memory(server.proc.pid)
    summary = load.result().summary
    cpu_s = cpu_delta(before, after)
    lat = summary.latency
    return {
        "target": server.name,
        "scenario": scenario.name,
        "mode": summary.mode,
        "connections": connections if rate is None else None,
        "rate_rps": rate,
        "ok": summary.ok,
        "failed": summary.failed,
        "dropped": summary.dropped,
        "errors_by_status": {str(k): v for k, v in summary.errors_by_status.items()},
        "errors_by_kind": dict(summary.errors_by_kind),
        "error_examples": dict(summary.error_examples),
        "duration_s": summary.duration_s,
        "throughput_rps": summary.throughput_rps,
        "achieved_rps": summary.achieved_rps,
        "p50_s": lat.p50 if lat else None,
        "p99_s": lat.p99 if lat else None,
        "send_lag_p99_s": summary.send_lag.p99 if summary.send_lag else None,
        "connections_opened": summary.connections,
        "server_cpu_s": cpu_s,
        "cpu_per_request_s": cpu_s / summary.ok if summary.ok else None,
        "peak_rss_bytes": hwm,
        "rss_bytes": rss,
        "processes": len(after),
        "client_cpu_per_request_s": summary.client_cpu_per_request_s,
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, connections, workers, target): medians over rounds, added latency
    over direct and ratios gateway/peer, both within the same (scenario, connections,
    workers). A run without "workers" counts as workers 1."""
    groups: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["scenario"], r["connections"], r.get("workers", 1), r["target"])
        groups.setdefault(key, []).append(r)
    rows: list[dict[str, Any]] = []
    for (scenario, conns, workers, target), rs in groups.items():
        rows.append(
            {
                "scenario": scenario,
                "connections": conns,
                "workers": workers,
                "target": target,
                "rounds": len(rs),
                "ok": sum(r["ok"] for r in rs),
                "failed": sum(r["failed"] for r in rs),
                "throughput_rps": _median([r["throughput_rps"] for r in rs]),
                "throughput_rps_range": [
                    min(r["throughput_rps"] for r in rs),
                    max(r["throughput_rps"] for r in rs),
                ],
                "p50_s": _median([r["p50_s"] for r in rs]),
                "p99_s": _median([r["p99_s"] for r in rs]),
                "cpu_per_request_s": _median([r["cpu_per_request_s"] for r in rs]),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
            }
        )
    by_key = {(r["scenario"], r["connections"], r["workers"], r["target"]): r for r in rows}
    for row in rows:
        block = (row["scenario"], row["connections"], row["workers"])
        _add_latency_over(row, by_key.get((*block, "direct")))
        gw = by_key.get((*block, "gateway"))
        ratios: dict[str, float | None] = {}
        if gw is not None and row["target"] not in ("gateway", "direct"):
            ratios["throughput"] = _ratio(gw["throughput_rps"], row["throughput_rps"])
            ratios["cpu_per_request"] = _ratio(gw["cpu_per_request_s"], row["cpu_per_request_s"])
            ratios["peak_rss"] = _ratio(gw["peak_rss_bytes"], row["peak_rss_bytes"])
        row["gateway_over_this"] = ratios or None
    return rows


def _add_latency_over(row: dict[str, Any], direct: dict[str, Any] | None) -> None:
    """Set row's added_p50_s/added_p99_s over `direct` (None for direct itself)."""
    for q in ("p50", "p99"):
        mine, base = row[f"{q}_s"], direct and direct[f"{q}_s"]
        row[f"added_{q}_s"] = (
            mine - base
            if mine is not None and base is not None and row["target"] != "direct"
            else None
        )


def summarise_half_saturation(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (workers, target) of the open-loop runs: medians over rounds and the added
    p50/p99 over direct at the same rate; the gateway's rows are checked against
    HALF_SATURATION_TARGETS."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r.get("workers", 1), r["target"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (workers, target), rs in groups.items():
        rows.append(
            {
                "workers": workers,
                "target": target,
                "scenario": rs[0]["scenario"],
                "rounds": len(rs),
                "saturation_rps": rs[0].get("saturation_rps"),
                "rate_rps": _median([r["rate_rps"] for r in rs]),
                "ok": sum(r["ok"] for r in rs),
                "failed": sum(r["failed"] for r in rs),
                "dropped": sum(r.get("dropped", 0) for r in rs),
                "achieved_rps": _median([r.get("achieved_rps") for r in rs]),
                "throughput_rps": _median([r["throughput_rps"] for r in rs]),
                "p50_s": _median([r["p50_s"] for r in rs]),
                "p99_s": _median([r["p99_s"] for r in rs]),
                "send_lag_p99_s": _median([r.get("send_lag_p99_s") for r in rs]),
                "cpu_per_request_s": _median([r["cpu_per_request_s"] for r in rs]),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
            }
        )
    by_key = {(r["workers"], r["target"]): r for r in rows}
    for row in rows:
        _add_latency_over(row, by_key.get((row["workers"], "direct")))
        meets: dict[str, bool | None] | None = None
        if row["target"] == "gateway":
            meets = {
                f"added_{q}": (None if row[f"added_{q}_s"] is None else row[f"added_{q}_s"] < limit)
                for q, limit in HALF_SATURATION_TARGETS.items()
            }
        row["meets_target"] = meets
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:+.2f}" if signed else f"{value * 1000:.2f}"


def _workers_label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers != 1 else "")


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<8} {'conns':>5} {'workers':>7} {'target':<8} {'req/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'CPU/req ms':>10} "
        f"{'peak RSS MB':>11} {'failed':>6}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['scenario']:<8} {r['connections']:>5} {r.get('workers', 1):>7} "
            f"{r['target']:<8} {r['throughput_rps'] or 0:>8,.0f} {_ms(r['p50_s']):>8} "
            f"{_ms(r['p99_s']):>8} {_ms(r['added_p50_s'], True):>8} "
            f"{_ms(r['added_p99_s'], True):>8} {_ms(r['cpu_per_request_s']):>10} "
            f"{r['peak_rss_bytes'] / 2**20:>11.1f} {r['failed']:>6}"
        )
    ratio_lines = []
    for r in rows:
        ratios = r["gateway_over_this"]
        if ratios:
            parts = [f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None]
            ratio_lines.append(
                f"gateway/{r['target']} {r['scenario']} {r['connections']} conns, "
                f"{_workers_label(r.get('workers', 1))}: " + ", ".join(parts)
            )
    if ratio_lines:
        out += ["", *ratio_lines]
    return "\n".join(out)


def format_half_saturation_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'workers':>7} {'target':<8} {'rate/s':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'CPU/req ms':>10} {'dropped':>7} {'failed':>6}"
    )
    out = [
        "half saturation: open loop, json, at half the gateway's best closed-loop json req/s",
        head,
        "-" * len(head),
    ]
    for r in rows:
        out.append(
            f"{r['workers']:>7} {r['target']:<8} {r['rate_rps'] or 0:>8,.0f} "
            f"{r['throughput_rps'] or 0:>8,.0f} {_ms(r['p50_s']):>8} {_ms(r['p99_s']):>8} "
            f"{_ms(r['added_p50_s'], True):>8} {_ms(r['added_p99_s'], True):>8} "
            f"{_ms(r['cpu_per_request_s']):>10} {r['dropped']:>7} {r['failed']:>6}"
        )
    verdicts = []
    for r in rows:
        meets = r.get("meets_target")
        if not meets:
            continue
        parts = []
        for q, limit in HALF_SATURATION_TARGETS.items():
            ok = meets.get(f"added_{q}")
            word = "no direct baseline" if ok is None else ("ok" if ok else "MISSED")
            added = _ms(r[f"added_{q}_s"], True)
            parts.append(f"added {q} {added} ms < {limit * 1000:g} ms {word}")
        verdicts.append(f"gateway, {_workers_label(r['workers'])}: " + "; ".join(parts))
    if verdicts:
        out += ["", *verdicts]
    return "\n".join(out)


# -- the comparison -------------------------------------------------------------------


def _best_json_rps(runs: list[dict[str, Any]], target: str) -> float | None:
    rates = [r["throughput_rps"] for r in runs if r["target"] == target and r["scenario"] == "json"]
    return max(rates) if rates else None


def _half_saturation(
    opts: CompareOptions,
    servers: list[Server],
    block_runs: list[dict[str, Any]],
    workers: int,
    skipped: dict[str, str],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The open-loop runs of one block at half the gateway's json saturation."""
    where = f"(workers {workers})"
    saturation = _best_json_rps(block_runs, "gateway")
    if saturation is None or saturation <= 0:
        skipped[f"half-saturation {where}"] = (
            "needs closed-loop json runs of the gateway in this block "
            "(targets with gateway, scenarios with json)"
        )
        return []
    rate = saturation / 2
    chosen: list[Server] = []
    for server in servers:
        if server.name not in ("direct", "gateway"):
            own = _best_json_rps(block_runs, server.name)
            if own is None or rate >= HALF_SATURATION_PEER_LIMIT * own:
                skipped[f"{server.name} half-saturation {where}"] = (
                    f"half the gateway's saturation, {rate:,.0f} req/s, is not below "
                    f"{HALF_SATURATION_PEER_LIMIT:.0%} of {server.name}'s own saturation, "
                    + (f"{own:,.0f} req/s" if own is not None else "unknown")
                )
                continue
        chosen.append(server)
    json_scenario = SCENARIOS["json"]
    runs: list[dict[str, Any]] = []
    for round_no in range(1, opts.rounds + 1):
        for server in chosen:
            result = measure(server, json_scenario, None, opts.duration_s, opts.timeout_s, rate)
            result.update(round=round_no, workers=workers, saturation_rps=saturation)
            runs.append(result)
            say(
                f"half-saturation round {round_no} {_workers_label(workers)} {server.name} "
                f"at {rate:,.0f} req/s: p50 {_ms(result['p50_s'])} ms, "
                f"p99 {_ms(result['p99_s'])} ms, {result['failed']} failed, "
                f"{result['dropped']} dropped"
            )
    return runs


def compare(opts: CompareOptions) -> dict[str, Any]:
    """Run the comparison; return the document written by --json (raw runs and rows)."""

    def say(text: str) -> None:
        if opts.echo:
            print(text, file=sys.stderr, flush=True)

    scenarios = [SCENARIOS[name] for name in opts.scenarios]
    wanted = list(opts.targets) if opts.targets else list(TARGETS)
    for name in wanted:
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}")
    skipped: dict[str, str] = {}
    started: list[str] = []
    runs: list[dict[str, Any]] = []
    half_runs: list[dict[str, Any]] = []
    said: set[str] = set()  # skipped entries already printed
    litellm_exe: str | None = None
    if "litellm" in wanted:
        litellm_exe = find_litellm(opts)
        if litellm_exe is None:
            skipped["litellm"] = "no litellm executable on PATH (give --litellm PATH)"
    if "portkey" in wanted and not opts.portkey:
        skipped["portkey"] = "not asked for (--portkey [PATH])"
    with contextlib.ExitStack() as stack:
        log_dir = opts.log_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-compare-"))
        )
        procs = Processes(log_dir)
        stack.callback(procs.close)
        upstream = start_upstream(procs, opts)
        redis_url: str | None = None
        if "gateway" in wanted and any(w > 1 for w in opts.workers):
            redis_binary = shutil.which("redis-server")
            if redis_binary is None:
                for w in opts.workers:
                    if w > 1:
                        skipped[f"gateway (workers {w})"] = (
                            "redis-server is not on PATH: gateway serve needs [state] "
                            "redis_url for --workers > 1 (apt-get install redis-server)"
                        )
            else:
                redis_url = start_redis(procs, opts, redis_binary)
        for workers in opts.workers:
            block_dir = log_dir / f"workers-{workers}"
            block_dir.mkdir(parents=True, exist_ok=True)
            block = Processes(block_dir)
            try:
                servers = _start_block(
                    block, opts, upstream, wanted, workers, redis_url, litellm_exe, skipped
                )
                for server in servers:
                    if server.name not in started:
                        started.append(server.name)
                for name, why in skipped.items():
                    if name not in said:
                        said.add(name)
                        say(f"skipping {name}: {why}")
                block_runs = _closed_loop_block(opts, servers, scenarios, workers, say)
                runs += block_runs
                if opts.half_saturation:
                    half_runs += _half_saturation(opts, servers, block_runs, workers, skipped, say)
            finally:
                block.close()
        rows = summarise(runs)
        half_rows = summarise_half_saturation(half_runs)
    return {
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "connections": list(opts.connections),
            "scenarios": list(opts.scenarios),
            "workers": list(opts.workers),
            "half_saturation": opts.half_saturation,
            "portkey": opts.portkey,
        },
        "targets": started,
        "skipped": skipped,
        "rows": rows,
        "runs": runs,
        "half_saturation": {"rows": half_rows, "runs": half_runs},
    }


def _start_block(
    procs: Processes,
    opts: CompareOptions,
    upstream: Server,
    wanted: list[str],
    workers: int,
    redis_url: str | None,
    litellm_exe: str | None,
    skipped: dict[str, str],
) -> list[Server]:
    """Start the targets of the block of `workers` (direct is the running upstream)."""
    servers: list[Server] = []
    for name in wanted:
        if name == "direct":
            servers.append(upstream)
        elif name == "gateway":
            if workers > 1 and redis_url is None:
                continue  # said in skipped
            if redis_url is not None and workers > 1:
                reply = _redis_command(_redis_port(redis_url), "FLUSHALL")
                if reply != b"+OK":
                    raise RuntimeError(f"redis FLUSHALL answered {reply!r}")
            servers.append(
                start_gateway(procs, opts, upstream, workers, redis_url if workers > 1 else None)
            )
        elif name == "litellm":
            if litellm_exe is not None:
                servers.append(start_litellm(procs, opts, upstream, litellm_exe, workers))
        elif name == "portkey":
            if not opts.portkey:
                continue  # said in skipped
            if workers > 1:
                skipped[f"portkey (workers {workers})"] = (
                    "one Node process: runs only in a workers 1 block (when --workers has 1)"
                )
                continue
            servers.append(start_portkey(procs, opts, upstream))
    return servers


def _closed_loop_block(
    opts: CompareOptions,
    servers: list[Server],
    scenarios: list[Scenario],
    workers: int,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Warm-up, then the A B A B closed-loop rounds of one block."""
    label = _workers_label(workers)
    if opts.warmup_s > 0:
        for server in servers:
            for scenario in scenarios:
                say(f"warm-up {label} {server.name} {scenario.name}")
                measure(server, scenario, min(opts.connections), opts.warmup_s, opts.timeout_s)
    runs: list[dict[str, Any]] = []
    for round_no in range(1, opts.rounds + 1):
        for scenario in scenarios:
            for conns in opts.connections:
                for server in servers:
                    result = measure(server, scenario, conns, opts.duration_s, opts.timeout_s)
                    result.update(round=round_no, workers=workers)
                    runs.append(result)
                    say(
                        f"round {round_no} {label} {scenario.name} {conns} conns "
                        f"{server.name}: {result['throughput_rps']:,.0f} req/s, "
                        f"{result['failed']} failed"
                    )
                    if result["ok"] == 0 and result["failed"]:
                        say(f"  errors: {result['error_examples']}\n{_tail(server.log_path)}")
    return runs


# -- command line ----------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need integers >= 1: {text!r}")
    return values


def _name_list(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}: {text!r}")
        return names

    return parse


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``compare`` subcommand and return its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="side by side: the upstream direct, our gateway and installed peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2, help="A B A B rounds (default 2)")
    parser.add_argument(
        "--duration", type=float, default=5.0, metavar="S", help="seconds per run (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, metavar="S",
        help="warm-up per target and scenario in each block (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=_int_list, default=[16, 64], metavar="N,N", help="default 16,64"
    )
    parser.add_argument(
        "--scenarios", type=_name_list(list(SCENARIOS)), default=list(DEFAULT_SCENARIOS),
        metavar="S,S",
        help="json (non-stream), stream (50 chunks at once), paced (50 chunks 1 ms apart); "
        "default json,stream",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_int_list, default=[1], metavar="N,N",
        help="worker counts, one block each: gateway workers, litellm --num_workers "
        "(default 1; gateway N > 1 uses a redis-server that compare starts)",
    )  # fmt: skip
    parser.add_argument(
        "--half-saturation", action="store_true",
        help="also run open loop at half the gateway's json saturation (per block)",
    )  # fmt: skip
    parser.add_argument(
        "--targets", type=_name_list(list(TARGETS)), default=None,
        metavar="T,T", help="default: direct, gateway and every peer available",
    )  # fmt: skip
    parser.add_argument("--litellm", metavar="PATH", help="litellm executable (default: on PATH)")
    parser.add_argument(
        "--portkey", nargs="?", const=PORTKEY_NPX, default=None, metavar="PATH",
        help="also run Portkey: its gateway executable at PATH, or without PATH "
        "npx --no-install @portkey-ai/gateway",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per request")
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep configs and server logs here"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw figures here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``compare`` with parsed `args`: print the table, write --json."""
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        print(
            "python -m bench compare: --rounds >= 1, --duration > 0, --warmup >= 0", file=sys.stderr
        )
        return 2
    opts = CompareOptions(
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        scenarios=args.scenarios,
        targets=args.targets,
        litellm=args.litellm,
        portkey=args.portkey,
        workers=list(dict.fromkeys(args.workers)),  # each count once, in the order given
        half_saturation=args.half_saturation,
        timeout_s=args.timeout,
        log_dir=args.log_dir,
    )
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        doc = compare(opts)
    except KeyboardInterrupt:
        print("python -m bench compare: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"python -m bench compare: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_table(doc["rows"]), flush=True)
    half_rows = doc["half_saturation"]["rows"]
    if half_rows:
        print("\n" + format_half_saturation_table(half_rows), flush=True)
    if doc["skipped"]:
        print("\nskipped:", flush=True)
        for name, why in doc["skipped"].items():
            print(f"  {name}: {why}", flush=True)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    return 0 if all(r["ok"] for r in [*doc["rows"], *half_rows]) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry until ``compare`` is wired into ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(parser.parse_args(["compare", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
