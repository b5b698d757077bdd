"""A campaign's summary: which cases held, at a glance, after the per-expectation lines."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hil.scenario_campaign import case_label
from hil.scenario_sweep import CaseError, Outcome

RESULT_STYLES = {"PASS": "green", "FAIL": "red", "ERROR": "bold red"}


def case_row(r: Outcome) -> tuple[str, str, str, str]:
    """(file, case, PASS / FAIL / ERROR, the first failing check or the error); what was
    found is in the lines above the table."""
    sc = r.scenario
    file, case = Path(sc.path).name, case_label(sc.case) if sc.case else "(as written)"
    if isinstance(r, CaseError):
        return file, case, "ERROR", r.message
    failing = [v.check.label for v in r.verdicts if not v.passed]
    more = f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""
    return file, case, "FAIL" if failing else "PASS", failing[0] + more if failing else ""


def print_campaign_table(results: list[Outcome]) -> None:
    rows = [case_row(r) for r in results]
    held = sum(row[2] == "PASS" for row in rows)
    table = Table(title=f"campaign: {held} of {len(rows)} case(s) held")
    for column in ("file", "case", "result", "first failing check"):
        table.add_column(column, overflow="fold")  # a narrow terminal wraps, never cuts
    for path, case, result, check in rows:
        # Text, not markup: a grid point's `timeline[1]` is not a style
        table.add_row(Text(path), Text(case), Text(result, RESULT_STYLES[result]), Text(check))
    Console().print(table)
