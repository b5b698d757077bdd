"""`bms-emu scenario`: scripted tests against the simulated pack, with a pass / fail line
per expectation, an exit status for CI and an optional JUnit XML report."""

from __future__ import annotations

import json
import os
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from bms.data.validation import InputError, Problems
from bms_emu.campaign_table import print_campaign_table
from bms_emu.help_format import DefaultsShown
from bms_emu.output_paths import check_output_path
from hil.scenario_campaign import Grid, check_grid, load_cases
from hil.scenario_file import Scenario
from hil.scenario_sweep import (
    CaseError,
    Engine,
    Outcome,
    ProcessPoolEngine,
    SerialEngine,
    run_cases,
)
from hil.scenario_sweep_dask import DaskEngine


def add_parser(sub) -> None:
    p = sub.add_parser(
        "scenario",
        formatter_class=DefaultsShown,
        description="Run each scenario file against the simulated pack: its pack and load, "
        "a timeline of injections, host requests, configuration writes and rig silences, and "
        "its expectations. Prints one line per expectation; exits 1 if any fails, 2 if a file "
        "is bad (every problem is listed and nothing runs). See README.md, 'Scenarios'.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.toml", help="scenario files")
    p.add_argument("--junit", metavar="PATH.xml",
                   help="write a JUnit XML report: a testsuite per file (per case in a "
                   "campaign), a testcase per expectation")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="changes",
                   help="set a key over each file's, to run its story on another pack or "
                   "load: --set pack.series=416 --set pack.chemistry=na-nvpf --set "
                   "load.profile=cycles:2 --set tick=1 (repeatable)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a campaign: run each file once per value (a key as --set takes it; "
                   "repeated: the product of all grids), over the file's [campaign] table: "
                   "--grid pack.seed=1,2,3 --grid 'timeline[0].inject=[\"internal-short:"
                   "cell=3,resistance_ohm=5\", \"internal-short:cell=7,resistance_ohm=5\"]' "
                   "(a TOML array where a value has commas)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run the cases on N processes of this machine (0: one per core); "
                   "the reports are those of a serial run")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the cases on a Dask distributed cluster, e.g. tcp://host:8786 "
                   "(needs bms-emu[cluster]; the workers need the package, not the files)")
    p.set_defaults(handler=handle)


def parse_changes(items: list[str], option: str = "--set",
                  read: Callable[[str], object] | None = None) -> dict[str, object]:
    """`--set KEY=VALUE` items: each value read as a TOML value (416, 0.5, true), else
    taken as text (na-nvpf). The keys and values are checked with the file's; a key given
    twice is refused. `read` reads another option's values (`--grid`)."""
    changes, problems = {}, []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            problems.append(f"{item!r}: give KEY=VALUE, e.g. pack.series=416")
            continue
        if key in changes:  # the last would win silently, the first lost
            problems.append(f"{key}: given twice: give each key once"
                            + (", all its values in one (KEY=V1,V2,...)" if read else ""))
            continue
        try:
            changes[key] = (read or _value_or_text)(text)
        except RecursionError:  # as `read_toml` says it
            problems.append(f"{key}: arrays or inline tables nested too deep to read")
        except ValueError as exc:  # an integer of over 4300 digits
            problems.append(f"{key}: cannot read the value: {str(exc).split(';')[0]}")
    if problems:
        raise InputError(option, problems)
    return changes


