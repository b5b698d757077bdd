"""Running many scenario cases through one interface, `run_cases(cases, engine)`: in this
process (`SerialEngine`), on a pool of processes (`ProcessPoolEngine`, `scenario --jobs`) or
on a Dask cluster (`hil.scenario_sweep_dask`, `scenario --dask`), the outcomes in the cases'
order whatever the engine, so that reports do not depend on it.

An engine only moves cases out and outcomes back; what a case's outcome is belongs to
`run_case`, which runs in the worker. Why and how: docs/internals.md, hil/scenario_sweep.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Protocol

from bms.runtime.process_life import end_with_parent
from hil.scenario import ScenarioResult, run_scenario
from hil.scenario_file import Scenario


@dataclass(frozen=True)
class CaseError:
    """A case that ended without a verdict: an exception in its run, or its worker lost."""

    scenario: Scenario
    message: str
    detail: str  # the traceback, or what became of the worker

    # As a ScenarioResult with nothing judged, so a report reads both alike.
    passed = False
    failures = 0
    verdicts = ()
    events = ()
    sim_s = wall_s = 0.0


Outcome = ScenarioResult | CaseError
CaseRunner = Callable[[Scenario], Outcome]


class Engine(Protocol):
    def map(self, fn: CaseRunner, cases: Sequence[Scenario]) -> list[Outcome]:
        """`fn` of each case, in the order given; a case whose worker was lost is a
        CaseError. Ctrl-C stops every worker before KeyboardInterrupt goes on."""


def run_case(sc: Scenario) -> Outcome:
    """One case, in whichever process runs it: an exception is this case's error, so the
    other cases still run."""
    try:
        return run_scenario(sc)
    except Exception as exc:
        return CaseError(sc, f"{type(exc).__name__}: {exc}", traceback.format_exc())


def run_cases(cases: Sequence[Scenario], engine: Engine,
              fn: CaseRunner = run_case) -> list[Outcome]:
    """Every case's outcome, in the order of `cases`. They go out longest first (by
    simulated steps), so that a long case does not start last and hold the whole sweep."""
    order = sorted(range(len(cases)), key=lambda i: -cases[i].n_steps)
    outcomes: list[Outcome | None] = [None] * len(cases)
    for i, outcome in zip(order, engine.map(fn, [cases[i] for i in order]), strict=True):
        outcomes[i] = outcome
    return outcomes


class SerialEngine:
    """One case after another in this process."""

    def map(self, fn: CaseRunner, cases: Sequence[Scenario]) -> list[Outcome]:
        return [fn(sc) for sc in cases]


WORKER_DIED = ("its worker process died each time it ran (twice beside other cases, then "
               "alone: killed by a signal, out of memory, or an exit from the interpreter); "
               "the other cases ran")
NO_WORKER = ("the pool's worker processes died before any case started (out of memory or "
             "processes?); this case never ran")


@dataclass(frozen=True)
class ProcessPoolEngine:
    """`jobs` worker processes on this machine. `reran` lists the cases a dying worker took
    with it, which ran again (the command names them)."""

    jobs: int
    reran: list[Scenario] = field(default_factory=list, compare=False)

    def map(self, fn: CaseRunner, cases: Sequence[Scenario]) -> list[Outcome]:
        """A worker that dies breaks the pool, and with it every case not yet done: its own
        and the other workers' (the pool ends them). Those go to a new pool of `jobs`
        with the cases not yet started: an outside kill (the OOM killer, `kill -9`) costs
        one more run of a few cases, not the sweep's parallelism. A case in flight when two
        pools broke may be the one that kills its worker: it runs alone at the end, so that
        no other case is lost with it again."""
        outcomes: list[Outcome | None] = [None] * len(cases)
        lost = [0] * len(cases)  # pools that broke while it ran
        while pooled := [i for i, o in enumerate(outcomes) if o is None and lost[i] < 2]:
            got, started = _pool_map(fn, [cases[i] for i in pooled], self.jobs)
            for i, outcome, ran in zip(pooled, got, started, strict=True):
                outcomes[i] = outcome
                lost[i] += outcome is None and bool(ran)
            if not any(started):  # no worker got as far as a case: it would recur
                for i in pooled:
                    outcomes[i] = outcomes[i] or CaseError(cases[i], NO_WORKER, NO_WORKER)
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                (again,), _ = _pool_map(fn, [cases[i]], 1)
                outcomes[i] = again or CaseError(cases[i], WORKER_DIED, WORKER_DIED)
        self.reran.extend(sc for sc, n in zip(cases, lost, strict=True) if n)
        return outcomes


def _pool_map(fn: CaseRunner, cases: Sequence[Scenario],
              jobs: int) -> tuple[list[Outcome | None], Sequence[int]]:
    """Each case's outcome, None where the pool broke before it was done; and for each case
    whether a worker started it (1), in memory the workers share."""
    started = multiprocessing.get_context("fork").RawArray("b", len(cases))
    # Forked, as Python 3.11 does by default on Linux (3.14 forks a server first): the
    # workers are this process's children, forked by its main thread (`end_with_parent`,
    # Linux's). The project runs on POSIX systems only (pseudo-terminals, sessions).
    pool = ProcessPoolExecutor(max(1, min(jobs, len(cases))), multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(os.getpid(), started))
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    try:
        with _interrupts_held():
            futures = [pool.submit(_tracked, fn, i, sc) for i, sc in enumerate(cases)]
            for future in futures:
                future.add_done_callback(finished.put)
        for _ in futures:
            finished.get()  # the wait a Ctrl-C ends: in C, it leaves no lock taken
        with _interrupts_held():
            return [_done(f, sc) for f, sc in zip(futures, cases, strict=True)], started
    except BaseException:  # Ctrl-C: the running cases are ended, not waited for
        with _interrupts_held():  # a second Ctrl-C must not stop the ending half-way
            _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _done(future: Future, sc: Scenario) -> Outcome | None:
    try:
        return future.result()
    except BrokenProcessPool:
        return None
    except Exception as exc:  # the case or its outcome could not cross between processes
        message = f"could not pass between processes: {type(exc).__name__}: {exc}"
        return CaseError(sc, message, message)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """A Ctrl-C while the main thread takes the pool's or the futures' locks is held until it
    is out. Python raises KeyboardInterrupt between two bytecodes, also inside a lock's
    `__enter__` written in Python (threading.Condition's: `submit` and `Future.result` take
    one) once the lock is taken: it stays taken, and the pool's thread, which takes it to
    settle the cases, waits forever, and the command's exit with it. Released, a Ctrl-C is
    raised here."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_started: Sequence[int] = ()  # in a worker: the sweep's `started` flags (`_start_worker`)


def _tracked(fn: CaseRunner, i: int, sc: Scenario) -> Outcome:
    """In a worker: case i flagged started, then run."""
    _started[i] = 1
    return fn(sc)


def _start_worker(parent_pid: int, started: Sequence[int]) -> None:
    """A worker ends when its parent does, by whatever means: a parent killed by SIGKILL (a
    CI runner's timeout, the OOM killer) cannot end its workers, so Linux sends them SIGTERM.
    A terminal's Ctrl-C reaches the workers too: the parent alone decides what it ends.
    `started`, shared memory the fork hands down, is where it flags the cases it starts."""
    global _started
    _started = started
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler the fork copied
    if not end_with_parent(parent_pid, signal.SIGTERM):
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # last: tests take it as the set-up's end


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    # Python 3.14 has pool.terminate_workers(); before it the processes are only reachable
    # through the pool's own table.
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
