"""Sweeps (hil.scenario_sweep): the same cases give the same reports serial and on a pool of
processes; a case that raises or kills its worker is that case's error; Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bms.data.validation import Problems
from bms_emu.main import EXIT_INTERRUPTED, main
from bms_emu.scenario_cmd import choose_engine
from hil import scenario_sweep
from hil.scenario import ScenarioResult
from hil.scenario_file import load_scenario
from hil.scenario_sweep import (
    CaseError,
    ProcessPoolEngine,
    SerialEngine,
    run_case,
    run_cases,
)
from hil.scenario_sweep_dask import DaskEngine
from tests.hil.test_replay import USER_CELL  # the README's example cell profile
from tests.hil.test_scenario import BASE, FAILING, PASSING, write

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "scenarios"
QUICK_LIBRARY = [str(LIBRARY / f"{name}.toml") for name in (
    "short-circuit", "open-wire")]


def report_without_times(text: str) -> str:
    """The printed report less its wall times (`... simulated in 0.52 s`)."""
    return re.sub(r" simulated in \d+\.\d+ s", " simulated", text)


def json_without_times(text: str) -> dict:
    data = json.loads(text)
    for sc in data["scenarios"]:
        sc.pop("wall_s", None)
    return data


def junit_without_times(path: Path) -> str:
    root = ET.parse(path).getroot()
    for element in root.iter():
        element.attrib.pop("time", None)
    return ET.tostring(root, encoding="unicode")


def sweep_reports(args: list[str], tmp_path: Path, capsys, tag: str) -> tuple:
    """(exit status, printed report, JSON, JUnit) of `scenario ARGS`, times left out."""
    junit = tmp_path / f"{tag}.xml"
    status = main(["scenario", *args, "--junit", str(junit)])
    printed = report_without_times(capsys.readouterr().out)
    assert main(["scenario", *args, "--json"]) == status
    data = json_without_times(capsys.readouterr().out)
    return status, printed, data, junit_without_times(junit)


def test_jobs_gives_the_serial_runs_reports(tmp_path, capsys):
    """Library files, a failing file and a campaign: the same lines, JSON and JUnit, in the
    same order, on two processes as in one."""
    files = [*QUICK_LIBRARY, str(write(tmp_path, FAILING, "bad.toml")),
             str(write(tmp_path, PASSING, "good.toml"))]
    args = [*files, "--grid", "pack.seed=1,2"]
    serial = sweep_reports(args, tmp_path, capsys, "serial")
    parallel = sweep_reports([*args, "--jobs", "2"], tmp_path, capsys, "jobs")
    assert serial[0] == 1  # bad.toml fails, in every case
    assert parallel == serial
    names = [sc["name"] for sc in serial[2]["scenarios"]]
    assert len(names) == 2 * len(files) and names[-1] == "quick [pack.seed=2]"


def test_a_case_is_data_its_files_are_not_needed_to_run_it(tmp_path):
    """What a pool or a cluster is sent: the case pickled, its cell profile and CSV load
    inside. Run after its folder is gone, it gives what it gave beside its files."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "cell.toml").write_text(USER_CELL, encoding="utf-8")
    (folder / "load.csv").write_text("time_s,current_a\n0,0\n5,-1\n", encoding="utf-8")
    path = write(folder, PASSING.replace("series = 4,", 'series = 4, chemistry = "cell.toml",')
                 + '\n[load]\nprofile = "load.csv"\n')
    sc = load_scenario(path)
    assert sc.chem.name == "my-cell"
    beside_files = run_case(sc)
    sent = pickle.dumps(sc)
    shutil.rmtree(folder)
    away = run_case(pickle.loads(sent))
    assert isinstance(away, ScenarioResult) and away.passed
    assert [v.message for v in away.verdicts] == [v.message for v in beside_files.verdicts]
    assert away.events == beside_files.events and away.sim_s == beside_files.sim_s


class RecordingEngine:
    """Runs in this process and remembers the order the cases were handed out in."""

    def __init__(self):
        self.order: list[str] = []

    def map(self, fn, cases):
        self.order = [Path(sc.path).stem for sc in cases]
        return [fn(sc) for sc in cases]


