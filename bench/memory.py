"""``python -m bench memory``: where a gateway worker's memory goes, at rest.

    python -m bench memory [--config FILE] [--top N] [--json FILE]

Runs a fresh interpreter (so nothing of this one is counted) that starts a worker step
by step and reads its resident memory (VmRSS) after each step:

1. the bare interpreter;
2. ``import trio``;
3. the gateway's imports (``gateway.__main__``, the app, the server): tracemalloc
   attributes what they allocate to the top-level package whose code ran (the frozen
   import machinery skipped), so the table says which libraries the MBs are;
4. the app served (``gateway.server.serve`` on a loopback port, lifespan started: the
   store, the ledger, the key cache, the pools), i.e. a worker at rest;
5. the tokenizer tables the config's models count with (``tokens.preload``), which a
   worker builds when a request first needs a count (a key with limits).

With ``--streams N`` a third probe serves the gateway in front of a fake upstream (in
its own process) with a managed key, as ``bench idle`` does, starts tracemalloc once the
worker is at rest and a first stream went through, has a client process open N
streams that stay idle after their first content event, and says what the gateway
allocated per stream, by the gateway line that allocated it (the innermost gateway
frame of each allocation; others by package), beside the RSS it added per stream.

Without --config it uses the config ``bench compare`` generates (a fake OpenAI provider
and one priced model per scenario, every one counted with o200k_base) and an empty
SQLite file in a temporary directory. The memory of streams on top of that is measured
by ``python -m bench idle`` (per idle stream) and ``bench compare`` (peak RSS under load).
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.processes import env_with_repo
from bench.subcommand import add_output_options, write_json

__all__ = ["add_parser", "probe", "run"]

PROBE = (
    "import json; from bench.memory import probe; "
    "print(json.dumps(probe({config!r}, {top}, {traced})))"
)
STREAMS_PROBE = (
    "import json; from bench.memory import probe_streams; "
    "print(json.dumps(probe_streams({n}, {top})))"
)
STAGES = ("interpreter", "trio", "gateway imports", "app served", "tokenizer tables")


def _rss_mb() -> dict[str, float]:
    """VmRSS and its parts: anonymous (the heap) and file-backed (code, shared libraries)."""
    status = Path("/proc/self/status").read_text()
    out = {}
    for key, name in (("VmRSS", "rss"), ("RssAnon", "anon"), ("RssFile", "file")):
        match = re.search(rf"{key}:\s+(\d+) kB", status)
        out[name] = int(match.group(1)) / 1024 if match else 0.0
    return out


def _package(filename: str) -> str:
    """The top-level package (or stdlib module) a source file belongs to."""
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else filename
    if "gateway" in parts:
        return "gateway." + parts[parts.index("gateway") + 1].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    return "stdlib:" + (parts[-2] if parts[-1] == "__init__.py" else path.stem)


def probe(config_path: str, top: int, traced: bool) -> dict[str, Any]:
    """Run in a fresh interpreter: the stages' RSS; or (`traced`: tracemalloc's own
    memory would distort the RSS) what the imports allocate, by package."""
    rss = {"interpreter": _rss_mb()}
    import tracemalloc

    if traced:
        tracemalloc.start(8)  # the innermost frames: enough to skip the import machinery
    import trio

    rss["trio"] = _rss_mb()
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.tokens.count import preload

    rss["gateway imports"] = _rss_mb()
    if not traced:
        return {"rss_mb": rss | _started(config_path, trio, create_app, load_config, preload)}
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_package: dict[str, int] = {}
    for stat in snapshot.statistics("traceback"):
        frames = [f.filename for f in stat.traceback]  # most recent call last
        owner = next(
            (f for f in reversed(frames) if not f.startswith("<frozen") and "tracemalloc" not in f),
            frames[-1],
        )
        name = _package(owner)
        by_package[name] = by_package.get(name, 0) + stat.size
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    return {
        "traced_imports_mb": sum(by_package.values()) / 2**20,
        "imports_by_package_mb": {k: v / 2**20 for k, v in ranked[:top]},
        "imports_other_mb": sum(v for _, v in ranked[top:]) / 2**20,
    }


def _started(
    config_path: str, trio: Any, create_app: Any, load_config: Any, preload: Any
) -> dict[str, dict[str, float]]:
    """The RSS once the app is served (at rest), then with the tokenizer tables."""
    import gateway.server.serve

    rss = {}
    config = load_config(config_path)

    async def served() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.server.serve.serve, create_app(config), "127.0.0.1", 0)
            await trio.sleep(1.0)  # the background tasks' first rounds
            rss["app served"] = _rss_mb()
            preload(m.upstream_model for m in config.models.values())
            rss["tokenizer tables"] = _rss_mb()
            nursery.cancel_scope.cancel()

    trio.run(served)
    return rss


CLIENT = """
import sys, trio
from bench.idle import IDLE_MODEL, chat_request
from bench.loadgen.client import Target
from bench.loadgen.hold import hold_streams

