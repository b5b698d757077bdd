"""`bms-emu nvm show|export|reset PATH`: look into, export or reset a pack's persistent
store. The store of a running emulator is held exclusively: stop it first."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from bms.core.counters import EXTREMES
from bms.data.faults import subject_text
from bms.data.validation import Problems
from bms.store.nvm import check_resettable, export, reset
from bms_emu.output_paths import check_output_path

SHOWN_LOG_ENTRIES = 20
SHOWN_CHANGES = 10


def add_parser(sub) -> None:
    p = sub.add_parser(
        "nvm",
        description="Inspect a pack's persistent store (serve keeps one under "
        "$XDG_DATA_HOME/bms-emu/nvm/<pack-id>-<sim|hil>.sqlite by default; run with --nvm "
        "PATH). show: a summary; export: everything as JSON; reset: delete it, so the pack "
        "starts afresh (asks first unless --yes); reset also deletes a damaged store, one "
        "of another pack or of a newer bms-emu, or an empty file. A running emulator holds "
        "its store: stop it first.")
    p.add_argument("action", choices=("show", "export", "reset"))
    p.add_argument("path", metavar="PATH", help="the store (an SQLite file)")
    p.add_argument("-o", "--output", metavar="FILE", help="export: write here, not stdout")
    p.add_argument("--yes", action="store_true", help="reset: do not ask")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    if args.action == "reset":
        return _reset(args.path, args.yes)
    problems = Problems("bms-emu nvm")
    check_output_path(problems, "--output", args.output)
    problems.raise_if_any()
    data = export(args.path)
    if args.action == "export":
        text = json.dumps(data, indent=1, allow_nan=False)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        else:
            print(text)
        return 0
    print("\n".join(summary_lines(data, args.path)))
    return 0


def _reset(path: str, yes: bool) -> int:
    check_resettable(path)  # refuses a missing, foreign or running store before asking
    if not yes:
        if not sys.stdin.isatty():
            print(f"bms-emu nvm: reset {path} deletes its contents; not asked on a terminal, "
                  "so nothing was done: give --yes", file=sys.stderr)
            return 1
        answer = input(f"Delete {path} (configuration, SoC, counters, latched faults, fault "
                       "log)? Type yes: ")
        if answer.strip().lower() != "yes":
            print("bms-emu nvm: nothing done", file=sys.stderr)
            return 1
    reset(path)
    print(f"bms-emu nvm: {path} reset; the pack starts afresh next time")
    return 0


def _when(unix_s: float | None) -> str:
    if unix_s is None:
        return "-"
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def summary_lines(data: dict, path: str) -> list[str]:
    pack, saved = data["pack"], data["saved"]
    lines = [f"store {path} (schema version {data['schema_version']})"]
    if pack:
        lines.append(f"pack: {pack['n_series']} cells of {pack['chemistry']}, "
                     f"{pack['capacity_ah']:g} Ah, pack id {pack['pack_id'] or '-'} "
                     f"({pack['mode'] or '-'}); created {_when(pack['created_unix_s'])}")
    lines.append(f"boots: {len(data['boots'])}")
    if saved is None:
        lines.append("saved: nothing yet")
    else:
        soc = "-" if saved["soc_pct"] is None else f"{saved['soc_pct']:.2f} %"
        capacity = min(saved["cell_capacity_ah"])
        lines += [
            f"saved: boot {saved['boot']} at {saved['saved_at_s']:.1f} s "
            f"({_when(saved['saved_unix_s'])}), {saved['reason']}; state {saved['state']}",
            f"SoC {soc}; weakest cell {capacity:.4g} Ah",
            "latched: " + (", ".join(sorted({r[0] for r in saved["latched_rows"]}
                                             | set(saved["latched_faults"]))) or "none"),
            "locked out until a service action: " + (", ".join(saved["locked_out"]) or "none"),
            "trips towards lockout: " + (", ".join(
                f"{name} {len(ages)}" for name, ages in sorted(
                    saved["lockout_trip_ages_s"].items())) or "none"),
            "empty hold: " + ("none" if saved["empty_hold_charged_ah"] is None else
                              f"discharge held until charged, "
                              f"{saved['empty_hold_charged_ah']:.4g} Ah taken back so far"),
        ]
        c = saved["counters"]
        cycles = c["charge_out_ah"] / pack["capacity_ah"] if pack else float("nan")
        lines += [
            f"throughput: in {c['charge_in_ah']:.3f} Ah / {c['energy_in_wh']:.1f} Wh, "
            f"out {c['charge_out_ah']:.3f} Ah / {c['energy_out_wh']:.1f} Wh, "
            f"{cycles:.2f} equivalent cycles",
            f"contactors: {c['contactor_cycles']} closings, {c['opened_under_load']} "
            f"openings under load",
            "time in state: " + ", ".join(f"{k} {v:.0f} s"
                                          for k, v in c["time_in_state_s"].items() if v),
            "extremes: " + ", ".join(f"{k} {c['extremes'][k]:.4g}" for k in EXTREMES
                                     if c["extremes"].get(k) is not None),
        ]
    log = data["fault_log"]
    lines.append(f"fault log: {len(log)} entries"
                 + (f", the last {SHOWN_LOG_ENTRIES}:" if len(log) > SHOWN_LOG_ENTRIES else ""))
    for e in log[-SHOWN_LOG_ENTRIES:]:
        where = subject_text(e)
        lines.append(f"  boot {e['boot']} {e['t_s']:10.1f} s  {e['level']:7} {e['name']}"
                     f"{' ' + where if where else ''} {e['action']}")
    changes = data["config_changes"]
    lines.append(f"configuration writes: {len(changes)}")
    for ch in changes[-SHOWN_CHANGES:]:
        lines.append(f"  {_when(ch['unix_s'])} {ch['who']}: {ch['param']} "
                     f"{ch['old']!r} -> {ch['new']!r}")
    return lines