def test_cases_go_out_longest_first_and_come_back_in_the_given_order(tmp_path):
    short = load_scenario(write(tmp_path, PASSING.replace('"20s"', '"12s"'), "short.toml"))
    long_ = load_scenario(write(tmp_path, PASSING.replace('"20s"', '"40s"'), "long.toml"))
    mid = load_scenario(write(tmp_path, PASSING, "mid.toml"))
    engine = RecordingEngine()
    outcomes = run_cases([short, long_, mid], engine, fn=lambda sc: sc.path)
    assert outcomes == [short.path, long_.path, mid.path]
    assert engine.order == ["long", "mid", "short"]


def test_the_serial_engine_runs_each_case_as_run_scenario_does(tmp_path):
    sc = load_scenario(write(tmp_path, FAILING))
    (outcome,) = SerialEngine().map(run_case, [sc])
    assert isinstance(outcome, ScenarioResult) and outcome.failures == 1


def _raise_for_bad(sc):
    if sc.name.endswith("[pack.seed=2]"):
        raise RuntimeError("a bug in this case")
    return ORIGINAL_RUN(sc)


ORIGINAL_RUN = scenario_sweep.run_scenario


FORKED = multiprocessing.get_start_method() == "fork"  # a worker inherits a patch


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.skipif(
    not FORKED, reason="the pool's workers would not see the patched run"))])
