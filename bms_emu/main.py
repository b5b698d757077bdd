"""`bms-emu`: one console script, one subcommand per task."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from importlib import import_module

EXIT_INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a command Ctrl-C ended

# The commands, in the order the help lists them: the module that adds each one's options
# and handler, and its line in `bms-emu --help` (the module's parser gets it from here).
# A command's module is imported only when that command runs or its options are asked
# for: between them they pull in python-can, cantools, aiomqtt, pymodbus and rich, and
# every `bms-emu` process would pay for all of them (start-up time).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run_cmd", "run the firmware against a simulated pack (headless)"),
    "replay": ("replay_cmd",
               "run the firmware on recorded measurements (software in the loop)"),
    "serve": ("serve_cmd",
              "run the firmware in real time and serve the protocol on a serial port"),
    "rig": ("rig_cmd",
            "run the simulated pack as a rig driving `serve --hil` on a serial port"),
    "pty": ("pty_cmd", "create a linked pair of pseudo-terminals and relay between them"),
    "config": ("config_cmd", "print the default firmware configuration, or check a file"),
    "chemistries": ("chemistries_cmd", "list the sodium-ion chemistry presets"),
    "plot": ("plot_cmd", "draw a recorded run as a multi-panel PNG"),
    "spec": ("spec_cmd", "print the binary protocol reference as Markdown"),
    "query": ("query_cmd",
              "ask a running emulator for status, cells, faults, config; set, command"),
    "monitor": ("monitor_cmd", "live view of a running emulator: state, cells, faults, link"),
    "fleet": ("fleet_cmd", "run N simulated packs publishing to one MQTT broker"),
    "nvm": ("nvm_cmd", "show, export or reset a persistent store"),
    "scenario": ("scenario_cmd", "run scripted scenarios (TOML) and report pass / fail"),
    "can-dbc": ("can_dbc_cmd", "print the DBC file of a CAN frame set"),
    "modbus-map": ("modbus_map_cmd", "print the Modbus (SunSpec) map reference as Markdown"),
    "inverter": ("inverter_cmd", "run a simulated UPS inverter/charger against `serve --can`"),
    "fit": ("fit_cmd", "fit a cell profile TOML to lab data (OCV, R0 + RC pairs, capacity, "
            "coulombic efficiency)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "expected one argument" says why when the value given
    starts with '-' (`--shard -1/2`, `--offset -0.5e-3`): argparse reads it as an option."""

    _argv: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        m = re.fullmatch(r"argument (\S+): expected one argument", message)
        if m:
            names = m[1].split("/")
            after = [self._argv[i + 1] for i, arg in enumerate(self._argv[:-1])
                     if arg in names and self._argv[i + 1].startswith("-")]
            if after:
                message += (f" ({after[0]!r} starts with '-', so it is read as an option: "
                            f"give it as {names[-1]}={after[0]})")
        super().error(message)


class _CommandHelp:
    """The subparsers action as a command's module sees it: the parser it adds gets the
    command's help line from COMMANDS, so the line is written once."""

    def __init__(self, sub: argparse._SubParsersAction) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, help=COMMANDS[name][1], **kwargs)


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `bms-emu`. Only `commands` (default: all) get their options, their
    modules imported; the others are a name and a help line, as the top-level help shows."""
    parser = _Parser(
        prog="bms-emu",
        description="Sodium-ion battery management system firmware emulator. "
        "Units are SI (V, A, °C, s, Ah, Wh); current is positive when charging.",
    )
    from bms import __version__  # numpy and the firmware, as every command needs (main)

    parser.add_argument("--version", action="version", version=f"bms-emu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for name, (module, help_line) in COMMANDS.items():
        if commands is None or name in commands:
            import_module(f"bms_emu.{module}").add_parser(_CommandHelp(sub))
        else:
            sub.add_parser(name, help=help_line)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the options before
    the command, --help and --version, take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = command_in(argv)
    try:
        return _run(argv, command)
    except KeyboardInterrupt:  # `run` takes a first Ctrl-C itself (bms_emu.lifetime)
        print(f"bms-emu{f' {command}' if command else ''}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(argv: list[str], command: str | None) -> int:
    """The command's exit code. Everything past the standard library is imported here, not
    as this module loads: numpy, the firmware and the command's module take a third of a
    second or more. A Ctrl-C meanwhile is noted and acted on once they are loaded: raised
    inside an import, Python may swallow it (in a module lock's callback) and the command
    would run on as if never asked to stop."""
    asked: list[int] = []
    held = threading.current_thread() is threading.main_thread()  # where Python takes signals
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: asked.append(signum)) \
        if held else None
    try:
        from bms.data.validation import InputError
        from bms_emu.cli_errors import input_error_text

        args = build_parser(() if command is None else (command,)).parse_args(argv)
    finally:
        if held:
            signal.signal(signal.SIGINT, previous)
    if asked:
        raise KeyboardInterrupt
    try:
        return args.handler(args) or 0
    except InputError as exc:
        print(input_error_text(args.command, exc), file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
