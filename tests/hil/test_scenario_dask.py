"""`scenario --dask ADDRESS`: the sweep on a Dask distributed cluster (here a local one of two
worker processes) gives the serial run's reports; a cluster that does not answer is a clear
error, said within the connect timeout."""

from __future__ import annotations

import socket

import pytest
from distributed import LocalCluster

from bms_emu.main import main
from hil.scenario_sweep_dask import CONNECT_TIMEOUT_S
from tests.hil.test_scenario import FAILING, PASSING, write
from tests.hil.test_scenario_sweep import QUICK_LIBRARY, sweep_reports


@pytest.fixture(scope="module")
def scheduler_address():
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_gives_the_serial_runs_reports(scheduler_address, tmp_path, capsys):
    """Library files, a failing file and a campaign: the same lines, JSON and JUnit, in the
    same order, on the cluster's two workers as in one process. (That a case needs no
    file where it runs: test_scenario_sweep.py.)"""
    files = [*QUICK_LIBRARY[:1], str(write(tmp_path, FAILING, "bad.toml")),
             str(write(tmp_path, PASSING, "good.toml"))]
    args = [*files, "--grid", "pack.seed=1,2"]
    serial = sweep_reports(args, tmp_path, capsys, "serial")
    on_dask = sweep_reports([*args, "--dask", scheduler_address], tmp_path, capsys, "dask")
    assert serial[0] == 1
    assert on_dask == serial


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    assert main(["scenario", str(write(tmp_path, PASSING)), "--dask", address]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bms-emu scenario: error: --dask: 1 problem(s)")
    assert f"'{address}': no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s" \
        in captured.err