async def main(url, key, n):
    target = Target.from_base_url(url)
    head, body = chat_request(target, key, IDLE_MODEL, True)
    async with hold_streams(target, head, body, n, ramp_per_s=500, max_pending=64,
                            open_timeout_s=120) as state:
        await state.all_done.wait()
        print(f"opened {state.opened} failed {state.failures}", flush=True)
        await trio.sleep_forever()

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def _owner(frames: list[str], lines: list[int]) -> str:
    """Who allocated: the innermost gateway frame (file:line), else the package."""
    for filename, line in zip(reversed(frames), reversed(lines), strict=True):
        if "/gateway/" in filename and "site-packages" not in filename:
            return "gateway/" + filename.rsplit("/gateway/", 1)[1] + f":{line}"
    inner = next((f for f in reversed(frames) if not f.startswith("<frozen")), frames[-1])
    return _package(inner)


def probe_streams(n: int, top: int) -> dict[str, Any]:
    """Run in a fresh interpreter: what N idle streams cost the worker, by allocator."""
    import tracemalloc

    import trio

    from bench.idle import gateway_setup
    from bench.lag import _create_key
    from bench.processes import Processes
    from bench.targets import gateway_config, start_upstream
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.server.serve import serve

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-streams-") as tmp:
        log_dir = Path(tmp)
        procs = Processes(log_dir)
        try:
            upstream = start_upstream(procs, 60.0)
            config_path = log_dir / "gateway.toml"
            setup = gateway_setup(n, 60.0)
            config_path.write_text(
                gateway_config(0, upstream.base_url, log_dir / "g.sqlite3", 1, setup=setup)
            )
            key = _create_key(config_path, log_dir)
            config = load_config(config_path)

            async def main() -> None:
                async with trio.open_nursery() as nursery:
                    port = await nursery.start(serve, create_app(config), "127.0.0.1", 0)
                    url = f"http://127.0.0.1:{port}/v1"
                    await _one_stream(url, key)  # tokenizer built, pools warm
                    await trio.sleep(1.0)
                    rss0 = _rss_mb()
                    tracemalloc.start(16)
                    client = await trio.lowlevel.open_process(
                        [sys.executable, "-c", CLIENT, url, key, str(n)],
                        stdout=subprocess.PIPE, env=env_with_repo(),
                    )  # fmt: skip
                    assert client.stdout is not None
                    said = b""
                    while b"\n" not in said:
                        data = await client.stdout.receive_some(1024)
                        if not data:
                            break
                        said += data
                    await trio.sleep(2.0)  # the last streams settle
                    snapshot = tracemalloc.take_snapshot()
                    rss1 = _rss_mb()
                    tracemalloc.stop()
                    client.kill()
                    await client.wait()
                    by: dict[str, int] = {}
                    for stat in snapshot.statistics("traceback"):
                        frames = [f.filename for f in stat.traceback]
                        lines = [f.lineno for f in stat.traceback]
                        who = _owner(frames, lines)
                        by[who] = by.get(who, 0) + stat.size
                    ranked = sorted(by.items(), key=lambda kv: -kv[1])
                    result.update(
                        client=said.decode(errors="replace").strip(),
                        streams=n,
                        rss_added_per_stream_kb=(rss1["rss"] - rss0["rss"]) * 1024 / n,
                        traced_per_stream_kb=sum(by.values()) / 1024 / n,
                        per_stream_by_allocator_b={k: v / n for k, v in ranked[:top]},
                        per_stream_other_b=sum(v for _, v in ranked[top:]) / n,
                    )
                    nursery.cancel_scope.cancel()

            trio.run(main)
        finally:
            procs.close()
    return result


