"""docs/reliability.md R22: a canary key and prompt are found nowhere they must not be.

A served gateway at its most verbose (`--log-level debug`) gets requests that carry
canary secrets (a config key, a managed key, the admin key, the upstream's key, a wrong
key) and a canary prompt, through success, streams, refusals and upstream failures.
Then every log line, every file of the state directory (SQLite, its WAL, the journal)
and every error body is searched: no secret anywhere, the prompt in no log and no file.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.fakes.threaded import run_fake_openai
from tests.observability.served import serve

CONFIG_KEY = "sk-CANARY-config-key-5f0d1c"
ADMIN_KEY = "sk-CANARY-admin-key-88e2b7"
UPSTREAM_KEY = "sk-CANARY-upstream-key-c3a9"
WRONG_KEY = "sk-CANARY-wrong-key-190e4f"
PROMPT = "CANARY-PROMPT-the-owl-flies-at-midnight-4e7d"
CONFIG = """
[state]
sqlite_path = "{dir}/state/gw.sqlite3"
admin_key = "{admin}"
[providers.fake]
kind = "openai"
base_url = "{fake}"
api_key = "{upstream}"
[providers.mock]
kind = "mock"
[models."gpt-test"]
provider = "fake"
upstream_model = "fake-model"
[models."mock-priced"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
price_input_per_mtok = 10
price_output_per_mtok = 100
[[keys]]
name = "canary"
key = "{key}"
"""


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_secret_or_prompt_in_any_log_file_or_error_body(tmp_path: Path) -> None:
    body = {"messages": [{"role": "user", "content": PROMPT}]}
    errors: list[bytes] = []
    with run_fake_openai(api_key=UPSTREAM_KEY) as (_, fake_url):
        text = CONFIG.format(
            dir=tmp_path, admin=ADMIN_KEY, fake=fake_url, upstream=UPSTREAM_KEY, key=CONFIG_KEY
        )
        with serve(tmp_path, text, "--log-level", "debug") as gw:
            chat = f"{gw.url}/chat/completions"
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            new = {"name": "managed", "credit_micros": 1_000_000}
            created = httpx.post(f"{gw.base}/admin/keys", json=new, headers=admin)
            assert created.status_code == 201, created.text
            managed = created.json()["key"]
            time.sleep(1.2)  # the key cache's refresh
            for key in (CONFIG_KEY, managed):
                auth = {"authorization": f"Bearer {key}"}
                for model in ("gpt-test", "mock-priced"):
                    for stream in (False, True):
                        r = httpx.post(
                            chat, json={**body, "model": model, "stream": stream}, headers=auth
                        )
                        assert r.status_code == 200, r.text
            auth = {"authorization": f"Bearer {CONFIG_KEY}"}
            failures = [
                ({**body, "model": "gpt-test"}, {"authorization": f"Bearer {WRONG_KEY}"}),
                ({**body, "model": "fake/m@status=401"}, auth),  # the upstream refuses our key
                ({**body, "model": "fake/m@status=500"}, auth),
                ({**body, "model": "fake/m@status=400"}, auth),
                ({**body, "model": "no-such-model"}, auth),
                ({"model": "gpt-test", "messages": [{"role": PROMPT, "content": "x"}]}, auth),
            ]
            for payload, headers in failures:
                r = httpx.post(chat, json=payload, headers=headers)
                assert r.status_code >= 400
                errors.append(r.content)
            cut = {**body, "model": "fake/m@error_after=2&chunks=5", "stream": True}
            errors.append(httpx.post(chat, json=cut, headers=auth).content)
            bad_admin = httpx.get(
                f"{gw.base}/admin/keys", headers={"authorization": f"Bearer {WRONG_KEY}"}
            )
            errors.append(bad_admin.content)
            errors.append(httpx.get(f"{gw.base}/metrics").content)
            time.sleep(0.5)  # the ledger writer's flush
        assert gw.proc.returncode == 0
    secrets = [CONFIG_KEY, ADMIN_KEY, UPSTREAM_KEY, WRONG_KEY, managed]
    logs = gw.stderr.read_bytes() + gw.stdout.read_bytes()
    assert b"gateway.access" in logs and b'"level":"debug"' in logs  # it did log, verbosely
    stored = files_under(tmp_path / "state")
    assert any(p.name == "gw.sqlite3" for p in stored)
    for canary in [*secrets, PROMPT]:
        needle = canary.encode()
        assert needle not in logs, canary
        for path in stored:
            assert needle not in path.read_bytes(), (canary, path)
    for secret in secrets:
        for error in errors:
            assert secret.encode() not in error, (secret, error)
    # The secret part of a managed key is nowhere, even in part (its public id may be).
    secret_part = managed.rsplit("-", 1)[1][:20].encode()
    assert secret_part not in logs
