"""`bms-emu fit`: a complete cell profile from a user's lab data, validated on held-out data."""

from __future__ import annotations

import json
from pathlib import Path

from bms.data.validation import InputError, Problems
from bms_emu.output_paths import check_output_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit",
        description="Fit a cell profile to lab files of one cell (CSV time_s,current_a,"
        "voltage_v[,temp_c], positive = charging): the OCV's charge and discharge branches "
        "from C/20 runs (or long rests), R0 and two RC pairs by SoC (and temperature, given "
        "files at several) from an HPPC test, capacity and coulombic efficiency from full "
        "cycles. Part of the data is held out and the fitted model's voltage error on it is "
        "printed. README: 'Fit a cell profile from lab data' gives the tests.")
    p.add_argument("csv", nargs="+", metavar="DATA.csv", help="lab files (any order)")
    p.add_argument("--out", required=True, metavar="CELL.toml", help="profile to write")
    p.add_argument("--name", default="fitted-cell", help="the profile's name")
    p.add_argument("--holdout", type=float, default=0.2, metavar="SHARE",
                   help="share of the HPPC levels held out (and the last full cycle, given "
                   "two or more); 0 holds nothing out (default 0.2)")
    p.add_argument("--v-min", type=float, metavar="V",
                   help="the cell's lower limit (default: the lowest voltage in the data)")
    p.add_argument("--v-max", type=float, metavar="V", help="the cell's upper limit "
                   "(default: the highest in the data, at least the charge voltage + 20 mV)")
    p.add_argument("--plot", metavar="FIT.png", help="draw data against the fitted model")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from hil.fitting.fit import FitOptions, fit_cell, read_all
    from hil.fitting.profile_toml import profile_toml

    problems = Problems("bms-emu fit")
    problems.check_range("--holdout", args.holdout, 0.0, 0.5)
    if not args.name.strip():
        problems.add("--name", args.name, "must be a non-empty name")
    for flag, value in (("--v-min", args.v_min), ("--v-max", args.v_max)):
        if value is not None:
            problems.check_range(flag, value, 0.0, 10.0)
    if args.v_min is not None and args.v_max is not None and args.v_min >= args.v_max:
        problems.add("--v-min", args.v_min, f"must be below --v-max ({args.v_max:g})")
    if any(Path(args.out).resolve() == Path(c).resolve() for c in args.csv):
        problems.add("--out", args.out, "is one of the input files")
    else:
        check_output_path(problems, "--out", args.out, {"toml"})
    if args.plot:
        from hil.plot import image_types

        check_output_path(problems, "--plot", args.plot, image_types())
    problems.raise_if_any()
    result = fit_cell(read_all(args.csv), FitOptions(args.name.strip(), args.holdout,
                                                     args.v_min, args.v_max))
    comments = [f"bms-emu fit {' '.join(args.csv)}",
                f"held out: {', '.join(result.held_out) or 'nothing'}"]
    text = profile_toml(result.profile, comments)
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError("--out", [f"{args.out!r}: cannot write: {exc.strerror}"]) from exc
    if args.plot:
        from hil.fitting.fit_plot import plot_fit

        plot_fit(result, args.plot)
    profile = result.profile
    summary = {"out": args.out, "capacity_ah": round(profile["capacity_ah"], 5),
               "coulombic_efficiency": profile.get("coulombic_efficiency"),
               "charge_v": profile["thresholds"]["charge_v"],
               "limits": profile["limits"], "ecm": profile["ecm"],
               "held_out": result.held_out, "notes": result.notes,
               "residuals": [r.as_dict() for r in result.residuals]}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.out}: capacity {profile['capacity_ah']:.4f} Ah, coulombic efficiency "
          f"{profile.get('coulombic_efficiency', 1.0):.4f}, charge to "
          f"{profile['thresholds']['charge_v']:.3f} V, limits {profile['limits']['v_min']:g}-"
          f"{profile['limits']['v_max']:g} V")
    for note in result.notes:
        print(f"  {note}")
    print(f"held out: {', '.join(result.held_out) or 'nothing'}")
    print(f"{'segments':<10}{'part':<10}{'rows':>9}{'rms mV':>9}{'max mV':>9}")
    for r in result.residuals:
        d = r.as_dict()
        print(f"{d['kind']:<10}{d['part']:<10}{d['rows']:>9}{d['rms_mv']:>9.2f}"
              f"{d['max_mv']:>9.2f}")
    return 0
