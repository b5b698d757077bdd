"""`serve --stats PATH`: the run's figures written as JSON on leaving, whether by --duration
or by SIGTERM (what the soak benchmark and process managers send). The figures are checked
for presence and sense, never against a time (the machines are shared)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time

import pytest

from tests.support.processes import CLI, Proc


@pytest.fixture
def port():
    """A pseudo-terminal for the emulator to serve on (nobody at the other end)."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def check_stats(path, tick_s: float) -> dict:
    stats = json.loads(path.read_text())
    tick = stats["tick"]
    assert tick["tick_s"] == tick_s and tick["ticks"] > 0
    late = tick["lateness"]
    assert late["count"] == tick["ticks"]
    for key in ("p50_ms", "p99_ms", "max_ms", "mean_ms"):
        assert math.isfinite(late[key]) and late[key] >= 0.0
    assert late["p50_ms"] <= late["p99_ms"] <= late["max_ms"]
    assert tick["work"]["count"] in (tick["ticks"] - 1, tick["ticks"])
    for key in ("overruns", "skipped", "resyncs"):
        assert isinstance(tick[key], int) and tick[key] >= 0
    assert stats["mode"] == "sim" and stats["steps"] > 0 and stats["tick_errors"] == 0
    assert stats["decode_errors"] == {}
    assert stats["max_rss_kib"] > 0 and stats["wall_s"] > 0
    assert not path.with_name(path.name + ".tmp").exists()
    return stats


def test_stats_are_written_when_the_duration_ends(port, tmp_path):
    path = tmp_path / "stats.json"
    done = subprocess.run([*CLI, "serve", "--serial", port, "--sim", "--tick", "0.02",
                           "--duration", "1", "--stats", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    stats = check_stats(path, 0.02)
    assert "mqtt" not in stats  # no broker, no MQTT figures


def test_stats_are_written_on_sigterm(port, tmp_path):
    path = tmp_path / "stats.json"
    serve = Proc("serve", "--serial", port, "--sim", "--tick", "0.05", "--stats", str(path),
                 "-v")
    try:
        serve.wait_for(f"{port} open")  # the runtime runs: ticks follow
        time.sleep(1.0)  # some 20 of them (not asserted: only that there were some)
        serve.popen.terminate()
        assert serve.popen.wait(10) == 0, serve.output()
    finally:
        serve.stop()
    check_stats(path, 0.05)
