"""What a `bms-emu` start imports: each command only what it uses (benchmarks/cli_startup.py
measures the time). Every case runs in a fresh interpreter, as a console script does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bms_emu.main import COMMANDS, build_parser, main

# Field links and views that a command imports only when an option asks for them.
HEAVY = ("can", "cantools", "aiomqtt", "paho", "pymodbus", "matplotlib", "rich", "dask",
         "distributed")


def imported_after(code: str, tmp_path) -> set[str]:
    """The top-level packages imported once `code` has run in a fresh interpreter."""
    report = "import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\n{report}"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_a_headless_run_imports_no_field_link_and_no_view(tmp_path):
    """`bms-emu run` (no --can, --mqtt, --plot, --progress) runs without python-can,
    cantools, aiomqtt, pymodbus, matplotlib, rich or dask."""
    code = ("import contextlib, io\nfrom bms_emu.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    code = main(['run', '--duration', '1', '--series', '4', '--json'])\n"
            "assert code == 0 and '\"sim_s\": 1.0' in out.getvalue(), out.getvalue()")
    assert imported_after(code, tmp_path).isdisjoint(HEAVY)


@pytest.mark.parametrize("command", ["serve", "rig", "pty", "nvm", "config", "spec"])
def test_a_command_parser_imports_no_field_link_it_is_not_given(tmp_path, command):
    """Building a command's parser, as every start of it does, imports no field link: those
    come with --can, --mqtt, --modbus."""
    code = f"from bms_emu.main import build_parser\nbuild_parser({(command,)!r})"
    assert imported_after(code, tmp_path).isdisjoint(HEAVY)


def test_top_level_help_imports_no_command(tmp_path):
    code = ("import contextlib, io\nfrom bms_emu.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['--help'])\n    except SystemExit as done:\n"
            "        assert done.code == 0\n"
            "assert 'modbus-map' in out.getvalue()")
    assert imported_after(code, tmp_path).isdisjoint({*HEAVY, "hil"})


def test_the_help_of_unbuilt_commands_is_their_own():
    """A command whose options are not built is listed as its module lists it: the line
    comes from one table either way."""
    assert build_parser(()).format_help() == build_parser().format_help()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_alone_is_built_as_among_all(capsys, command):
    """`bms-emu COMMAND` builds that command's parser only, and it is the whole of it: its
    help is the one the parser of every command gives."""
    helps = []
    for argv in ([command, "--help"], None):
        with pytest.raises(SystemExit) as done:
            if argv is None:
                build_parser().parse_args([command, "--help"])
            else:
                main(argv)
        assert done.value.code == 0
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1]
    assert helps[0].startswith(f"usage: bms-emu {command} ")
