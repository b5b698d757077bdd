"""`bms-emu replay`: the firmware on a recorded measurement trace."""

from __future__ import annotations

import json
from pathlib import Path

from bms.data.validation import InputError, Problems
from bms_emu.output_paths import check_output_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "replay",
        description="Run the firmware on a CSV of recorded measurements, one firmware step "
        "per row at the row's time: time_s, current_a (positive = charging), v1..vN and "
        "optionally t1..tM (25 °C when absent); other columns are ignored. Writes the "
        "estimates per row: pack and cell SoC, state, faults, SoH, offset, energy.")
    p.add_argument("csv", metavar="MEAS.csv", help="recorded measurements")
    p.add_argument("--cell", required=True, metavar="PROFILE|PRESET",
                   help="the cell: a preset name (bms-emu chemistries) or a cell profile TOML")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="estimates, one row per row")
    p.add_argument("--initial-soc", type=float, metavar="PCT",
                   help="start the estimator from this SoC (a stored value) instead of the "
                   "rest voltage")
    p.add_argument("--parallel", type=int, default=1, metavar="P",
                   help="cells in parallel per measured cell")
    p.add_argument("--config", metavar="FILE.toml", help="firmware configuration overrides")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from bms.core.firmware import Firmware
    from bms.data.config import default_config
    from bms.data.config_toml import load_config
    from bms.data.presets import resolve_chemistry
    from hil.replay import read_trace, replay, replay_config

    problems = Problems("bms-emu replay")
    if args.initial_soc is not None:
        problems.check_range("--initial-soc", args.initial_soc, 0.0, 100.0)
    problems.check_range("--parallel", args.parallel, 1, 1000)
    if Path(args.out).resolve() == Path(args.csv).resolve():
        problems.add("--out", args.out, "is the input file: the recording would be lost")
    else:
        check_output_path(problems, "--out", args.out)
    problems.raise_if_any()
    chemistry = resolve_chemistry(args.cell)
    trace = read_trace(args.csv, chemistry)
    n_series = trace.cell_voltage_v.shape[1]
    capacity_ah = chemistry.capacity_ah * args.parallel
    config = (load_config(args.config, chemistry, n_series, capacity_ah) if args.config
              else default_config(chemistry, n_series, capacity_ah))
    firmware = Firmware(chemistry, n_series, capacity_ah, replay_config(config),
                        stored_soc=None if args.initial_soc is None else args.initial_soc / 100)
    try:
        out = open(args.out, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError("--out", [f"{args.out!r}: cannot write: {exc.strerror}"]) from exc
    with out:
        act = replay(trace, firmware, out)
    summary = {"rows": int(trace.time_s.size), "series": n_series,
               "temperature_sensors": int(trace.temperature_c.shape[1]),
               "duration_s": round(float(trace.time_s[-1] - trace.time_s[0]), 3),
               "final": {"state": act.state, **act.estimate.as_dict()},
               "fault_events": len(firmware.log), "out": args.out}
    if args.json:
        print(json.dumps(summary))
    else:
        final = summary["final"]
        print(f"{summary['rows']} rows, {n_series} cells, {summary['duration_s']:g} s -> "
              f"{args.out}")
        print(f"final: {final['state']}, SoC {final['soc_pct']:.2f} %, SoH "
              f"{final['soh_pct']:.1f} %, offset {final['current_offset_a']:+.4f} A, "
              f"remaining {final['remaining_wh']:.2f} Wh")
    return 0
