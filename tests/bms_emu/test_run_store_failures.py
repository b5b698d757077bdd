"""`run --nvm` on a disk that fills up: the run goes to its end and prints its summary, the
failures are logged once (no traceback a save), the summary carries the store's figures,
and the run exits non-zero with one line naming the store and the error. A full disk is
the file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) of the `run` process."""

from __future__ import annotations

import json
import resource
import signal
import subprocess

from bms_emu.run_cmd import EXIT_SAVE_FAILED
from tests.support.processes import CLI


def run(*args: str, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, no kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([*CLI, "run", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if max_file_bytes is not None else None)


def test_a_run_whose_saves_fail_finishes_reports_them_and_exits_non_zero(tmp_path):
    path = tmp_path / "pack.sqlite"
    first = run("--duration", "1m", "--nvm", str(path), "--quiet")
    assert first.returncode == 0, first.stderr
    # The store may not grow past what it is now: its write-ahead log fills up in a few
    # saves, as a disk would.
    done = run("--duration", "10m", "--nvm", str(path), "--json",
               "--inject", "60:sensor-offset:cell=2,offset_v=1.5",
               max_file_bytes=path.stat().st_size)
    assert done.returncode == EXIT_SAVE_FAILED, done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)  # the summary, all of it
    assert data["sim_s"] == 600.0 and data["final"]["state"] == "FAULT"
    nvm = data["nvm"]
    assert nvm["path"] == str(path) and nvm["failing"] and nvm["failures"] > 10
    lines = done.stderr.splitlines()
    # one line as the failures start (the log), one as the run ends: not one a save
    assert len(lines) == 2, lines
    assert str(path) in lines[0] and "failed" in lines[0]
    assert lines[1].startswith(f"bms-emu run: error: store {path}: {nvm['failures']} save(s) "
                               f"failed (the last: {nvm['last_error']})")
