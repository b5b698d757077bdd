"""`bms-emu run`: the firmware against the simulated pack on a simulated clock."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bms.core.firmware import Firmware
from bms.core.signals import Actuation, Measurement
from bms.data.durations import parse_duration_s
from bms.data.validation import Problems
from bms.host.device import Device, Identity
from bms.runtime.after_step import AfterStep
from bms.store.persistence import Keeper
from bms_emu.can_args import add_can_arguments, can_links, check_can_arguments
from bms_emu.cli_errors import EXIT_NO_LINK
from bms_emu.help_format import DefaultsShown
from bms_emu.lifetime import stop_requests
from bms_emu.mqtt_args import add_mqtt_arguments, check_mqtt_arguments
from bms_emu.nvm_args import (
    add_nvm_arguments,
    check_nvm_arguments,
    describe_start,
    start_firmware,
)
from bms_emu.output_paths import check_output_path
from bms_emu.pack_args import (
    add_config_argument,
    add_pack_arguments,
    check_pack_arguments,
    plant_inputs,
)
from hil.inverter_load import InverterLoad
from hil.pack import SimulatedPack
from hil.pack_options import build_pack, firmware_config
from hil.runner import RunOptions, RunResult, run, summary
from protocol.messages import Mode

if TYPE_CHECKING:
    from bms.links.can.link import CanLink
    from bms.links.mqtt.bridge import MqttBridge
    from bms.links.mqtt.session import MqttSession

# The run went through, but its store does not hold all of it (a full or read-only disk).
EXIT_SAVE_FAILED = 5


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        formatter_class=DefaultsShown,
        description="Run the BMS firmware against a simulated sodium-ion pack on a simulated "
        "clock, as fast as possible or paced, and print a summary. Durations accept seconds "
        "or a number with s, m, h or d (3600, 90m, 24h, 1h30m).",
    )
    add_pack_arguments(p)
    add_config_argument(p)
    add_mqtt_arguments(p, device=True)
    add_can_arguments(p)
    add_nvm_arguments(p, by_default=False)
    p.add_argument("--duration", default="24h", help="simulated time to run")
    p.add_argument("--tick", type=float, default=0.1, metavar="S",
                   help="firmware step period, seconds of simulated time")
    p.add_argument("--speed", default="max",
                   help="'max' for as fast as possible, or simulated seconds per wall second "
                   "(1 = real time)")
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
    check_pack_arguments(args, problems)
    if math.isfinite(duration_s) and duration_s < args.tick:
        problems.add("--duration", args.duration, f"must be at least one tick ({args.tick:g} s)")
    return duration_s, speed, record_every_s


def _check_outputs(args, problems: Problems) -> None:
    """The recording and the plot are written as the run ends: checked before it starts."""
    check_output_path(problems, "--record", args.record)
    if args.plot:
        from hil.plot import image_types

        check_output_path(problems, "--plot", args.plot, image_types())


@dataclass(frozen=True, eq=False)
class Built:
    """Everything a run needs."""

    pack: SimulatedPack
    firmware: Firmware
    profile: object
    options: RunOptions
    bridge: MqttBridge | None
    keeper: Keeper | None  # the persistent store, with --nvm
    resumed: str | None  # what the store resumed, in words
    can: CanLink | None = None  # --can: polled after each step, in simulated time


def build(args, session: MqttSession | None = None) -> Built:
    """Everything a run needs, from the parsed arguments; InputError lists every bad one.
    With --nvm the store is opened (and held) last, once everything else is known good.
    `session`: a broker session shared with other packs (a batch); None: the pack's own."""
    problems = Problems("bms-emu run")
    duration_s, speed, record_every_s = _options(args, problems)
    check_mqtt_arguments(args, problems)
    check_nvm_arguments(args, problems)
    check_can_arguments(args, problems)
    if args.can is not None and speed is None:
        problems.add("--speed", args.speed, "a run with --can is paced: give a number (1 = "
                     "real time); the frames' periods and the keep-alive timeout are in "
                     "simulated seconds")
    _check_outputs(args, problems)
    problems.raise_if_any()
    pack = build_pack(args, args.tick)
    pc = problems.take(firmware_config, args.config, pack)
    injections, profile = plant_inputs(args, pack, problems)
    problems.raise_if_any()
    started = start_firmware(args, pc, Mode.SIM)
    firmware, keeper = started.firmware, started.keeper
    options = RunOptions(duration_s=duration_s, tick_s=args.tick, speed=speed,
                         record_every_s=record_every_s, injections=injections)
    bridge = device = None
    if args.mqtt is not None or args.can:
        identity = Identity(pack.chem.name, Mode.SIM, args.parallel, pack.capacity_ah,
                            pack.sensors.n_temp)
        device = Device(firmware, pack.chem, identity, started.overrides,
                        on_config_change=keeper.config_written if keeper else None,
                        store=keeper)
    if args.mqtt is not None:
        # here, not at the top: aiomqtt and paho only with --mqtt (start-up time)
        from bms_emu.mqtt_links import device_bridge, device_session

        bridge = device_bridge(args, session or device_session(args), device,
                               keeper.store if keeper else None)
    can = can_links(args, device) if device is not None else []
    return Built(pack, firmware, profile, options, bridge, keeper, describe_start(started),
                 can[0] if can else None)