def test_a_case_that_raises_is_its_error_and_the_others_run(tmp_path, capsys, monkeypatch,
                                                             jobs):
    """In the serial run and in a pool's worker (forked after the patch) alike."""
    monkeypatch.setattr(scenario_sweep, "run_scenario", _raise_for_bad)
    path = write(tmp_path, PASSING)
    junit = tmp_path / "r.xml"
    args = ["scenario", str(path), "--grid", "pack.seed=1,2,3", "--jobs", jobs]
    assert main([*args, "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "ERROR " in out and "(quick [pack.seed=2]): RuntimeError: a bug in this case" in out
    assert "3 scenario(s), 2 expectation(s), 0 failed, 1 could not run" in out
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("errors")) == ("3", "1")
    error = root.find("testsuite[@name='quick [pack.seed=2]']/testcase[@name='run']/error")
    assert error.get("message") == "RuntimeError: a bug in this case"
    assert "Traceback" in error.text
    assert main([*args, "--json"]) == 1
    cases = json.loads(capsys.readouterr().out)["scenarios"]
    assert [c["passed"] for c in cases] == [True, False, True]
    assert cases[1]["error"] == "RuntimeError: a bug in this case" and cases[1]["checks"] == []


def _exit_for_crash(sc):
    if sc.name == "crash":
        os._exit(7)  # as a segfault or the OOM killer would: no exception, no result
    return run_case(sc)


def test_a_case_that_kills_its_worker_is_its_error_and_the_others_still_run(tmp_path):
    cases = [load_scenario(write(tmp_path, PASSING.replace('"quick"', f'"{name}"'),
                                 f"{name}.toml")) for name in ("a", "crash", "b", "c")]
    outcomes = run_cases(cases, ProcessPoolEngine(2), fn=_exit_for_crash)
    assert [type(o).__name__ for o in outcomes] == ["ScenarioResult", "CaseError",
                                                     "ScenarioResult", "ScenarioResult"]
    assert all(o.passed for o in outcomes if isinstance(o, ScenarioResult))
    error = outcomes[1]
    assert isinstance(error, CaseError) and error.scenario.name == "crash"
    assert "worker process died" in error.message


def _dies_once_for_crash(sc):
    """`run_scenario`, but the first time case `crash` runs (a marker file beside it) its
    worker dies, as the OOM killer or a `kill -9` would leave it: the case itself is sound."""
    marker = Path(sc.path).with_suffix(".died")
    if sc.name == "crash" and not marker.exists():
        marker.touch()
        os._exit(9)
    return ORIGINAL_RUN(sc)


@pytest.mark.skipif(not FORKED, reason="the pool's workers would not see the patched run")
def test_the_cases_a_dying_worker_took_run_again_with_the_rest_on_a_pool(
        tmp_path, monkeypatch):
    """A worker killed from outside: the case it ran (and the other worker's, lost with the
    pool) run again and pass, and are listed as run again; they and the cases no worker had
    started go back to a pool of two, not one at a time after the death."""
    names = ["a", "crash", *"bcdefgh"]
    cases = [load_scenario(write(tmp_path, PASSING.replace('"quick"', f'"{name}"'),
                                 f"{name}.toml")) for name in names]
    monkeypatch.setattr(scenario_sweep, "run_scenario", _dies_once_for_crash)
    pools: list[tuple[int, int]] = []  # (cases, workers) of each pool the sweep made
    pool_map = scenario_sweep._pool_map

    def counted(fn, some, jobs):
        pools.append((len(some), jobs))
        return pool_map(fn, some, jobs)

    monkeypatch.setattr(scenario_sweep, "_pool_map", counted)
    engine = ProcessPoolEngine(2)
    outcomes = run_cases(cases, engine)
    assert [type(o).__name__ for o in outcomes] == ["ScenarioResult"] * len(names)
    assert all(o.passed for o in outcomes)
    reran = [sc.name for sc in engine.reran]
    assert "crash" in reran and len(reran) <= 2, reran  # the two workers' cases at most
    # The rest went back to a pool of two: none ran alone, one after another.
    assert len(pools) == 2 and pools[0] == (len(names), 2) and pools[1][1] == 2, pools


@pytest.mark.skipif(not FORKED, reason="the pool's workers would not see the patched run")
def test_the_command_names_the_cases_run_again_after_their_worker_died(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setattr(scenario_sweep, "run_scenario", _dies_once_for_crash)
    paths = [write(tmp_path, PASSING.replace('"quick"', f'"{name}"'), f"{name}.toml")
             for name in ("a", "crash")]
    assert main(["scenario", *map(str, paths), "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert "PASS " in captured.out and "ERROR" not in captured.out
    assert "a worker process died, and its pool with it" in captured.err
    assert f"{paths[1]} (crash)" in captured.err


@pytest.mark.parametrize(("args", "named"), [
    (["--jobs", "-1"], "--jobs = -1: must be within [0, inf]"),
    (["--jobs", "2", "--dask", "tcp://127.0.0.1:8786"], "give --jobs or --dask, not both")])
def test_bad_engine_options_exit_2_and_run_nothing(tmp_path, capsys, args, named):
    assert main(["scenario", str(write(tmp_path, PASSING)), *args]) == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == ""


def test_jobs_0_is_one_worker_per_core_this_process_may_use():
    cores = len(os.sched_getaffinity(0))
    engine = choose_engine(Problems("test"), 0, None)
    assert engine == ProcessPoolEngine(cores) if cores > 1 else isinstance(engine, SerialEngine)
    assert isinstance(choose_engine(Problems("test"), 1, None), SerialEngine)
    assert isinstance(choose_engine(Problems("test"), 1, "tcp://h:8786"), DaskEngine)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _two_long_cases(tmp_path: Path, **streams) -> subprocess.Popen:
    """`scenario` of two 24 h cases on two workers, started."""
    long_case = write(tmp_path, BASE.replace('"20s"', '"24h"') + """
        tick = 1.0
        expect = { at = "24h", state = "RUN" }
    """)
    return subprocess.Popen(
        [sys.executable, "-m", "bms_emu", "scenario", str(long_case), "--grid",
         "pack.seed=1,2", "--jobs", "2"], cwd=REPO, text=True, **streams)


def _both_workers(proc: subprocess.Popen) -> list[int]:
    """The command's two workers once both are set up (or what there is when the command
    has ended or the hang guard has given up)."""
    workers: list[int] = []
    give_up = time.monotonic() + 120  # a hang guard, not a timing check
    while not (len(workers) == 2 and all(map(_ignores_sigint, workers))) \
            and proc.poll() is None and time.monotonic() < give_up:
        time.sleep(0.05)
        workers = _children(proc.pid)
    return workers


def test_ctrl_c_stops_the_pool_and_its_running_cases(tmp_path):
    """Two long cases on two workers: SIGINT to the command ends it as Ctrl-C ends any
    command (status 130), its workers with it, long before the cases would have ended."""
    proc = _two_long_cases(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        workers = _both_workers(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "bms-emu scenario: interrupted" in err and "Traceback" not in err
    assert workers and not any(_running(w) for w in workers)


def test_the_workers_end_when_the_command_is_killed(tmp_path):
    """SIGKILL (a CI runner's timeout, the OOM killer) leaves the command no say: its
    workers end all the same, long before their 24 h cases would, not orphaned and running."""
    with open(tmp_path / "err.txt", "w") as err:  # not a pipe the workers would hold open
        proc = _two_long_cases(tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    workers: list[int] = []
    try:
        workers = _both_workers(proc)
        proc.kill()
        proc.wait()
        give_up = time.monotonic() + 60  # a hang guard, not a timing check
        while any(map(_running, workers)) and time.monotonic() < give_up:
            time.sleep(0.05)
        orphans = [w for w in workers if _running(w)]
    finally:
        proc.kill()
        for worker in workers:  # those the fix missed, so that they do not outlive the test
            if _running(worker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
    assert len(workers) == 2, (tmp_path / "err.txt").read_text()
    assert orphans == []


def test_a_ctrl_c_as_the_parent_takes_a_futures_lock_still_ends_the_pool():
    """Python runs a SIGINT's handler between two bytecodes of the main thread, so also
    inside `threading.Condition.__enter__` once its lock is taken, before the `with` that
    would release it has begun: a future's lock taken so stays taken, and the pool's thread,
    which takes it to settle the case, waits forever, and the command's exit with it."""
    _in_a_process_of_its_own("ctrl_c_as_a_futures_lock_is_taken")


def test_a_second_ctrl_c_while_the_workers_are_ended_does_not_leave_them_running():
    """Users press Ctrl-C twice: a second one while the first is ending the workers waits
    until they are ended, else the pool's shutdown waits for their cases."""
    _in_a_process_of_its_own("second_ctrl_c_as_the_workers_are_ended")


def _in_a_process_of_its_own(story: str) -> None:
    """Runs `story` of this module in a child interpreter, which must end, and cleanly."""
    proc = subprocess.run(
        [sys.executable, "-c", f"from tests.hil.test_scenario_sweep import {story}; {story}()"],
        cwd=REPO, capture_output=True, text=True,
        timeout=60)  # a hang guard, not a timing check
    assert proc.returncode == 0, proc.stderr


def second_ctrl_c_as_the_workers_are_ended() -> None:
    """In a process of its own: a pool of two long cases, one of which sends the parent a
    Ctrl-C, and a second Ctrl-C just before the parent ends the workers."""
    stop_workers = scenario_sweep._stop_workers

    def ctrl_c_then_stop(pool) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # its handler runs at once, unless held
        stop_workers(pool)

    scenario_sweep._stop_workers = ctrl_c_then_stop
    with pytest.raises(KeyboardInterrupt):
        scenario_sweep._pool_map(_ctrl_c_to_the_parent, ["ctrl-c", "long"], 2)


def ctrl_c_as_a_futures_lock_is_taken() -> None:
    """In a process of its own: a pool of two long cases, one of which sends the parent a
    Ctrl-C, and one more Ctrl-C wherever the parent's main thread takes a future's lock while
    SIGINT is not blocked, handled right after the lock is taken."""
    enter = threading.Condition.__enter__

    def enter_then_ctrl_c(self):
        entered = enter(self)
        taker = sys._getframe(1).f_code.co_filename
        if (threading.get_ident() == threading.main_thread().ident
                and taker.endswith(os.path.join("concurrent", "futures", "_base.py"))
                and signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])):
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before this returns
        return entered

    threading.Condition.__enter__ = enter_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        scenario_sweep._pool_map(_ctrl_c_to_the_parent, ["ctrl-c", "long"], 2)


def _ctrl_c_to_the_parent(case: str) -> None:
    if case == "ctrl-c":
        os.kill(os.getppid(), signal.SIGINT)
    time.sleep(3600)


def _ignores_sigint(pid: int) -> bool:
    """The worker's initializer has run: the parent is long past forking it (a SIGINT in
    the parent's own after-fork hooks would be swallowed there)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    ignored = int(re.search(r"SigIgn:\s*([0-9a-f]+)", status)[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to read its status."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
