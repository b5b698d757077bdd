"""Lab files of a simulated na-nfm cell (`hil.fitting.lab_procedure`, quick form), made once
per test process: the fit's tests and the CLI's share them."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from bms.data.presets import PRESETS
from hil.fitting.lab_procedure import write_lab_files

LAB_FILES = ("ocv.csv", "hppc.csv", "cycles.csv")


@cache
def lab_files() -> tuple[Path, dict]:
    """(folder holding ocv.csv, hppc.csv and cycles.csv, the truth the fit should find)."""
    folder = Path(tempfile.mkdtemp(prefix="bms-emu-lab-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder, write_lab_files(PRESETS["na-nfm"], folder, seed=3, quick=True)
