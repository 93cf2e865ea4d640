"""After every other test has run: every object the API returned to the stripe SDK during the
session, checked against Stripe's own response schemas (tests/conformance).

Each response body is walked into the Stripe objects it holds (a list's items, an event's
`data.object`, expanded fields, a charge's refunds), and each object is checked by itself. A
table per object type says how many were seen, which fields they had, which Stripe always
returns but they lacked, and how many values had the wrong type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conformance.schemas import SERVED_OBJECTS, check, defined_fields, walk

from .recording import is_recording, recorded_bodies

pytestmark = [pytest.mark.integration, pytest.mark.after_everything]

# Every object Clearline serves, and its error shape, must have been seen and checked.
MUST_SEE = (*sorted(SERVED_OBJECTS), "error")
SHOWN_PER_TYPE = 10  # violations and nested paths listed per type; the counts are complete


@dataclass
class TypeSummary:
    schema_name: str
    seen: int = 0
    present: set[str] = field(default_factory=set)
    missing: Counter[str] = field(default_factory=Counter)
    nested_missing: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)

    @property
    def defined(self) -> set[str]:
        return defined_fields(self.schema_name)


@dataclass
class Conformance:
    bodies: int
    types: dict[str, TypeSummary]

    def table(self) -> str:
        lines = [
            f"Stripe conformance of {self.bodies} recorded response bodies",
            f"{'object type':<26}{'seen':>7}{'fields present/defined':>24}{'violations':>12}"
            "  missing fields (objects lacking them)",
        ]
        for name in sorted(self.types):
            summary = self.types[name]
            fields = f"{len(summary.present)}/{len(summary.defined)}"
            missing = ", ".join(f"{key} ({n})" for key, n in sorted(summary.missing.items()))
            lines.append(
                f"{name:<26}{summary.seen:>7}{fields:>24}"
                f"{sum(summary.violations.values()):>12}  {missing or '-'}"
            )
        for name in sorted(self.types):
            summary = self.types[name]
            if summary.nested_missing:
                lines.append(f"{name}: sub-object fields missing:")
                lines += [
                    f"    {path} ({n})"
                    for path, n in summary.nested_missing.most_common(SHOWN_PER_TYPE)
                ]
            if summary.violations:
                lines.append(f"{name}: type violations:")
                lines += [
                    f"    {violation} ({n})"
                    for violation, n in summary.violations.most_common(SHOWN_PER_TYPE)
                ]
        return "\n".join(lines)


def conformance_of(bodies: list[dict[str, Any]]) -> Conformance:
    types: dict[str, TypeSummary] = {}
    for body in bodies:
        for name, obj in walk(body):
            report = check(obj, name, nested_objects=False)  # nested ones are walked to
            summary = types.setdefault(name, TypeSummary(name))
            summary.seen += 1
            summary.present |= report.present
            summary.missing.update(report.missing)
            summary.nested_missing.update(report.nested_missing)
            summary.violations.update(report.violations)
    return Conformance(len(bodies), types)


def test_every_object_matches_stripes_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert is_recording(), (
        "nothing was recorded: tests/integration/conftest.py must call start_recording()"
    )
    bodies = recorded_bodies()
    assert bodies, "the stripe SDK received no JSON body this session: nothing to check"
    conformance = conformance_of(bodies)
    table = conformance.table()
    print(table)
    with capsys.disabled():
        print(f"\n{table}\n")

    # Every kind of problem is listed, so that one does not hide another.
    problems = []
    unseen = [name for name in MUST_SEE if name not in conformance.types]
    if unseen:
        problems.append(f"never received through the SDK: {', '.join(unseen)}")
    for name, summary in sorted(conformance.types.items()):
        if summary.violations:
            shown = "; ".join(sorted(summary.violations)[:SHOWN_PER_TYPE])
            problems.append(
                f"{name}: {sum(summary.violations.values())} values of the wrong type: {shown}"
            )
        if summary.missing or summary.nested_missing:
            fields = [*sorted(summary.missing), *sorted(summary.nested_missing)]
            problems.append(f"{name}: fields Stripe always returns, missing: {', '.join(fields)}")
    assert not problems, "\n".join(problems)
