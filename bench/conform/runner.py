"""Run one property against one model with hypothesis, driven from code.

`run_property` wraps the property's judge in a ``@given`` test with fixed settings
(`examples` cases, a `seed`, no example database, no deadline, health checks off:
the endpoint's speed is not the test's) and calls it. When a case fails, the judge
raises `PropertyFailed` carrying the evidence; hypothesis shrinks the case, replays the
smallest failing one last, and that replay's evidence is what propagates out. Cases
the endpoint declined (see `bench.conform.properties`) are rejected, so hypothesis
draws others; if it can find none it accepts, the property is not applicable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings
from hypothesis.errors import Flaky, FlakyFailure, Unsatisfiable

from bench.conform.properties import Case, Context, Declined, Outcome, Property

__all__ = ["PropertyFailed", "Result", "run_property"]

Status = Literal["passed", "failed", "not applicable"]


class PropertyFailed(Exception):
    """A case broke the property: the case and how it went."""

    def __init__(self, case: Case, outcome: Outcome) -> None:
        super().__init__(f"{len(outcome.violations)} violation(s)")
        self.case = case
        self.outcome = outcome


@dataclass
class Result:
    """One property's verdict on one model, with the evidence."""

    property: Property
    model: str
    status: Status = "passed"
    reason: str = ""  # why not applicable; or a note on a pass or failure
    checked: int = 0  # cases judged (not set aside), shrinking included
    declined: dict[str, Declined] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failure: PropertyFailed | None = None
    first_failure: Case | None = None  # the first failing case, before shrinking
    seconds: float = 0.0


def run_property(
    prop: Property, ctx: Context, examples: int, seed_value: int, shrink: bool = True
) -> Result:
    """Hold `ctx`'s endpoint and model to `prop` on up to `examples` cases."""
    result = Result(prop, ctx.model)
    started = time.monotonic()
    missing = prop.unavailable(ctx)
    if missing is not None:
        result.status, result.reason = "not applicable", missing
        return result
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=phases,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @seed(seed_value)
    @given(prop.cases(ctx))
    def holds(case: Case) -> None:
        outcome = prop.judge(ctx, case)
        if outcome.declined is not None:
            result.declined.setdefault(outcome.declined.feature, outcome.declined)
            ctx.declared.setdefault(outcome.declined.feature, outcome.declined)
            reject()
        if outcome.skipped is not None:
            result.skipped[outcome.skipped] = result.skipped.get(outcome.skipped, 0) + 1
            reject()
        result.checked += 1
        if outcome.violations:
            if result.first_failure is None:
                result.first_failure = case
            raise PropertyFailed(case, outcome)

    try:
        holds()
    except PropertyFailed as failed:
        result.status, result.failure = "failed", failed
    except (Flaky, FlakyFailure) as exc:
        found = _first_failure(exc)
        result.status, result.failure = "failed", found
        result.reason = "flaky: the shrunk case did not fail again; this is the first failure"
    except Unsatisfiable:
        result.status = "not applicable"
        result.reason = _why_nothing_checked(result)
    else:
        if result.checked == 0:
            result.status, result.reason = "not applicable", _why_nothing_checked(result)
    finally:
        result.seconds = time.monotonic() - started
    return result


def _first_failure(exc: BaseException) -> PropertyFailed | None:
    """The PropertyFailed inside a hypothesis Flaky error, if there is one."""
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, PropertyFailed):
            return current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        if current.__cause__ is not None:
            stack.append(current.__cause__)
        if current.__context__ is not None:
            stack.append(current.__context__)
    return None


def _why_nothing_checked(result: Result) -> str:
    reasons = [f"declared unsupported: {name} (param {d.param!r}, {d.status}: {d.message})"
               for name, d in result.declined.items()]  # fmt: skip
    reasons += [f"{reason} ({count}x)" for reason, count in result.skipped.items()]
    return "; ".join(reasons) or "no case could be drawn"
