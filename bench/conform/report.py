"""The conformance report: as text for a person, as JSON, as JUnit XML for CI.

Per model and property: passed (with the fields the endpoint declared unsupported, if
any), not applicable (and why), or failed with the evidence: the violations, the
shrunk request, each exchange's status, headers and response bytes, and a curl line
that sends the request again (the key as ``$CONFORM_KEY``).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.conform.http import KEY_VARIABLE, Exchange, encode_json
from bench.conform.runner import Result

__all__ = ["as_json", "as_text", "write_junit"]

_SHOWN_BYTES = 3000  # of a response body in the text report (all of it in JSON)


def _body_text(data: bytes, limit: int | None = None) -> str:
    shown = data if limit is None else data[:limit]
    text = shown.decode("utf-8", errors="backslashreplace")
    if limit is not None and len(data) > limit:
        text += f"\n... ({len(data) - limit} more bytes)"
    return text


def _exchange_text(exchange: Exchange, number: int, total: int) -> list[str]:
    title = f"  exchange {number} of {total}:" if total > 1 else "  exchange:"
    lines = [
        title,
        "    " + exchange.curl(),
        "    -> " + exchange.head_text().replace("\n", "\n       "),
    ]
    if exchange.transport_error:
        lines.append(f"    transport error: {exchange.transport_error}")
    body = _body_text(exchange.response, _SHOWN_BYTES)
    lines += ["    " + line for line in body.splitlines() or ["(empty body)"]]
    return lines


def _verdict(result: Result) -> str:
    if result.status == "passed":
        return f"passed ({result.checked} cases)"
    if result.status == "not applicable":
        return f"not applicable: {result.reason}"
    return "FAILED"


def as_text(results: Sequence[Result], endpoint: str) -> str:
    """The whole report, for a terminal."""
    lines = [f"conformance of {endpoint}", ""]
    width = max((len(r.property.name) for r in results), default=10)
    for result in results:
        lines.append(f"{result.model}  {result.property.name:<{width}}  {_verdict(result)}")
        for feature, declined in result.declined.items():
            lines.append(
                f"    declared unsupported: {feature} (param {declined.param!r}, "
                f"{declined.status}: {declined.message})"
            )
        for reason, count in result.skipped.items():
            lines.append(f"    set aside: {reason} ({count}x)")
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        lines += ["", f"== {result.model} {result.property.name}: {result.property.summary}"]
        if result.reason:
            lines.append(f"  note: {result.reason}")
        failure = result.failure
        if failure is None:
            continue
        lines.append("  violations:")
        lines += [f"    - {v}" for v in failure.outcome.violations]
        if failure.case.mutation is not None:
            lines.append(f"  mutation: {failure.case.mutation.describe()}")
        shown = failure.case.shown()
        request = encode_json(shown, indent=True) if isinstance(shown, dict) else shown
        lines.append("  shrunk request:")
        text = request.decode() if isinstance(request, bytes) else repr(request)
        lines += ["    " + line for line in text.splitlines()]
        total = len(failure.outcome.exchanges)
        for k, exchange in enumerate(failure.outcome.exchanges, start=1):
            lines += _exchange_text(exchange, k, total)
    counts = {
        s: sum(r.status == s for r in results) for s in ("passed", "failed", "not applicable")
    }
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items())]
    if failed:
        lines.append(f"(curl lines send the key as ${KEY_VARIABLE}: export it first)")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    """`value`, or its JSON text when orjson cannot write it (a huge integer)."""
    try:
        orjson.dumps(value)
    except TypeError:
        return encode_json(value).decode()
    return value


def _exchange_json(exchange: Exchange) -> dict[str, Any]:
    try:
        body: dict[str, Any] = {"text": exchange.response.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"base64": base64.b64encode(exchange.response).decode()}
    return {
        "request": {
            "url": exchange.url,
            "headers": exchange.headers,
            "body": exchange.body.decode("utf-8", errors="replace"),
        },
        "curl": exchange.curl(),
        "status": exchange.status,
        "headers": exchange.response_headers,
        "body": body,
        "transport_error": exchange.transport_error,
    }


def as_json(results: Sequence[Result], endpoint: str, options: dict[str, Any]) -> dict[str, Any]:
    """The report as a JSON document, every byte of the evidence included."""
    out = []
    for result in results:
        item: dict[str, Any] = {
            "model": result.model,
            "property": result.property.name,
            "group": result.property.group,
            "summary": result.property.summary,
            "status": result.status,
            "reason": result.reason,
            "cases": result.checked,
            "seconds": round(result.seconds, 3),
            "declared_unsupported": [
                {"feature": f, "param": d.param, "status": d.status, "message": d.message}
                for f, d in result.declined.items()
            ],
            "set_aside": result.skipped,
        }
        if result.failure is not None:
            failure = result.failure
            item["failure"] = {
                "violations": [
                    {"rule": v.rule, "where": v.where, "message": v.message}
                    for v in failure.outcome.violations
                ],
                "request": _jsonable(failure.case.shown()),
                "mutation": failure.case.mutation.describe() if failure.case.mutation else None,
                "exchanges": [_exchange_json(e) for e in failure.outcome.exchanges],
            }
        out.append(item)
    return {"endpoint": endpoint, "options": options, "results": out}


def write_junit(path: Path, results: Sequence[Result], endpoint: str) -> None:
    """One JUnit test case per model and property; failures carry the text evidence."""
    suite = ET.Element(
        "testsuite",
        name=f"conformance {endpoint}",
        tests=str(len(results)),
        failures=str(sum(r.status == "failed" for r in results)),
        skipped=str(sum(r.status == "not applicable" for r in results)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"conform.{result.model}",
            name=result.property.name,
            time=f"{result.seconds:.3f}",
        )
        if result.status == "not applicable":
            ET.SubElement(case, "skipped", message=result.reason)
        elif result.status == "failed":
            failure = result.failure
            first = str(failure.outcome.violations[0]) if failure else result.reason
            node = ET.SubElement(case, "failure", message=first)
            node.text = as_text([result], endpoint)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
