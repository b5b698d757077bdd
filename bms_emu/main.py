"""`bms-emu`: one console script, one subcommand per task."""

from __future__ import annotations

import argparse
import signal
import sys

from bms import __version__
from bms.data.validation import InputError
from bms_emu import (
    can_dbc_cmd,
    chemistries_cmd,
    config_cmd,
    fit_cmd,
    fleet_cmd,
    inverter_cmd,
    modbus_map_cmd,
    monitor_cmd,
    nvm_cmd,
    plot_cmd,
    pty_cmd,
    query_cmd,
    replay_cmd,
    rig_cmd,
    run_cmd,
    scenario_cmd,
    serve_cmd,
    spec_cmd,
)
from bms_emu.cli_errors import input_error_text

EXIT_INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a command Ctrl-C ended

SUBCOMMANDS = (run_cmd, replay_cmd, serve_cmd, rig_cmd, pty_cmd, config_cmd, chemistries_cmd,
               plot_cmd, spec_cmd, query_cmd, monitor_cmd, fleet_cmd, nvm_cmd,
               scenario_cmd, can_dbc_cmd, modbus_map_cmd, inverter_cmd, fit_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bms-emu",
        description="Sodium-ion battery management system firmware emulator. "
        "Units are SI (V, A, °C, s, Ah, Wh); current is positive when charging.",
    )
    parser.add_argument("--version", action="version", version=f"bms-emu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except InputError as exc:
        print(input_error_text(args.command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `run` takes a first Ctrl-C itself (bms_emu.lifetime)
        print(f"bms-emu {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