OnStep = Callable[[float, Measurement, Actuation], None]


def after_step(bridge: MqttBridge | None, keeper: Keeper | None,
               can: CanLink | None = None) -> OnStep | None:
    """What `run` calls after each step, in simulated time (None when there is no store,
    MQTT nor CAN). A headless tick is one step, so MQTT commands run right after it, and
    the CAN link polls after it."""
    if bridge is None and keeper is None and can is None:
        return None
    device = bridge.device if bridge is not None else can.device if can is not None else None
    then = AfterStep(device, keeper, bridge, poll_each_step=True)
    if can is None:
        return then

    def and_can(now_s: float, m: Measurement, act: Actuation) -> None:
        then(now_s, m, act)
        can.poll(now_s)

    return and_can


def handle(args) -> int:
    b = build(args)
    if b.resumed and not (args.quiet or args.json):
        print(f"bms-emu run: {b.resumed}", file=sys.stderr)
    if b.bridge is not None:
        b.bridge.session.start()
    try:
        return _run_and_report(args, b)
    finally:
        if b.bridge is not None:
            b.bridge.session.stop()


def _run_and_report(args, b: Built) -> int:
    with ExitStack() as stack:
        record_to = open_recording(args, stack)
        show_progress = not (args.quiet or args.json) and sys.stderr.isatty()
        progress = (stack.enter_context(_progress(b.options.duration_s)) if show_progress
                    else None)
        try:
            with stop_requests() as stop:  # a Ctrl-C ends the run between two steps
                result = run(b.pack, b.firmware, b.profile, b.options, record_to=record_to,
                             progress=progress, on_step=after_step(b.bridge, b.keeper, b.can),
                             stop=stop)
        finally:
            close(b)
        finish_recording(args, record_to)
    return report(args, b, result, stop.name, stop.exit_code)


def open_recording(args, stack: ExitStack) -> TextIO | None:
    """The CSV the run records to (a temporary one for --plot alone), closed by `stack`."""
    record_path = args.record
    if args.plot and not record_path:
        record_path = stack.enter_context(_temporary_csv())
    if not record_path:
        return None
    return stack.enter_context(open(record_path, "w", newline="", encoding="utf-8"))


def finish_recording(args, record_to: TextIO | None) -> None:
    """Closes the recording and draws --plot from it."""
    if record_to is not None:
        record_to.close()
    if args.plot:
        from hil.plot import plot_run

        plot_run(record_to.name, args.plot, title=Path(args.plot).stem)


def close(b: Built) -> None:
    """Ends what the run opened, the MQTT session before the store: closing, the bridge
    forgets from the store what the broker has acknowledged."""
    if b.can is not None:
        b.can.shutdown()
    if isinstance(b.profile, InverterLoad):  # --profile inverter: its bus
        b.profile.shutdown()
    if b.bridge is not None:
        b.bridge.close()
    if b.keeper is not None:
        b.keeper.close(b.firmware.last_s or 0.0)


def report(args, b: Built, result: RunResult, stopped_by: str | None, stop_code: int) -> int:
    """Prints the run's summary (JSON or a table) and what went wrong; the exit code."""
    options, bridge = b.options, b.bridge
    data = summary(result, b.pack)
    data["interrupted"] = stopped_by  # None, or the signal that ended the run early
    if bridge is not None:
        data["mqtt"] = bridge.counts()
    if b.can is not None:
        data["can"] = b.can.stats()
    if b.keeper is not None:
        data["nvm"] = b.keeper.figures()
    if args.json:
        print(json.dumps(data))
    elif not args.quiet:
        from bms_emu.summary_view import print_summary

        print_summary(data)
    if stopped_by is not None:
        print(f"bms-emu run: interrupted by {stopped_by} after {result.sim_s:g} s of the "
              f"{options.duration_s:g} s asked: the summary is of the run so far",
              file=sys.stderr)
    code = 0
    if b.keeper is not None and b.keeper.failures:
        print(_saves_failed(b.keeper), file=sys.stderr)
        code = EXIT_SAVE_FAILED
    if (never := never_connected(b)) is not None:
        print(never, file=sys.stderr)
        return EXIT_NO_LINK
    return code or stop_code


def _saves_failed(keeper: Keeper) -> str:
    """One line: the store, how many saves failed and the last error, and what it holds."""
    if not keeper.failing:
        held = "the end of the run (saving worked again)"
    elif keeper.saved_at_s is None:
        held = "nothing of this run"
    else:
        held = f"the run up to {keeper.saved_at_s:.1f} s"
    return (f"bms-emu run: error: store {keeper.store.path}: {keeper.failures} save(s) "
            f"failed (the last: {keeper.last_error}); it holds {held}")


def never_connected(b: Built) -> str | None:
    """The line that says the run's MQTT session never reached its broker (the run then
    exits EXIT_NO_LINK), or None."""
    bridge = b.bridge
    if bridge is None or bridge.session.connects:
        return None
    session = bridge.session
    where = "wait in the store for the next start" if b.keeper is not None else "are lost"
    return (f"bms-emu run: never reached the broker {session.broker.describe()} "
            f"({session.last_error or 'no answer'}): {bridge.outbox.waiting} fault event(s) "
            f"{where}")


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