async def _one_stream(url: str, key: str) -> None:
    """One normal stream through the gateway, read to its end."""
    import trio

    from bench.idle import STREAM_MODEL, normal_request
    from bench.loadgen.client import Target

    with trio.fail_after(30):
        said = await normal_request(Target.from_base_url(url), key, STREAM_MODEL, True)
    if said != "ok":
        raise RuntimeError(f"a first stream through the gateway failed: {said}")


def _default_config(directory: Path) -> Path:
    from bench.targets import gateway_config

    path = directory / "gateway.toml"
    path.write_text(
        gateway_config(0, "http://127.0.0.1:9/v1", directory / "gateway.sqlite3", workers=1)
    )
    return path


def format_report(doc: dict[str, Any]) -> str:
    rss = doc["rss_mb"]
    lines = [
        "stage                RSS MB   added  (heap  files)",
        "-" * 50,
    ]
    previous = {"rss": 0.0, "anon": 0.0, "file": 0.0}
    for stage in STAGES:
        value = rss.get(stage)
        if value is None:
            continue
        added = {k: value[k] - previous[k] for k in previous}
        lines.append(
            f"{stage:<20} {value['rss']:>6.1f} {added['rss']:>+7.1f}  "
            f"({added['anon']:>+5.1f} {added['file']:>+6.1f})"
        )
        previous = value
    lines += ["", f"gateway imports, by package (tracemalloc, {doc['traced_imports_mb']:.1f} MB):"]
    for name, mb in doc["imports_by_package_mb"].items():
        lines.append(f"  {name:<36} {mb:>6.2f} MB")
    lines.append(f"  {'(the rest)':<36} {doc['imports_other_mb']:>6.2f} MB")
    streams = doc.get("streams")
    if streams:
        lines += [
            "",
            f"{streams['streams']} idle streams ({streams['client']}): "
            f"{streams['rss_added_per_stream_kb']:.1f} KB RSS per stream, "
            f"{streams['traced_per_stream_kb']:.1f} KB of it allocated by Python (tracemalloc)",
            "per stream, by the gateway line (or package) that allocated it:",
        ]
        for name, size in streams["per_stream_by_allocator_b"].items():
            lines.append(f"  {name:<52} {size:>8,.0f} B")
        lines.append(f"  {'(the rest)':<52} {streams['per_stream_other_b']:>8,.0f} B")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``memory``."""
    parser = subparsers.add_parser(
        "memory", help="where a gateway worker's memory goes at rest, stage by stage"
    )
    parser.add_argument("--config", help="the gateway config (default: compare's)")
    parser.add_argument("--top", type=int, default=20, help="packages listed (default 20)")
    parser.add_argument(
        "--streams", type=int, default=0, metavar="N",
        help="also hold N idle streams and say what each costs (default: none)",
    )  # fmt: skip
    add_output_options(parser, "write the figures here")


def _probe(script: str) -> dict[str, Any] | None:
    """Run a probe script in a fresh interpreter: its last line of output, as JSON;
    None (and why, on stderr) if it failed."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, check=False, env=env_with_repo(),
    )  # fmt: skip
    if done.returncode != 0:
        print(f"python -m bench memory: the probe failed:\n{done.stderr}", file=sys.stderr)
        return None
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def run(args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        config = args.config or str(_default_config(Path(tmp)))
        for traced in (False, True):
            # A bare interpreter: only this module and what the worker imports.
            found = _probe(PROBE.format(config=config, top=args.top, traced=traced))
            if found is None:
                return 1
            doc |= found
        if args.streams > 0:
            found = _probe(STREAMS_PROBE.format(n=args.streams, top=args.top))
            if found is None:
                return 1
            doc["streams"] = found
    print(format_report(doc), flush=True)
    write_json(args.json, doc)
    return 0
