"""Start-up cost of `bms-emu`: the import of bms_emu.main, and the wall and CPU time of
`bms-emu run --duration 1 --json` and `bms-emu --help`, each a fresh interpreter, best of N.
Prints one JSON line.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 7] [--bytecode cached|none]
    PYTHONPATH=/tmp/base19 .venv/bin/python benchmarks/cli_startup.py   # another tree

The tree measured is the one the children import: PYTHONPATH's, else this one. The test
suite starts hundreds of `bms-emu` processes, so this cost is paid hundreds of times.
--bytecode cached (the default, as after a first run) keeps compiled modules in a scratch
cache (PYTHONPYCACHEPREFIX, so no tree gets __pycache__ folders) warmed by one run first;
none compiles every module from source each start, as PYTHONDONTWRITEBYTECODE=1 does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = "import sys; from bms_emu.main import main; sys.exit(main())"  # as the console script
IMPORT = ("import time; w = time.perf_counter(); c = time.process_time(); import bms_emu.main; "
          "print(time.perf_counter() - w, time.process_time() - c)")
CASES = {
    "import": [IMPORT],
    "run_1s": [CLI, "run", "--duration", "1", "--json"],
    "help": [CLI, "--help"],
}


def child_env(bytecode: str, cache_dir: str) -> dict[str, str]:
    """The children's environment: the tree to import, and how bytecode is kept."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = cache_dir
    return env


def once(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one fresh interpreter; the CPU is the child's own (its
    user and system time as the kernel counted them, whatever else the machine runs)."""
    before = os.times()
    start_s = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", *argv], env=env, cwd=cwd, capture_output=True)
    wall_s = time.perf_counter() - start_s
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"cli_startup: {argv[1:] or 'import'} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-400:]}")
    cpu_s = (after.children_user - before.children_user
             + after.children_system - before.children_system)
    return wall_s, cpu_s, proc.stdout.decode()


def best(case: str, repeat: int, env: dict[str, str], cwd: str) -> dict[str, float]:
    """The best wall and CPU seconds of `repeat` starts of `case`."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall_s, cpu_s, out = once(CASES[case], env, cwd)
        if case == "import":  # the import alone, as the child measured it
            wall_s, cpu_s = map(float, out.split())
        walls.append(wall_s)
        cpus.append(cpu_s)
    return {"wall_s": round(min(walls), 3), "cpu_s": round(min(cpus), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7,
                        help="starts of each case; the machine is shared, so the best is given")
    parser.add_argument("--bytecode", choices=("cached", "none"), default="cached")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli_startup_") as scratch:
        env = child_env(args.bytecode, str(Path(scratch, "pycache")))
        once(CASES["run_1s"], env, scratch)  # warms the bytecode cache (and the disk cache)
        figures = {case: best(case, args.repeat, env, scratch) for case in CASES}
        tree = env["PYTHONPATH"]
    print(json.dumps({
        "benchmark": "cli_startup",
        "tree": tree,
        "bytecode": args.bytecode,
        "repeats": args.repeat,
        "import_bms_emu_main": figures["import"],
        "run_duration_1s": figures["run_1s"],
        "help": figures["help"],
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
