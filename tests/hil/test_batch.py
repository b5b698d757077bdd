"""`hil.batch.run_batch`: one clock for many runs, each on its own simulated time."""

from __future__ import annotations

import pytest

from hil.batch import run_batch


class FakeRun:
    """A PackRun's surface: counts its ticks and logs (batch tick, own tick) for each."""

    def __init__(self, name: str, n_ticks: int, log: list):
        self.name, self.n_ticks, self.done, self.log = name, n_ticks, 0, log

    @property
    def finished(self) -> bool:
        return self.done >= self.n_ticks

    def tick(self) -> float:
        self.log.append((self.name, self.done))
        self.done += 1
        return (self.done - 1) * 0.1

    def result(self, wall_s: float) -> tuple[str, int, float]:
        return self.name, self.done, wall_s


def test_each_run_starts_at_its_tick_runs_all_its_ticks_and_ends_in_order():
    log: list = []
    runs = [FakeRun("a", 3, log), FakeRun("b", 3, log), FakeRun("c", 2, log)]
    ticks = []
    results, failed = run_batch(runs, [0, 1, 3], 0.1, None,
                                after_tick=lambda: ticks.append(len(log)))
    assert failed == {}
    assert [r[:2] for r in results] == [("a", 3), ("b", 3), ("c", 2)]
    # batch tick 0: a; 1: a b; 2: a b; 3: b c; 4: c
    assert log == [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1), ("b", 2), ("c", 0),
                   ("c", 1)]
    assert ticks == [1, 3, 5, 7, 8]  # after_tick once a batch tick, after its steps


def test_a_stop_ends_every_run_after_the_batch_tick_in_progress():
    log: list = []
    runs = [FakeRun("a", 100, log), FakeRun("b", 100, log), FakeRun("c", 100, log)]
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 4

    results, _ = run_batch(runs, [0, 2, 9], 0.1, None, stop)
    assert [r[:2] for r in results] == [("a", 4), ("b", 2), ("c", 0)]


def test_as_many_start_ticks_as_runs_are_needed():
    with pytest.raises(ValueError, match="2 runs but 1 start ticks"):
        run_batch([FakeRun("a", 1, []), FakeRun("b", 1, [])], [0], 0.1, None)


class Failing(FakeRun):
    def tick(self) -> float:
        if self.done == 2:
            raise RuntimeError("the plant broke")
        return super().tick()


def test_a_run_that_raises_is_stepped_no_further_and_the_others_go_on():
    log: list = []
    runs = [FakeRun("a", 5, log), Failing("b", 5, log), FakeRun("c", 5, log)]
    results, failed = run_batch(runs, [0, 0, 0], 0.1, None)
    assert [r[:2] for r in results] == [("a", 5), ("b", 2), ("c", 5)]
    assert list(failed) == [1] and str(failed[1]) == "the plant broke"
