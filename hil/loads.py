"""Load and charger profiles, and how the pack current follows from them.

A profile gives a signed demand at each time: a current (A) or a power (W); positive
asks to charge, negative to discharge. Charging always goes through a charger that
does CC-CV toward the pack charge voltage and never exceeds the charge current limit
the firmware publishes; discharging never exceeds the published discharge limit.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bms.data.csv_table import Findings, read_table
from bms.data.validation import InputError, Problems

DAY_S = 86400.0

# The built-in `datacenter` day, as (start hour, power as a fraction of the pack's nominal
# energy per hour: 1.0 = a power that would empty the pack in one hour). Positive = charge.
# A UPS string floats at full charge, rides through a 10-minute utility outage at high
# power, recharges, floats, and shaves the evening peak before recharging overnight.
DATACENTER_DAY: tuple[tuple[float, float], ...] = (
    (0.0, 0.05),  # float: the charger holds the pack at its charge voltage
    (9.0, -2.0),  # utility outage: ride-through at 2 P/E (a 30-minute rate)
    (9.0 + 10 / 60, 0.5),  # recharge
    (12.0, 0.05),  # float
    (17.0, -0.2),  # peak shaving, two hours
    (19.0, 0.3),  # recharge
    (22.0, 0.05),  # float
)


@dataclass(frozen=True)
class Demand:
    value: float  # signed, positive = charge
    unit: str  # "a" or "w"
    # An inverter's power stage (`hil.inverter_load`): a current (A) held to this terminal
    # voltage, at most while charging, at least while discharging. The inverter keeps to
    # the limits it was sent on its own; the pack takes what it drives, as a real one does.
    voltage_limit_v: float | None = None


class Load(Protocol):
    """What the pack draws at each time: a profile here, or an inverter on a CAN bus
    (`hil.inverter_load`)."""

    def demand(self, t_s: float) -> Demand: ...


@dataclass(frozen=True, eq=False)
class StepProfile:
    """Piecewise-constant demand: each value holds from its time until the next.

    Before the first time the first value applies; after the last, the last value holds,
    unless `period_s` is set, in which case the profile repeats with that period.
    """

    times_s: tuple[float, ...]
    values: tuple[float, ...]
    unit: str
    period_s: float | None = None

    def demand(self, t_s: float) -> Demand:
        if self.period_s:
            t_s = t_s % self.period_s
        i = max(bisect.bisect_right(self.times_s, t_s) - 1, 0)
        return Demand(self.values[i], self.unit)


def constant(value: float, unit: str) -> StepProfile:
    return StepProfile((0.0,), (value,), unit)


def datacenter(pack_energy_wh: float, start_h: float = 0.0) -> StepProfile:
    """The built-in data-centre day for a pack of the given nominal energy, from hour
    `start_h` of the day on (the benchmarks start at the 09:00 outage)."""
    return StepProfile(
        tuple(h * 3600.0 - start_h * 3600.0 for h, _ in DATACENTER_DAY),
        tuple(f * pack_energy_wh for _, f in DATACENTER_DAY),
        "w",
        period_s=DAY_S,
    )


# `cycles:C`: the C-rates a cycling rig uses, and the time each half gets beyond 1/C hours:
# the charger's CV taper, and the discharge's derated tail near empty.
CYCLE_RATES_C = (0.0, 5.0)  # open at 0
CYCLE_CHARGE_EXTRA_S = 3600.0
CYCLE_DISCHARGE_EXTRA_S = 1800.0


def cycles(pack_capacity_ah: float, c_rate: float) -> StepProfile:
    """Full cycles at one C-rate, as a cycle-life rig runs them: a charge for 1/C hours
    plus an hour, then a discharge for 1/C hours plus half an hour, repeating. The limits
    the firmware publishes end each half (CC-CV to the charge voltage limit; the
    discharge limit's taper near empty), not the timer."""
    current_a = c_rate * pack_capacity_ah
    charge_s = 3600.0 / c_rate + CYCLE_CHARGE_EXTRA_S
    discharge_s = 3600.0 / c_rate + CYCLE_DISCHARGE_EXTRA_S
    return StepProfile((0.0, charge_s), (current_a, -current_a), "a",
                       period_s=charge_s + discharge_s)


def pulses(pack_capacity_ah: float, seed: int = 0, hours: float = 48.0) -> StepProfile:
    """Random current pulses with rests, a dynamic test of estimation: each pulse lasts
    10-60 s at a current drawn evenly from 2C discharge to 0.5C charge (regeneration),
    followed by 0-60 s of rest. Discharge dominates, so the pack goes from high to low SoC
    in about three hours."""
    rng = np.random.default_rng(seed)
    times, values = [], []
    t_s = 0.0
    while t_s < hours * 3600.0:
        times.append(t_s)
        values.append(float(rng.uniform(-2.0, 0.5)) * pack_capacity_ah)
        t_s += float(rng.uniform(10.0, 60.0))
        times.append(t_s)
        values.append(0.0)
        t_s += float(rng.uniform(0.0, 60.0))
    return StepProfile(tuple(times), tuple(values), "a")


def load_csv_profile(path: str | Path) -> StepProfile:
    """Reads `time_s,current_a` or `time_s,power_w`; errors name the line and the value."""
    table = read_table(path)
    problems = Problems(table.source)
    header = table.header
    if len(header) != 2 or header[0] != "time_s" or header[1] not in ("current_a", "power_w"):
        problems.add("line 1 (header)", table.first.text if table.first else "",
                     "must be 'time_s,current_a' or 'time_s,power_w'")
        problems.raise_if_any()
    nums = table.numbers([0, 1])
    found = Findings()
    found.add([row.line for row in nums.misshapen], 0,
              lambda k: f"line {nums.misshapen[k].line} = {nums.misshapen[k].text!r}: "
              "must have exactly 2 columns")
    lines, values = nums.lines, nums.values
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    found.add(lines[bad], 0, lambda k: f"line {lines[bad[k]]} = {nums.rows[bad[k]].text!r}: "
              "both columns must be finite numbers")
    finite, finite_lines = np.delete(values, bad, axis=0), np.delete(lines, bad)
    # A time that does not pass every time before it is left out: the one to pass is the
    # highest so far.
    previous_s = np.maximum.accumulate(np.concatenate(([-np.inf], finite[:-1, 0])))
    back = np.flatnonzero(finite[:, 0] <= previous_s)
    found.add(finite_lines[back], 0, lambda k: f"line {finite_lines[back[k]]} time_s = "
              f"{float(finite[back[k], 0])!r}: must be greater than the previous time "
              f"({previous_s[back[k]]:g})")
    if not table.rows:
        problems.add("rows", 0, "the profile needs at least one data row")
    found.report(problems)
    problems.raise_if_any()
    steps = np.delete(finite, back, axis=0)
    return StepProfile(tuple(steps[:, 0].tolist()), tuple(steps[:, 1].tolist()),
                       "a" if header[1] == "current_a" else "w")


def resolve_profile(spec: str, pack_energy_wh: float, pack_capacity_ah: float) -> StepProfile:
    """`datacenter`, `pulses[:SEED]`, `rest`, `current:A`, `power:W`, `cycles:C` or a CSV
    file path."""
    if spec == "datacenter":
        return datacenter(pack_energy_wh)
    if spec == "pulses" or spec.startswith("pulses:") and spec[7:].isdigit():
        return pulses(pack_capacity_ah, int(spec[7:] or 0))
    if spec == "rest":
        return constant(0.0, "a")
    kind, _, number = spec.partition(":")
    if kind in ("current", "power") and number:
        per_c = kind == "current" and number[-1] in "Cc"  # `current:0.5C`: of this pack
        try:
            value = float(number[:-1]) * pack_capacity_ah if per_c else float(number)
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):  # the plant would go NaN
            example = "current:-10" if kind == "current" else "power:-500"
            raise InputError("--profile", [f"{spec!r}: the {kind} must be a finite number, "
                                           f"for example {example}"])
        if value is not None:
            return constant(value, "a" if kind == "current" else "w")
    if kind == "cycles" and number:
        try:
            c_rate = float(number)
        except ValueError:
            c_rate = math.nan
        low, high = CYCLE_RATES_C
        if not low < c_rate <= high:
            raise InputError("--profile", [f"{spec!r}: the C-rate must be a number in "
                                           f"({low:g}, {high:g}], for example cycles:0.5"])
        return cycles(pack_capacity_ah, c_rate)
    if spec.endswith(".csv") or Path(spec).exists():
        return load_csv_profile(spec)
    raise InputError("--profile", [
        f"{spec!r}: use datacenter, pulses (or pulses:SEED), rest, current:A (for example "
        "current:-10, or a C-rate: current:0.5C), power:W (for example power:-500), "
        "cycles:C (full cycles at C, for example cycles:0.5) or a CSV file with "
        "time_s,current_a or time_s,power_w"
    ])


def pack_current_a(
    demand: Demand,
    terminal_v: float,
    pack_emf_v: float,
    pack_r_ohm: float,
    charge_voltage_v: float,
    charge_limit_a: float,
    discharge_limit_a: float,
    discharge_voltage_v: float | None = None,
) -> float:
    """The current the load or charger draws this step, within the firmware's limits: the
    charger holds the terminals at `charge_voltage_v` at most, the load at
    `discharge_voltage_v` (the DVL) at least."""
    wanted_a = demand.value if demand.unit == "a" else demand.value / max(terminal_v, 1.0)
    if wanted_a > 0.0:
        # Constant voltage: the current that puts the terminals exactly at charge voltage.
        cv_a = (charge_voltage_v - pack_emf_v) / pack_r_ohm
        return max(0.0, min(wanted_a, charge_limit_a, cv_a))
    if discharge_voltage_v is not None:
        # The current that puts the terminals exactly at the discharge voltage limit.
        discharge_limit_a = min(discharge_limit_a,
                                max(0.0, (pack_emf_v - discharge_voltage_v) / pack_r_ohm))
    return max(wanted_a, -discharge_limit_a)
