"""`bms-emu run`: the firmware against the simulated pack on a simulated clock."""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from bms.chemistry import resolve_chemistry
from bms.config_toml import load_config
from bms.durations import parse_duration_s
from bms.firmware import Firmware
from bms.presets import DEFAULT_PRESET
from bms.validation import InputError, Problems
from hil.injections import injection_help, parse_injection
from hil.loads import resolve_profile
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run, summary
from hil.sensors import SensorSpec


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run the firmware against a simulated pack (headless)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run the BMS firmware against a simulated sodium-ion pack on a simulated "
        "clock, as fast as possible or paced, and print a summary. Durations accept seconds "
        "or a number with s, m, h or d (3600, 90m, 24h, 1h30m).",
    )
    p.add_argument("--chemistry", default=DEFAULT_PRESET, metavar="NAME|PATH",
                   help="chemistry preset (see `bms-emu chemistries`) or cell profile TOML")
    p.add_argument("--series", type=int, default=16, metavar="N", help="cells in series")
    p.add_argument("--parallel", type=int, default=1, metavar="P",
                   help="cells in parallel per series group")
    p.add_argument("--capacity-ah", type=float, default=None, metavar="AH",
                   help="capacity of one cell, Ah (default: the chemistry's)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="firmware configuration overriding any subset of the defaults "
                   "(see `bms-emu config --defaults`)")
    p.add_argument("--profile", default="datacenter", metavar="NAME|PATH",
                   help="load: datacenter, pulses[:SEED] (random -2C..+0.5C pulses with rests), "
                   "rest, current:A, power:W (negative = discharge) or a CSV file with "
                   "time_s,current_a or time_s,power_w")
    p.add_argument("--duration", default="24h", help="simulated time to run")
    p.add_argument("--tick", type=float, default=0.1, metavar="S",
                   help="firmware step period, seconds of simulated time")
    p.add_argument("--speed", default="max",
                   help="'max' for as fast as possible, or simulated seconds per wall second "
                   "(1 = real time)")
    p.add_argument("--seed", type=int, default=0, help="seed for cell spread and sensor noise")
    p.add_argument("--ambient-c", type=float, default=25.0, metavar="C",
                   help="ambient temperature, °C")
    p.add_argument("--initial-soc", type=float, default=90.0, metavar="PCT",
                   help="initial state of charge, percent")
    p.add_argument("--cells-per-temp-sensor", type=int, default=4, metavar="N",
                   help="cells sharing one temperature sensor")
    p.add_argument("--inject", action="append", default=[], metavar="AT:KIND[:k=v,...]",
                   help="schedule a fault, repeatable; AT is a duration. Kinds: "
                   + injection_help().replace("%", "%%"))
    p.add_argument("--record", metavar="PATH.csv", help="write a CSV time series")
    p.add_argument("--record-every", default="1s", metavar="DURATION",
                   help="simulated time between recorded rows")
    p.add_argument("--plot", metavar="PATH.png", help="draw the run (implies recording)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.set_defaults(handler=handle)


def _options(args, problems: Problems) -> tuple[float, float | None, float]:
    duration_s = speed = record_every_s = float("nan")
    for name, text in (("--duration", args.duration), ("--record-every", args.record_every)):
        try:
            value = parse_duration_s(text)
        except ValueError as exc:
            problems.add(name, text, str(exc))
            continue
        if name == "--duration":
            duration_s = value
            problems.check_range(name, value, 1e-3, 366 * 86400.0)
        else:
            record_every_s = value
            problems.check_range(name, value, 1e-3, None)
    if args.speed == "max":
        speed = None
    else:
        try:
            speed = float(args.speed)
            problems.check_range("--speed", speed, 1e-3, 1e6)
        except ValueError:
            problems.add("--speed", args.speed, "must be 'max' or a positive number")
    problems.check_range("--tick", args.tick, 1e-3, 10.0)
    problems.check_range("--series", args.series, 1, 1024)
    problems.check_range("--parallel", args.parallel, 1, 256)
    problems.check_range("--initial-soc", args.initial_soc, 0.0, 100.0)
    problems.check_range("--ambient-c", args.ambient_c, -60.0, 80.0)
    problems.check_range("--cells-per-temp-sensor", args.cells_per_temp_sensor, 1, 1024)
    if args.capacity_ah is not None:
        problems.check_range("--capacity-ah", args.capacity_ah, 1e-3, 1e5)
    if math.isfinite(duration_s) and duration_s < args.tick:
        problems.add("--duration", args.duration, f"must be at least one tick ({args.tick:g} s)")
    return duration_s, speed, record_every_s


def build(args) -> tuple[SimulatedPack, Firmware, object, RunOptions]:
    """Everything a run needs, from the parsed arguments; InputError lists every bad one."""
    problems = Problems("bms-emu run")
    duration_s, speed, record_every_s = _options(args, problems)
    problems.raise_if_any()
    chemistry = resolve_chemistry(args.chemistry)
    spec = PackSpec(
        n_series=args.series,
        n_parallel=args.parallel,
        capacity_ah=args.capacity_ah,
        ambient_c=args.ambient_c,
        initial_soc=args.initial_soc / 100.0,
        seed=args.seed,
        sensors=replace(SensorSpec(), cells_per_temp_sensor=args.cells_per_temp_sensor),
    )
    pack = SimulatedPack(chemistry, spec, args.tick)
    config = (load_config(args.config, pack.chem, pack.n_series, pack.capacity_ah)
              if args.config else None)
    injections = []
    errors = []
    for text in args.inject:
        try:
            injections.append(parse_injection(text, pack.n_series, pack.sensors.n_temp))
        except InputError as exc:
            errors.extend(f"{exc.source}: {p}" for p in exc.problems)
    if errors:
        raise InputError("--inject", errors)
    profile = resolve_profile(args.profile, pack.energy_wh, pack.capacity_ah)
    firmware = Firmware(pack.chem, pack.n_series, pack.capacity_ah, config)
    options = RunOptions(duration_s=duration_s, tick_s=args.tick, speed=speed,
                         record_every_s=record_every_s, injections=tuple(injections))
    return pack, firmware, profile, options


def handle(args) -> int:
    pack, firmware, profile, options = build(args)
    record_path = args.record
    with ExitStack() as stack:
        if args.plot and not record_path:
            record_path = stack.enter_context(_temporary_csv())
        record_to = (
            stack.enter_context(open(record_path, "w", newline="", encoding="utf-8"))
            if record_path else None
        )
        show_progress = not (args.quiet or args.json) and sys.stderr.isatty()
        progress = stack.enter_context(_progress(options.duration_s)) if show_progress else None
        result = run(pack, firmware, profile, options, record_to=record_to, progress=progress)
        if record_to is not None:
            record_to.close()
        if args.plot:
            from hil.plot import plot_run

            plot_run(record_path, args.plot, title=Path(args.plot).stem)
    data = summary(result, pack)
    if args.json:
        print(json.dumps(data))
    elif not args.quiet:
        from bms.cli.summary_view import print_summary

        print_summary(data)
    return 0


def _temporary_csv():
    import contextlib
    import os
    import tempfile

    @contextlib.contextmanager
    def manager():
        fd, path = tempfile.mkstemp(suffix=".csv", prefix="bms-run-")
        os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)

    return manager()


def _progress(total_s: float):
    import contextlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def manager():
        with Progress(TextColumn("simulating"), BarColumn(),
                      TextColumn("{task.completed:,.0f} / {task.total:,.0f} s"),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("run", total=total_s)
            yield lambda now_s: bar.update(task, completed=now_s)

    return manager()
