"""`bms-emu scenario`: scripted tests against the simulated pack, with a pass / fail line
per expectation, an exit status for CI and an optional JUnit XML report."""

from __future__ import annotations

import argparse
import json
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

from bms.data.validation import InputError, Problems
from bms_emu.output_paths import check_output_path
from hil.scenario import ScenarioResult, run_scenario
from hil.scenario_file import Scenario, load_scenario


def add_parser(sub) -> None:
    p = sub.add_parser(
        "scenario", help="run scripted scenarios (TOML) and report pass / fail",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run each scenario file against the simulated pack: its pack and load, "
        "a timeline of injections, host requests, configuration writes and rig silences, and "
        "its expectations. Prints one line per expectation; exits 1 if any fails, 2 if a file "
        "is bad (every problem is listed and nothing runs). See README.md, 'Scenarios'.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.toml", help="scenario files")
    p.add_argument("--junit", metavar="PATH.xml",
                   help="write a JUnit XML report: a testsuite per file, a testcase per "
                   "expectation")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="changes",
                   help="set a key over each file's, to run its story on another pack or "
                   "load: --set pack.series=416 --set pack.chemistry=na-nvpf --set "
                   "load.profile=cycles:2 --set tick=1 (repeatable)")
    p.set_defaults(handler=handle)


def parse_changes(items: list[str]) -> dict[str, object]:
    """`--set KEY=VALUE` items: each value read as a TOML value (416, 0.5, true), else
    taken as text (na-nvpf). The keys and values are checked with the file's."""
    changes, problems = {}, []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            problems.append(f"{item!r}: give KEY=VALUE, e.g. pack.series=416")
            continue
        try:
            changes[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            changes[key] = text
        except RecursionError:  # as `read_toml` says it
            problems.append(f"{key}: arrays or inline tables nested too deep to read")
        except ValueError as exc:  # an integer of over 4300 digits
            problems.append(f"{key}: cannot read the value: {str(exc).split(';')[0]}")
    if problems:
        raise InputError("--set", problems)
    return changes


def load_all(paths: list[str], changes: dict | None = None) -> list[Scenario]:
    """Every file read and checked before any runs; InputError lists every bad file."""
    scenarios, problems = [], []
    for path in paths:
        try:
            scenarios.append(load_scenario(path, changes))
        except InputError as exc:
            problems.extend(f"{exc.source}: {p}" for p in exc.problems)
    if problems:
        raise InputError("scenario files", problems)
    return scenarios


def handle(args) -> int:
    problems = Problems("bms-emu scenario")
    check_output_path(problems, "--junit", args.junit)
    problems.raise_if_any()
    results = [run_scenario(sc) for sc in load_all(args.files, parse_changes(args.changes))]
    if args.junit:
        write_junit(results, args.junit)
    if args.json:
        print(json.dumps(as_dict(results)))
    else:
        print_report(results)
    return 0 if all(r.passed for r in results) else 1


def as_dict(results: list[ScenarioResult]) -> dict:
    return {
        "passed": all(r.passed for r in results),
        "scenarios": [{
            "file": r.scenario.path,
            "name": r.scenario.name,
            "passed": r.passed,
            "sim_s": round(r.sim_s, 3),
            "wall_s": round(r.wall_s, 3),
            "checks": [{"name": v.check.label, "where": v.check.where, "passed": v.passed,
                        "message": v.message} for v in r.verdicts],
            "events": [e.as_dict() for e in r.events],
        } for r in results],
    }


def print_report(results: list[ScenarioResult]) -> None:
    for r in results:
        sc = r.scenario
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
    print(f"{len(results)} scenario(s), {n} expectation(s), {failed} failed")


def junit_tree(results: list[ScenarioResult]) -> ET.ElementTree:
    root = ET.Element("testsuites", name="bms-emu scenario",
                      tests=str(sum(len(r.verdicts) for r in results)),
                      failures=str(sum(r.failures for r in results)), errors="0",
                      time=f"{sum(r.wall_s for r in results):.3f}")
    for r in results:
        sc = r.scenario
        suite = ET.SubElement(root, "testsuite", name=sc.name, file=sc.path,
                              tests=str(len(r.verdicts)), failures=str(r.failures),
                              errors="0", skipped="0", time=f"{r.wall_s:.3f}")
        if sc.description:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="description", value=sc.description)
        classname = f"scenario.{Path(sc.path).stem}"
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


def write_junit(results: list[ScenarioResult], path: str) -> None:
    try:
        junit_tree(results).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise InputError("--junit", [f"{path}: cannot write the report: {exc.strerror}"]) \
            from exc
