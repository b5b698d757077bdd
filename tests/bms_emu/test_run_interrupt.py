"""Ctrl-C and SIGTERM on `bms-emu run`: the run ends between two steps, the recording is
whole, the summary of the run so far is printed, and the exit code says which signal
(128 + its number)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bms.core.firmware import Firmware
from bms.data.presets import PRESETS
from bms_emu.lifetime import stop_requests
from hil.loads import constant
from hil.pack import PackSpec, SimulatedPack
from hil.runner import RunOptions, run

WAIT_S = 120.0  # how long to wait for a child to get going or to end: a bound, not a timing


def test_a_signal_inside_is_a_request_and_a_second_one_stops_at_once():
    previous = signal.getsignal(signal.SIGINT)
    with stop_requests() as stop:
        assert not stop() and stop.name is None and stop.exit_code == 0
        signal.raise_signal(signal.SIGTERM)
        assert stop() and stop.name == "SIGTERM" and stop.exit_code == 143
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
    assert stop.signum == signal.SIGTERM  # the first one is the one kept


def test_the_runner_ends_after_the_step_in_progress_with_its_row_recorded(tmp_path):
    chem = PRESETS["na-nfm"]
    pack = SimulatedPack(chem, PackSpec(n_series=4), 0.1)
    firmware = Firmware(chem, 4, pack.capacity_ah)
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) >= 37

    out = tmp_path / "r.csv"
    with out.open("w", newline="") as f:
        result = run(pack, firmware, constant(-0.5, "a"),
                     RunOptions(duration_s=3600.0, tick_s=0.1, record_every_s=0.1),
                     record_to=f, stop=stop)
    assert result.sim_s == pytest.approx(3.7)
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 37
    assert float(rows[-1]["time_s"]) == pytest.approx(3.6)


def test_a_paced_run_looks_for_a_stop_while_it_waits():
    """At 0.001 x real time one 0.1 s tick waits 100 s: a stop ends the wait."""
    chem = PRESETS["na-nfm"]
    pack = SimulatedPack(chem, PackSpec(n_series=4), 0.1)
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) >= 3

    result = run(pack, Firmware(chem, 4, pack.capacity_ah), constant(0.0, "a"),
                 RunOptions(duration_s=3600.0, tick_s=0.1, speed=0.001), stop=stop)
    assert result.sim_s == pytest.approx(0.1)  # the first tick, its wait cut short


def start_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """`bms-emu run` in real time x 20 for an hour, recording every tick; returns once the
    recording has rows (the run is under way)."""
    record = tmp_path / "run.csv"
    child = subprocess.Popen(
        [sys.executable, "-m", "bms_emu", "run", "--series", "4", "--duration", "1h",
         "--speed", "20", "--record", str(record), "--record-every", "0.1s", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not (record.exists() and record.stat().st_size > 4000):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the run never started recording"
        time.sleep(0.1)
    return child, record


def whole_rows(record: Path) -> list[list[str]]:
    """The recording's rows; every one has the header's fields and the file ends a line."""
    text = record.read_text()
    assert text.endswith("\n")
    rows = list(csv.reader(text.splitlines()))
    assert all(len(row) == len(rows[0]) for row in rows)
    return rows


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signalled_run_finishes_its_recording_and_prints_its_summary(tmp_path, sig, code):
    child, record = start_run(tmp_path, "--json")
    os.kill(child.pid, sig)
    out, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == code, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted"] == signal.Signals(sig).name
    assert 0 < summary["sim_s"] < 3600
    assert f"interrupted by {signal.Signals(sig).name} after {summary['sim_s']:g} s" in err
    rows = whole_rows(record)
    assert len(rows) - 1 == round(summary["sim_s"] / 0.1)  # a row for every tick run
    assert float(rows[-1][0]) == pytest.approx(summary["sim_s"] - 0.1)


def test_an_interrupted_run_marks_its_summary_table(tmp_path):
    child, record = start_run(tmp_path)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == 130, err
    assert "(interrupted by SIGINT)" in out and "simulated time" in out
    whole_rows(record)