def _value_or_text(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _values(text: str) -> object:
    """`1,2,3` or `[1, 2, 3]` read as a TOML array; else the comma-separated texts, each
    read as `--set` reads a value (`na-nfm,na-nvpf`)."""
    values = _value_or_text(text if text.lstrip().startswith("[") else f"[{text}]")
    if isinstance(values, list):
        return values
    return [_value_or_text(part.strip()) for part in text.split(",")]


def parse_grid(items: list[str]) -> Grid:
    """`--grid KEY=V1,V2,...` items; each key's values checked as a [campaign] table's."""
    problems = Problems("--grid")
    grid = check_grid(problems, parse_changes(items, "--grid", _values), "--grid")
    problems.raise_if_any()
    return grid


def load_all(paths: list[str], changes: dict | None = None,
             grid: Grid | None = None) -> list[Scenario]:
    """Every file's cases read and checked before any runs; InputError lists every bad
    file."""
    scenarios, problems = [], []
    for path in paths:
        try:
            scenarios.extend(load_cases(path, changes, grid))
        except InputError as exc:
            problems.extend(f"{exc.source}: {p}" for p in exc.problems)
    if problems:
        raise InputError("scenario files", problems)
    return scenarios


def choose_engine(problems: Problems, jobs: int, dask_address: str | None) -> Engine:
    """Serial, a process pool or a Dask cluster: the same cases, the same reports."""
    problems.check_range("--jobs", jobs, 0)
    if dask_address is not None and jobs != 1:
        problems.add("--jobs", jobs, "give --jobs or --dask, not both")
    if dask_address is not None:
        return DaskEngine(dask_address)
    n_workers = jobs if jobs > 0 else len(os.sched_getaffinity(0))  # the cores it may use
    return SerialEngine() if n_workers == 1 else ProcessPoolEngine(n_workers)


def handle(args) -> int:
    problems = Problems("bms-emu scenario")
    check_output_path(problems, "--junit", args.junit)
    engine = choose_engine(problems, args.jobs, args.dask)
    problems.raise_if_any()
    changes, grid = parse_changes(args.changes), parse_grid(args.grid)
    if both := [key for key in changes if key in grid]:  # one would be lost
        raise InputError("bms-emu scenario", [
            f"{key}: given to both --set and --grid: give it to one" for key in both])
    cases = load_all(args.files, changes, grid)
    results = run_cases(cases, engine)
    if isinstance(engine, ProcessPoolEngine) and (reran := engine.reran):
        names = "; ".join(f"{sc.path} ({sc.name})" for sc in reran)
        print(f"bms-emu scenario: a worker process died, and its pool with it: the "
              f"{len(reran)} case(s) its workers were running ran again, and their verdicts "
              f"are of that run: {names}", file=sys.stderr)
    if args.junit:
        write_junit(results, args.junit)
    if args.json:
        print(json.dumps(as_dict(results), default=str))
    else:
        print_report(results)
        if any(r.scenario.case for r in results):
            print_campaign_table(results)
    return 0 if all(r.passed for r in results) else 1


def as_dict(results: list[Outcome]) -> dict:
    return {
        "passed": all(r.passed for r in results),
        "scenarios": [{
            "file": r.scenario.path,
            "name": r.scenario.name,
            "case": dict(r.scenario.case),
            "passed": r.passed,
            **({"error": r.message, "detail": r.detail} if isinstance(r, CaseError) else {}),
            "sim_s": round(r.sim_s, 3),
            "wall_s": round(r.wall_s, 3),
            "checks": [{"name": v.check.label, "where": v.check.where, "passed": v.passed,
                        "message": v.message} for v in r.verdicts],
            "events": [e.as_dict() for e in r.events],
        } for r in results],
    }


def print_report(results: list[Outcome]) -> None:
    for r in results:
        sc = r.scenario
        if isinstance(r, CaseError):
            print(f"ERROR {sc.path} ({sc.name}): {r.message}")
            if r.detail != r.message:  # a traceback
                print("\n".join(f"         {line}" for line in r.detail.splitlines()))
            continue
        verdict = "PASS" if r.passed else "FAIL"
        print(f"{verdict} {sc.path} ({sc.name}): {len(r.verdicts) - r.failures}/"
              f"{len(r.verdicts)} passed, {r.sim_s:g} s simulated in {r.wall_s:.2f} s")
        for v in r.verdicts:
            line = f"  {'ok  ' if v.passed else 'FAIL'} {v.check.label}"
            print(line if v.passed else f"{line}\n         {v.message}")
        if not r.passed:  # what happened, to read the failure against
            for e in r.events:
                print(f"         {e.describe()}")
    n = sum(len(r.verdicts) for r in results)
    failed = sum(r.failures for r in results)
    errors = sum(isinstance(r, CaseError) for r in results)
    print(f"{len(results)} scenario(s), {n} expectation(s), {failed} failed"
          + (f", {errors} could not run" if errors else ""))


def junit_tree(results: list[Outcome]) -> ET.ElementTree:
    """A testsuite per case; a case that could not run is one testcase `run` in error."""
    errors = sum(isinstance(r, CaseError) for r in results)
    root = ET.Element("testsuites", name="bms-emu scenario",
                      tests=str(sum(len(r.verdicts) for r in results) + errors),
                      failures=str(sum(r.failures for r in results)), errors=str(errors),
                      time=f"{sum(r.wall_s for r in results):.3f}")
    for r in results:
        sc = r.scenario
        error = isinstance(r, CaseError)
        suite = ET.SubElement(root, "testsuite", name=sc.name, file=sc.path,
                              tests=str(len(r.verdicts) + error), failures=str(r.failures),
                              errors=str(int(error)), skipped="0", time=f"{r.wall_s:.3f}")
        if sc.description:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="description", value=sc.description)
        classname = f"scenario.{Path(sc.path).stem}"
        if error:
            case = ET.SubElement(suite, "testcase", classname=classname, name="run", time="0")
            ET.SubElement(case, "error", message=r.message, type="CaseError").text = r.detail
        for v in r.verdicts:
            case = ET.SubElement(suite, "testcase", classname=classname, name=v.check.label,
                                 time="0")
            if not v.passed:
                failure = ET.SubElement(case, "failure", message=v.message,
                                        type="ExpectationFailed")
                failure.text = "\n".join([v.message, "fault events:",
                                          *(e.describe() for e in r.events)])
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: list[Outcome], path: str) -> None:
    try:
        junit_tree(results).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise InputError("--junit", [f"{path}: cannot write the report: {exc.strerror}"]) \
            from exc
