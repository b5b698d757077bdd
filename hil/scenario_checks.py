"""What a scenario may expect of a run, and how one step is judged against it.

Why and how: docs/internals.md, hil/scenario_checks.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from bms.core.signals import Actuation
from hil.pack import SimulatedPack

# An active protection row (fault, level, quantity), or a fault raised outside the table
# (fault, "FAULT", None).
ActiveRow = tuple[str, str, str | None]


class StepView:
    """One step as the checks see it; plant figures are computed only when asked for."""

    def __init__(self, step: int, now_s: float, act: Actuation,
                 active: frozenset[ActiveRow], pack: SimulatedPack):
        self.step = step
        self.now_s = now_s
        self.act = act
        self.active = active
        self.pack = pack

    @functools.cached_property
    def soc_true_pct(self) -> float:
        return self.pack.true_pack_soc * 100.0


@dataclass(frozen=True)
class Observable:
    unit: str
    what: str
    read: Callable[[StepView], tuple[float, float]]  # (lowest, highest) this step
    magnitude: bool = False  # only a maximum, keyed by the bare name


def _scalar(read: Callable[[StepView], float]) -> Callable[[StepView], tuple[float, float]]:
    def both(view: StepView) -> tuple[float, float]:
        x = read(view)
        return x, x
    return both


OBSERVABLES: dict[str, Observable] = {
    "charge_limit_a": Observable("A", "published charge limit",
                                 _scalar(lambda v: v.act.charge_limit_a)),
    "discharge_limit_a": Observable("A", "published discharge limit",
                                    _scalar(lambda v: v.act.discharge_limit_a)),
    "soc_pct": Observable("%", "estimated pack SoC", _scalar(lambda v: v.act.soc * 100.0)),
    "soc_true_pct": Observable("%", "true pack SoC (plant)", _scalar(lambda v: v.soc_true_pct)),
    "soc_error_pct": Observable("%", "|estimated - true pack SoC|",
                                _scalar(lambda v: abs(v.act.soc * 100.0 - v.soc_true_pct)),
                                magnitude=True),
    "balancing_cells": Observable("cells", "cells bleeding (balance switches on)",
                                  _scalar(lambda v: float(v.act.balance_mask.sum()))),
    "current_a": Observable("A", "true pack current, + = charging",
                            _scalar(lambda v: v.pack.current_a)),
    "cell_v": Observable("V", "true cell voltage (plant)",
                         lambda v: (float(v.pack.group_v.min()), float(v.pack.group_v.max()))),
    "temp_c": Observable("°C", "true cell temperature (plant)",
                         lambda v: (float(v.pack.thermal.temperature_c.min()),
                                    float(v.pack.thermal.temperature_c.max()))),
}


def bound_keys() -> dict[str, tuple[str, str]]:
    """Every numeric key a check may use -> (observable, "min" or "max")."""
    keys: dict[str, tuple[str, str]] = {}
    for name, obs in OBSERVABLES.items():
        if obs.magnitude:
            keys[name] = (name, "max")
        else:
            keys[f"{name}_min"] = (name, "min")
            keys[f"{name}_max"] = (name, "max")
    return keys


BOUND_KEYS = bound_keys()


def _active_text(view: StepView) -> str:
    if not view.active:
        return "no fault active"
    shown = sorted(f"{f} {lvl}" + (f" ({q})" if q else "") for f, lvl, q in view.active)
    return "active: " + ", ".join(shown)


@dataclass(frozen=True)
class FaultActive:
    """A fault active: any of its rows; with `level`, a row at that level (faults raised
    outside the table are FAULTs); with `quantity`, that row. No fault: any at `level`."""

    fault: str | None
    level: str | None = None
    quantity: str | None = None

    def holds(self, view: StepView) -> bool:
        return any((self.fault is None or f == self.fault)
                   and (self.level is None or lvl == self.level)
                   and (self.quantity is None or q == self.quantity)
                   for f, lvl, q in view.active)

    def describe(self) -> str:
        what = " ".join(x for x in (self.fault or "any", self.level) if x)
        return what + (f" ({self.quantity})" if self.quantity else "") + " active"

    def seen(self, view: StepView) -> str:
        return _active_text(view)


@dataclass(frozen=True)
class FaultInactive:
    fault: str

    def holds(self, view: StepView) -> bool:
        return not any(f == self.fault for f, _, _ in view.active)

    def describe(self) -> str:
        return f"{self.fault} not active"

    def seen(self, view: StepView) -> str:
        return _active_text(view)


@dataclass(frozen=True)
class StateIs:
    state: str

    def holds(self, view: StepView) -> bool:
        return view.act.state == self.state

    def describe(self) -> str:
        return f"state {self.state}"

    def seen(self, view: StepView) -> str:
        return f"state {view.act.state}"


@dataclass(frozen=True)
class ContactorsAre:
    word: str  # "open" or "closed", as Contactors.describe() says

    def holds(self, view: StepView) -> bool:
        return view.act.contactors.describe() == self.word

    def describe(self) -> str:
        return f"contactors {self.word}"

    def seen(self, view: StepView) -> str:
        return f"contactors {view.act.contactors.describe()}"


@dataclass(frozen=True)
class Bound:
    observable: str
    side: str  # "min" or "max"
    limit: float

    def value(self, view: StepView) -> float:
        low, high = OBSERVABLES[self.observable].read(view)
        return low if self.side == "min" else high

    def holds(self, view: StepView) -> bool:
        value = self.value(view)
        return value >= self.limit if self.side == "min" else value <= self.limit

    def describe(self) -> str:
        obs = OBSERVABLES[self.observable]
        sign = ">=" if self.side == "min" else "<="
        return f"{self.observable} {sign} {self.limit:g} {obs.unit}"

    def seen(self, view: StepView) -> str:
        return f"{self.observable} {self.value(view):.4g} {OBSERVABLES[self.observable].unit}"


Condition = FaultActive | FaultInactive | StateIs | ContactorsAre | Bound


@dataclass(frozen=True)
class Check:
    """One line of the report: conditions over the steps first_step..last_step."""

    label: str
    where: str  # where the file sets it: "expect[2]", "bounds.temp_c_max"
    first_step: int
    last_step: int
    conditions: tuple[Condition, ...]
    never: bool = False  # fails where all conditions hold, instead of where one does not

    @property
    def subjects(self) -> tuple[FaultActive, ...]:
        """The faults this check asserts active: what the coverage of the table counts."""
        return () if self.never else tuple(
            c for c in self.conditions if isinstance(c, FaultActive))


class Verdict:
    """A check's outcome, built step by step: the first step that decides a failure."""

    def __init__(self, check: Check):
        self.check = check
        self.failure: str | None = None
        self.steps_seen = 0

    def observe(self, view: StepView) -> None:
        c = self.check
        if self.failure is not None or not c.first_step <= view.step <= c.last_step:
            return
        self.steps_seen += 1
        if c.never:
            if all(cond.holds(view) for cond in c.conditions):
                self.failure = (f"at {view.now_s:g} s: " + "; ".join(
                    cond.seen(view) for cond in c.conditions))
            return
        failed = [cond for cond in c.conditions if not cond.holds(view)]
        if failed:
            self.failure = f"at {view.now_s:g} s: " + "; ".join(
                f"expected {cond.describe()}, found {cond.seen(view)}" for cond in failed)

    @property
    def passed(self) -> bool:
        return self.failure is None and self.steps_seen > 0

    @property
    def message(self) -> str:
        if self.failure is not None:
            return self.failure
        if self.steps_seen == 0:
            return "the run never reached this check's time"
        return ""
