"""``python -m bench conform`` finds bugs: every defect of the broken endpoint is reported
by the property whose contract it breaks, with a shrunk case, and the same endpoint with
no defect passes every property. Plus the tool's report, JSON, JUnit and exit status.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.__main__ import main
from bench.conform import conform, select
from bench.conform.broken import DEFECTS, FAIL_MODEL, KEY, serve
from bench.conform.http import Endpoint
from bench.conform.properties import Case
from bench.conform.runner import Result
from bench.fakes.threaded import BackgroundTrio

MODEL = "mock-conform"
EXAMPLES = 15

# Each defect and the properties that must report it: the sentence of the contract it
# breaks (bench/conform/broken.py) names the property.
REPORTED_BY = {
    "chunk_ids": ["stream"],
    "created_changes": ["stream"],
    "no_role": ["stream"],
    "tool_index": ["stream"],
    "name_late": ["stream"],
    "arguments_cut": ["stream", "tool_calls"],
    "finish_twice": ["stream"],
    "content_after_finish": ["stream"],
    "usage_in_finish": ["stream"],
    "usage_unasked": ["stream"],
    "no_done": ["stream"],
    "one_newline": ["stream"],
    "stream_differs": ["stream_agrees"],
    "no_usage_details": ["completion"],
    "n_ignored": ["completion"],
    "arguments_object": ["completion"],
    "undeclared_tool": ["tool_calls"],
    "tool_choice_ignored": ["tool_calls"],
    "max_tokens_ignored": ["max_tokens"],
    "schema_ignored": ["structured_output"],
    "error_without_type": ["invalid_request", "invalid_json", "auth"],
    "500_for_bad_field": ["invalid_request"],
    "wrong_param": ["invalid_request"],
    "bad_key_403": ["auth"],
    "no_auth": ["auth"],
    "silent_cut": ["mid_stream_error"],
    "done_after_error": ["mid_stream_error"],
}


def run(defects: list[str], only: str | None = None) -> list[Result]:
    with BackgroundTrio[int](serve(defects), name="broken") as port:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", KEY, timeout_s=10)
        try:
            return conform(
                endpoint, [MODEL], select(only), examples=EXAMPLES, seed=0, error_model=FAIL_MODEL
            )
        finally:
            endpoint.close()


def size(value: object) -> int:
    """How big a case is: the number of its JSON nodes."""
    if isinstance(value, dict):
        return 1 + sum(size(v) for v in value.values())
    if isinstance(value, list | tuple):
        return 1 + sum(size(v) for v in value)
    return 1


def case_size(case: Case) -> int:
    return size((case.body, case.raw, case.auth))


def test_every_defect_has_its_properties() -> None:
    assert set(REPORTED_BY) == set(DEFECTS)


def test_the_correct_endpoint_passes_every_property() -> None:
    results = run([])
    assert [(r.property.name, r.status, r.reason) for r in results if r.status != "passed"] == []
    assert all(r.checked >= EXAMPLES for r in results)


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_is_reported_by_its_property_with_a_shrunk_case(defect: str) -> None:
    results = {r.property.name: r for r in run([defect], ",".join(REPORTED_BY[defect]))}
    for name in REPORTED_BY[defect]:
        result = results[name]
        assert result.status == "failed", (defect, name, result.status, result.reason)
        failure, first = result.failure, result.first_failure
        assert failure is not None and first is not None
        assert failure.outcome.violations and failure.outcome.exchanges
        assert case_size(failure.case) <= case_size(first), "not shrunk"


def test_shrinking_reaches_the_smallest_request() -> None:
    result = run(["no_done"], "stream")[0]
    assert result.property.name == "stream" and result.failure is not None
    request = result.failure.case.body
    assert request == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "stream": True,
    }
    assert [v.rule for v in result.failure.outcome.violations] == ["stream.end"]


@pytest.fixture
def broken_url() -> Iterator[str]:
    with BackgroundTrio[int](serve(["no_done"]), name="broken") as port:
        yield f"http://127.0.0.1:{port}/v1"


def test_cli_reports_and_exits_1_on_a_failure(
    broken_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    argv = ["conform", "--url", broken_url, "--key", KEY, "--model", MODEL, "--examples", "5"]
    argv += ["--only", "stream,auth", "--json", str(out_json), "--junit", str(out_xml)]
    assert main(argv) == 1
    out = capsys.readouterr()
    assert "stream         FAILED" in out.out and "auth           passed" in out.out
    assert "curl -sS -N" in out.out and '"Authorization: Bearer $CONFORM_KEY"' in out.out
    assert KEY not in out.out  # the key is never written into a report
    assert "[" in out.err  # the progress line
    doc = orjson.loads(out_json.read_bytes())
    by_name = {r["property"]: r for r in doc["results"]}
    assert by_name["auth"]["status"] == "passed"
    failure = by_name["stream"]["failure"]
    assert failure["violations"][0]["rule"] == "stream.end"
    assert failure["exchanges"][0]["body"]["text"].startswith("data: ")
    suite = ET.parse(out_xml).getroot()
    assert suite.get("failures") == "1" and suite.get("tests") == "3"


def test_cli_exits_0_when_every_property_holds(broken_url: str) -> None:
    argv = ["conform", "--url", broken_url, "--key", KEY, "--model", MODEL, "--examples", "3"]
    assert main([*argv, "--only", "completion", "--quiet"]) == 0


def test_cli_refuses_an_unknown_property(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["conform", "--url", "http://127.0.0.1:9/v1", "--model", "m", "--only", "streams"]
    assert main(argv) == 2
    assert "unknown streams" in capsys.readouterr().err


def test_auth_is_not_applicable_without_a_key(broken_url: str) -> None:
    endpoint = Endpoint(broken_url, None)
    (result,) = conform(endpoint, [MODEL], select("auth"), examples=3)
    endpoint.close()
    assert result.status == "not applicable" and "--key" in result.reason


def test_cli_says_when_the_url_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["conform", "--url", "http://127.0.0.1:9/v1", "--model", "m", "--quiet"]
    assert main(argv) == 1
    assert "ConnectError" in capsys.readouterr().err
