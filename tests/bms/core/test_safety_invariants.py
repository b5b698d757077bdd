"""Safety invariants of the firmware step, by hypothesis stateful testing.

A `RuleBasedStateMachine` drives `Firmware.step(measurement, now_s)` directly, in
simulated time, with any sequence of measurements (cells from 0 V to past the
chemistry's absolute limits, NaN and infinite readings, implausible temperatures,
currents of either sign past short-circuit or unreadable, contactor feedback and bus
voltage from a cooperating plant or arbitrary, balancing feedback), silent ticks, host
requests, configuration writes by parameter id (any id, any value of any type) and
injected sensor and contactor faults. After every step it checks:

1. FAULT level means open. With a FAULT-level condition active - `fw.fault_active`, a
   FAULT-level protection row active, or the published bitmap carrying a fault that only
   exists at FAULT level (event faults, sensor plausibility, pack voltage, short circuit,
   open wire) - all three contactors (negative, precharge, positive) are commanded open
   in that very step, the state is FAULT and both published limits are 0. The first two
   definitions are checked to agree and the third implies them, so this is the strongest
   of them. Besides: contactors are closed only in PRECHARGE, RUN and RECOVERY; RUN and
   RECOVERY mean both main contactors closed; in RECOVERY nothing may be discharged and
   the charge limit is at most `limits.recovery_charge_a`; and a closing (any contactor
   from all open, a precharge retry included) never starts while a FAULT row is over its
   threshold and still debouncing.
2. Beyond an absolute limit means open within the debounce. An excursion starts with a
   measurement that has a reading beyond a limit and lasts while every measurement has
   one; at the first measurement step at least the debounce in force after its start, all
   contactors are open - within the debounce itself, stricter than "debounce plus one
   tick" (the protection trips on the tick that completes the debounce).
   - A cell above the chemistry's `limits.v_max` (or unreadable, which trips the stuck
     reading row at once): the CELL_OVERVOLTAGE FAULT row's debounce. Far enough above,
     the reading is also a sensor fault; both rows are FAULT level and both open.
   - A cell below `limits.v_min` (or unreadable): the CELL_UNDERVOLTAGE FAULT row's
     debounce, except in STORAGE, where a sodium-ion pack may sit at 0 V, the contactors
     are open (1.) and the under-voltage rows are off by design, and during a recovery
     charge (its way back, discharge forbidden); the excursion counts from the first
     measurement taken outside both.
   - A temperature beyond the chemistry's discharge limits (always), or beyond its charge
     limits while charging (current above the configured rest current, the firmware's own
     definition of charging): the matching DISCHARGE_/CHARGE_ over/undertemp FAULT row's
     debounce plus the TEMP_SENSOR_FAULT row's. The sum, because a reading past the
     plausible window (-55..125 °C) is first a suspected sensor and the temperature rows
     count only plausible readings: implausible ones for just under the sensor row's
     debounce, then plausible ones beyond the limit, delay the trip by up to the former.
     An unreadable (NaN) temperature neither starts nor ends an excursion: it says
     nothing of the temperature, and the firmware holds the sensor's last plausible
     reading through it.
   Only steps with a well-formed measurement are checked: a silent rig gives the firmware
   nothing to debounce, and the measurement timeout opens the contactors instead.
   Beyond a FAULT row's own threshold, the same and tighter: while the row's quantity
   reads straight off the measurement (`straight_figures`: cell extremes and pack voltage
   with every cell readable and none bleeding, temperatures with every reading plausible,
   the charge temperatures while charging, currents when readable), it counts from the
   first measurement past the threshold in force and must open within that row's own
   debounce in force - so a threshold or a debounce a host retuned binds too.
3. Published limits: 0 <= charge_limit_a <= cfg.limits.max_charge_a and
   0 <= discharge_limit_a <= cfg.limits.max_discharge_a of the configuration in force
   (a write binds from the next step, with or without a measurement), both finite, both
   0 outside a clean RUN.
4. Configuration: whatever `apply_changes` accepts keeps every voltage and temperature
   threshold and release inside the chemistry's absolute limits (pack rows: n_series
   times the cell limits), every FAULT row without such a limit on the safe side of its
   default and no slower than its default, every release on the safe side of its
   threshold, and the current maxima within [0, the chemistry's C-rate x capacity] - up
   to the validation's float tolerance, relative to the bound (so 0 is exact, and 65.6
   typed passes a bound computed as 16 x 4.1 = 65.59999999999999). The firmware takes
   every configuration `apply_changes` accepts. A refused write raises ParameterError
   and leaves `fw.cfg` and the overrides as they were.
5. A FAULT is latched: the state leaves FAULT only in the measured step that answers a
   clear-faults or service-reset the firmware took (or, a timeout before the first
   measurement ever, with that measurement), and then every FAULT row that was due
   (invariant 2, by its threshold) reads back past its release - unless it is an
   under-voltage row a recovery charge suspends.

The machine reaches a case only as often as its draws do; the cases a short search holds
too rarely (a reading just past a FAULT threshold for exactly the debounce, through sensor
dropouts too; a retuned row; a reading between threshold and release at a clear; a
recovery charge; a silent rig while charging; a write just past each bound) are driven
through the same machine, and the same checks, by the plain tests at the end.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from bms.core.firmware import Firmware
from bms.core.protection import TIME_EPS_S
from bms.core.signals import HOST_REQUESTS, OPEN, Actuation, Contactors, Measurement
from bms.data.config import (
    CELL_V_IMPLAUSIBLE_MARGIN,
    TEMP_PLAUSIBLE_C,
    FirmwareConfig,
    ProtectionRow,
    default_config,
)
from bms.data.faults import FAULT_CODES, bitmap
from bms.data.parameters import (
    IDS_PER_ROW,
    PROTECTION_BASE,
    ParameterError,
    apply_changes,
    catalogue,
    value_of,
)
from bms.data.presets import PRESETS

TICK_S = 0.1
REL_TOL = 1e-9  # the configuration check's float tolerance (bms.data.config_toml._beyond)
NAN, INF = math.nan, math.inf


def slack(bound: float) -> float:
    return REL_TOL * abs(bound)


def within(value: float, low: float, high: float) -> bool:
    return low - slack(low) <= value <= high + slack(high)


def fault_only_bits(cfg: FirmwareConfig) -> int:
    """Bits of the faults that exist only at FAULT level: every row FAULT, or no row at all
    (faults raised outside the table are always FAULT level)."""
    below_fault = {r.fault for r in cfg.protection if r.level != "FAULT"}
    return bitmap({name for name in FAULT_CODES if name not in below_fault})


def fault_row(cfg: FirmwareConfig, fault: str, quantity: str | None = None):
    rows = [r for r in cfg.protection if r.fault == fault and r.level == "FAULT"
            and (quantity is None or r.quantity == quantity)]
    assert len(rows) == 1, (fault, quantity, rows)
    return rows[0]


def straight_figures(m: Measurement, cfg: FirmwareConfig, bleeding: bool) -> dict[str, float]:
    """The protection quantities a measurement gives straight, where the firmware has no
    judgement to make: cell extremes and pack voltage with every cell readable (and, for
    the extremes, none bleeding: a bleed's drop in the sense wires is taken off the
    readings); temperatures with every reading plausible (else a sensor stands at its last
    plausible reading); the charge temperatures only while charging (above the configured
    rest current); the currents when readable; the raw extremes of readable temperatures,
    and the magnitudes the current and bus plausibility rows watch (an unreadable one is
    infinite)."""
    v, t, i_a = m.cell_voltage_v, m.temperature_c, m.current_a
    figures: dict[str, float] = {}
    if np.isfinite(v).all():
        figures["pack_v"] = float(v.sum())
        if not bleeding:
            figures.update(cell_v_max=float(v.max()), cell_v_min=float(v.min()))
    lo, hi = TEMP_PLAUSIBLE_C
    if t.size and np.isfinite(t).all():
        figures.update(temp_reading_max=float(t.max()), temp_reading_min=float(t.min()))
    if t.size and bool(((t >= lo) & (t <= hi)).all()):
        t_max, t_min = float(t.max()), float(t.min())
        figures.update(discharge_temp_max=t_max, discharge_temp_min=t_min)
        if math.isfinite(i_a) and i_a > cfg.rest_current_a:
            figures.update(charge_temp_max=t_max, charge_temp_min=t_min)
    if math.isfinite(i_a):
        figures.update(charge_a=i_a, discharge_a=-i_a)
    figures["current_reading_a"] = math.inf if math.isnan(i_a) else abs(i_a)
    bus_v = m.bus_voltage_v
    figures["bus_v_reading_v"] = math.inf if math.isnan(bus_v) else abs(bus_v)
    return figures


# The quantities `straight_figures` can give, and the under-voltage faults a recovery charge
# or STORAGE suspends.
STRAIGHT = frozenset({"pack_v", "cell_v_max", "cell_v_min", "discharge_temp_max",
                      "discharge_temp_min", "charge_temp_max", "charge_temp_min", "charge_a",
                      "discharge_a", "temp_reading_max", "temp_reading_min",
                      "current_reading_a", "bus_v_reading_v"})
UNDERVOLTAGE = frozenset({"CELL_UNDERVOLTAGE", "PACK_UNDERVOLTAGE"})


def over(row: ProtectionRow, value: float) -> bool:
    """The row's quantity is beyond its threshold (the debouncer's own comparison)."""
    return value > row.threshold if row.above else value < row.threshold


def past_release(row: ProtectionRow, value: float) -> bool:
    return value < row.release if row.above else value > row.release


def absolute_windows(chem, n_series: int) -> dict[str, tuple[float, float]]:
    """Per fault, the chemistry's absolute window its thresholds must stay in."""
    lim = chem.limits
    cell = (lim.v_min, lim.v_max)
    pack = (n_series * lim.v_min, n_series * lim.v_max)
    charge = (lim.charge_temp_min_c, lim.charge_temp_max_c)
    discharge = (lim.discharge_temp_min_c, lim.discharge_temp_max_c)
    return {"CELL_OVERVOLTAGE": cell, "CELL_UNDERVOLTAGE": cell,
            "PACK_OVERVOLTAGE": pack, "PACK_UNDERVOLTAGE": pack,
            "CHARGE_OVERTEMP": charge, "CHARGE_UNDERTEMP": charge,
            "DISCHARGE_OVERTEMP": discharge, "DISCHARGE_UNDERTEMP": discharge}


def check_accepted(cfg: FirmwareConfig, chem, n_series: int, capacity_ah: float) -> None:
    """Invariant 4 on a configuration apply_changes accepted, checked against the chemistry
    directly rather than through the validation's own Bound objects."""
    base = default_config(chem, n_series, capacity_ah)
    windows = absolute_windows(chem, n_series)
    assert len(cfg.protection) == len(base.protection)
    for row, default in zip(cfg.protection, base.protection, strict=True):
        name = f"{row.fault}.{row.level}.{row.quantity}"
        assert (row.fault, row.level, row.quantity, row.above) == (
            default.fault, default.level, default.quantity, default.above), name
        numbers = (row.threshold, row.release, row.debounce_s, row.release_s)
        assert all(math.isfinite(x) for x in numbers), (name, numbers)
        assert row.debounce_s >= 0.0 and row.release_s >= 0.0, (name, numbers)
        # A release on the trip side of its threshold would never let the row clear, or
        # (for a FAULT) let it clear while still tripping.
        assert row.release < row.threshold if row.above else row.release > row.threshold, (
            name, numbers)
        window = windows.get(row.fault)
        if window is not None:
            assert within(row.threshold, *window), (name, row.threshold, window)
            assert within(row.release, *window), (name, row.release, window)
        if row.level == "FAULT":
            assert row.debounce_s <= default.debounce_s + slack(default.debounce_s), (
                name, row.debounce_s)
            if window is None:  # no absolute limit: never looser than the default
                if row.above:
                    assert row.threshold <= default.threshold + slack(default.threshold), name
                else:
                    assert row.threshold >= default.threshold - slack(default.threshold), name
    lim, lc = chem.limits, cfg.limits
    assert within(lc.max_charge_a, 0.0, lim.max_charge_c * capacity_ah), lc.max_charge_a
    assert within(lc.max_discharge_a, 0.0, lim.max_discharge_c * capacity_ah), (
        lc.max_discharge_a)
    assert within(cfg.balancing.min_cell_v, lim.v_min, lim.v_max)


# --- what a measurement may contain ---------------------------------------------------


def cell_values(chem) -> st.SearchStrategy[float]:
    lim, thr = chem.limits, chem.thresholds
    edges = [0.0, lim.v_min, lim.v_max, float(np.nextafter(lim.v_max, INF)),
             lim.v_max + CELL_V_IMPLAUSIBLE_MARGIN, lim.v_max + 0.05, lim.v_min - 0.05,
             thr.overvoltage_v, thr.undervoltage_v, thr.charge_v, -0.1, -0.2]
    return st.one_of(st.floats(0.0, lim.v_max + 1.0), st.sampled_from(edges),
                     st.sampled_from([NAN, INF, -INF]), st.floats(-1.0, 0.0))


def temp_values(chem) -> st.SearchStrategy[float]:
    """Mostly the edges that matter: the chemistry's limits and a little past them, the
    plausibility window's ends and a little past them, unreadable; else anything."""
    lim = chem.limits
    lo, hi = TEMP_PLAUSIBLE_C
    edges = [lo, hi, lo - 5.0, hi + 5.0, float(np.nextafter(hi, -INF)), NAN, INF, -INF,
             lim.charge_temp_min_c - 2.0, lim.charge_temp_max_c + 2.0,
             lim.discharge_temp_min_c - 5.0, lim.discharge_temp_max_c + 10.0]
    return st.one_of(st.sampled_from(edges), st.sampled_from(edges), st.floats(-80.0, 200.0))


def current_values(cfg: FirmwareConfig) -> st.SearchStrategy[float]:
    charge, discharge = cfg.limits.max_charge_a, cfg.limits.max_discharge_a
    edges = [0.0, 0.1, -0.1, charge, -discharge, 1.6 * charge, -1.6 * discharge,
             -4.0 * discharge, -4.5 * discharge, 5.0 * charge, NAN, INF, -INF]
    return st.one_of(st.floats(-6.0 * discharge, 6.0 * charge), st.sampled_from(edges))


def config_value(param, default: object, chem) -> st.SearchStrategy[object]:
    """Values of every type, biased toward ones near the default and the chemistry's edges
    so that a fair share of writes is accepted."""
    lim = chem.limits
    junk = st.one_of(st.none(), st.booleans(), st.text(max_size=4),
                     st.integers(-(2 ** 70), 2 ** 70), st.sampled_from([NAN, INF, -INF]),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.lists(st.integers(), max_size=2), st.just(1 + 2j))
    if param.kind == "bool":
        return st.one_of(st.booleans(), junk)
    if param.kind == "choice":
        return st.one_of(st.sampled_from(param.choices), junk)
    if param.kind == "int":
        return st.one_of(st.integers(-2, 2 * int(default) + 2), st.just(2 ** 63),
                         st.just(10 ** 30), st.just(float(default)), junk)
    assert isinstance(default, float)
    edges = [lim.v_min, lim.v_max, lim.charge_temp_min_c, lim.charge_temp_max_c,
             lim.discharge_temp_min_c, lim.discharge_temp_max_c, 0.0, -0.0,
             float(np.nextafter(lim.v_max, INF)), lim.v_max * (1 + 5e-10)]
    return st.one_of(
        st.floats(0.0, 2.0).map(lambda f: default * f),
        st.floats(0.9, 1.1).map(lambda f: default * f),
        st.sampled_from(edges), junk)


# --- the machine ------------------------------------------------------------------------


class FirmwareSafety(RuleBasedStateMachine):
    """A firmware, a plant that answers its commands (or does not), a host, a configurator
    and a fault injector; every firmware step is checked against the invariants above."""

    # --- set-up ---------------------------------------------------------------------

    @initialize(chem_name=st.sampled_from(sorted(PRESETS)), n_series=st.integers(4, 8),
                n_temp=st.integers(1, 3), parallel=st.sampled_from([1, 4, 30]),
                level=st.floats(0.3, 0.7))
    def build(self, chem_name: str, n_series: int, n_temp: int, parallel: int,
              level: float) -> None:
        self.chem = PRESETS[chem_name]
        self.n = n_series
        self.capacity_ah = self.chem.capacity_ah * parallel
        self.fw = Firmware(self.chem, n_series, self.capacity_ah)
        self.default_cfg = self.fw.cfg
        self.fault_only_bits = fault_only_bits(self.fw.cfg)
        self.params = catalogue(self.fw.cfg)
        fault_rows = {f"protection.{r.fault}.{r.level}" for r in self.fw.cfg.protection
                      if r.level == "FAULT"}
        self.safety_params = [p for p in self.params if p.name.startswith(
            ("limits.", "precharge.", "contactors.", "measurement_timeout_s", "rest_current_a",
             "fault_log_size")) or p.name.rsplit(".", 1)[0] in fault_rows
            or p.name.rsplit(".", 2)[0] in fault_rows]
        self.overrides: dict = {}
        self.k = 0
        self.act: Actuation | None = None
        # The plant: a healthy pack at rest that does what it is told.
        self.cells = np.full(n_series, self._healthy_v(level))
        self.temps = np.full(n_temp, 25.0)
        self.current_a = 0.0
        self.plant = "cooperating"  # or "arbitrary", "welded"
        self.bus_v = 0.0
        self.feedback = OPEN
        self.balancing = "none"  # or "commanded", "arbitrary"
        self.balancing_mask = np.zeros(n_series, dtype=bool)
        # Injected sensor faults.
        self.open_wire: tuple[int, float] | None = None
        self.offset: tuple[int, float] | None = None
        self.stuck: dict[int, float] = {}
        self.cell_flicker: tuple[int, float] | None = None  # intermittent: every other tick
        self.temp_flicker: tuple[int, float] | None = None
        # Invariant 2: since when each absolute limit has been exceeded (None: not now).
        self.onset_s: dict[str, float | None] = dict.fromkeys(
            ("cell_high", "cell_low", "hot", "cold", "charge_hot", "charge_cold"))
        # And by each FAULT row's own threshold (by row index): since when its quantity has
        # read straight past it; the rows that got to their debounce (due to be latched).
        self.row_onset_s: dict[int, float] = {}
        self.due_rows: set[int] = set()
        self._fault_rows_of: FirmwareConfig | None = None  # see `_fault_rows`
        self._fault_rows_list: list[tuple[int, ProtectionRow]] = []
        # The firmware's balancing mask as of its last measured step (what it judges a
        # measurement without the plant's own balancing feedback by).
        self.bleed_mask = np.zeros(n_series, dtype=bool)
        # Invariant 5: a clear the firmware took and has not yet answered; any measurement yet.
        self.clear_sent = False
        self.measured = False

    def _healthy_v(self, level: float) -> float:
        """A cell voltage between under-voltage release and the charge voltage."""
        thr = self.chem.thresholds
        low, high = thr.undervoltage_release_v + 0.05, thr.charge_v - 0.15
        return low + level * (high - low)

    @property
    def now_s(self) -> float:
        return self.k * TICK_S

    # --- the plant ------------------------------------------------------------------------

    def _measure(self) -> Measurement:
        k = self.k
        v = self.cells.copy()
        # A working converter's noise: every reading moves every tick (a reading repeated to
        # the bit for 10 s is a stuck sensor, tested by injecting one).
        v = v + 1e-5 * ((k + np.arange(self.n)) % 2)
        if self.open_wire is not None:
            i, d = self.open_wire
            v[i] += d
            v[i + 1] -= d
        if self.offset is not None:
            v[self.offset[0]] += self.offset[1]
        if self.cell_flicker is not None and k % 2:
            v[self.cell_flicker[0]] = self.cell_flicker[1]
        for i, value in self.stuck.items():
            v[i] = value
        t = self.temps.copy()
        if self.temp_flicker is not None and k % 2:
            t[self.temp_flicker[0]] = self.temp_flicker[1]
        commanded = self.act.contactors if self.act is not None else OPEN
        finite = v[np.isfinite(v)]
        pack_v = float(finite.sum()) if finite.size else 0.0
        if self.plant == "cooperating":
            feedback = commanded
            connected = commanded.negative and (commanded.positive or commanded.precharge)
            bus_v = pack_v if connected else 0.0
            current_a = self.current_a if commanded.main_closed else 0.0
        elif self.plant == "welded":  # both main contactors welded: connected whatever
            feedback = Contactors(negative=True, positive=True)
            bus_v, current_a = pack_v, self.current_a
        else:
            feedback, bus_v, current_a = self.feedback, self.bus_v, self.current_a
        if self.balancing == "commanded" and self.act is not None:
            balancing = self.act.balance_mask
        elif self.balancing == "arbitrary":
            balancing = self.balancing_mask
        else:
            balancing = None
        return Measurement(v, t, current_a, bus_v, feedback, balancing)

    # --- one step and its checks ------------------------------------------------------------

    def _step(self, m: Measurement | None) -> None:
        pre_state = self.fw.state
        was_open = self.act is None or self.act.contactors == OPEN
        cfg = self.fw.cfg  # reconfiguration happens between steps: this is the one in force
        first = m is not None and not self.measured
        well_formed = m is not None and m.cell_voltage_v.shape == (self.n,)
        figures: dict[str, float] = {}
        if well_formed:
            bleed = m.balancing if m.balancing is not None else self.bleed_mask
            figures = straight_figures(m, cfg, bool(bleed.any()))
        act = self.fw.step(m, self.now_s)
        self.act = act
        if was_open and act.contactors != OPEN:  # a closing starts: no FAULT row may be due
            assert not self.fw.protection.fault_pending(), (act.state, act.contactors)
        if well_formed:
            self._track_onsets(m, pre_state, cfg)
            self._track_rows(pre_state, cfg, figures)
        self._check_fault_means_open(act)
        # A clear is answered in the next step with a measurement (none crashed on).
        cleared = first or (self.clear_sent and m is not None)
        self._check_fault_ends_by_clear(act, pre_state, figures, cfg, cleared)
        if well_formed:
            self._check_limit_deadlines(act, cfg)
            self._check_row_deadlines(act, cfg)
            self.bleed_mask = act.balance_mask
            self.clear_sent = False  # the firmware answered it in this step
        self.measured = self.measured or m is not None
        self._check_limits(act)
        self.k += 1

    def _track_rows(self, pre_state: str, cfg: FirmwareConfig,
                    figures: dict[str, float]) -> None:
        """Each FAULT row's excursion: from the first measurement with its quantity straight
        past its threshold in force, to one without (or with the quantity not straight, or
        the row suspended: under-voltage in STORAGE or during a recovery charge)."""
        suspended = pre_state == "STORAGE" or self.fw.recovering_since_s is not None
        for i, row in self._fault_rows(cfg):
            value = figures.get(row.quantity)
            if value is None or not over(row, value) or (suspended
                                                         and row.fault in UNDERVOLTAGE):
                self.row_onset_s.pop(i, None)
            else:
                self.row_onset_s.setdefault(i, self.now_s)

    def _fault_rows(self, cfg: FirmwareConfig) -> list[tuple[int, ProtectionRow]]:
        """The FAULT rows of `cfg` (by index) whose quantity can read straight."""
        if self._fault_rows_of is not cfg:
            self._fault_rows_of = cfg
            self._fault_rows_list = [(i, r) for i, r in enumerate(cfg.protection)
                                     if r.level == "FAULT" and r.quantity in STRAIGHT]
        return self._fault_rows_list

    def _check_row_deadlines(self, act: Actuation, cfg: FirmwareConfig) -> None:
        for i, onset_s in self.row_onset_s.items():
            row = cfg.protection[i]
            if self.now_s - onset_s >= row.debounce_s - TIME_EPS_S:
                assert act.contactors == OPEN, (
                    f"{row.fault} {row.quantity} past {row.threshold} since {onset_s:.1f} s, "
                    f"now {self.now_s:.1f} s (debounce {row.debounce_s} s): contactors "
                    f"{act.contactors}, state {act.state}, bitmap {act.fault_bitmap:#x}")
                self.due_rows.add(i)

    def _check_fault_ends_by_clear(self, act: Actuation, pre_state: str,
                                   figures: dict[str, float], cfg: FirmwareConfig,
                                   cleared: bool) -> None:
        if pre_state != "FAULT" or act.state == "FAULT":
            return
        assert cleared, (
            f"FAULT left for {act.state} at {self.now_s:.1f} s with no clear taken")
        recovering = self.fw.recovering_since_s is not None
        for i in self.due_rows:
            row = cfg.protection[i]
            value = figures.get(row.quantity)
            if value is None or recovering and row.fault in UNDERVOLTAGE:
                continue
            assert past_release(row, value), (
                f"{row.fault} {row.quantity} cleared at {value} (release {row.release})")
        self.due_rows.clear()

    def _track_onsets(self, m: Measurement, pre_state: str, cfg: FirmwareConfig) -> None:
        """Each excursion starts with a reading beyond the limit and ends with a
        measurement that has none. An unreadable (NaN) temperature neither starts nor ends
        one: it says nothing of the temperature (the firmware holds the sensor's last
        plausible reading). An unreadable cell does count as beyond: it trips at once."""
        lim = self.chem.limits
        v, t = m.cell_voltage_v, m.temperature_c
        unreadable_v, unknown_t = ~np.isfinite(v), bool(np.isnan(t).any())
        charging = m.current_a > cfg.rest_current_a

        def temp(beyond: np.ndarray, when: bool = True) -> bool | None:
            """True: a reading beyond; None: none, but one unreadable; False: within."""
            if not when:
                return False
            return True if beyond.any() else (None if unknown_t else False)

        beyond: dict[str, bool | None] = {
            "cell_high": bool((unreadable_v | (v > lim.v_max + slack(lim.v_max))).any()),
            "cell_low": pre_state != "STORAGE" and self.fw.recovering_since_s is None and bool(
                (unreadable_v | (v < lim.v_min - slack(lim.v_min))).any()),
            "hot": temp(t > lim.discharge_temp_max_c),
            "cold": temp(t < lim.discharge_temp_min_c),
            "charge_hot": temp(t > lim.charge_temp_max_c, charging),
            "charge_cold": temp(t < lim.charge_temp_min_c, charging),
        }
        for key, now_beyond in beyond.items():
            if now_beyond is False:
                self.onset_s[key] = None
            elif now_beyond and self.onset_s[key] is None:
                self.onset_s[key] = self.now_s

    def _deadlines_s(self, cfg: FirmwareConfig) -> dict[str, float]:
        """The debounce in force after which each kind of excursion must have opened.

        A cell reading beyond v_max is a cell voltage, or (beyond it by the implausible
        margin) also a sensor fault: both rows are FAULT level. A temperature reading past
        the plausible window is first a suspected sensor, and the over-temperature row
        counts only plausible readings (and the held reading through dropouts), so the
        two debounces may add up: an implausible reading for just under the sensor row's
        debounce, then plausible hot ones (or both, alternating)."""
        sensor_hot = fault_row(cfg, "TEMP_SENSOR_FAULT", "temp_reading_max").debounce_s
        sensor_cold = fault_row(cfg, "TEMP_SENSOR_FAULT", "temp_reading_min").debounce_s
        stuck = fault_row(cfg, "VOLTAGE_SENSOR_FAULT", "reading_stuck_s").debounce_s
        return {
            "cell_high": max(fault_row(cfg, "CELL_OVERVOLTAGE").debounce_s, stuck),
            "cell_low": max(fault_row(cfg, "CELL_UNDERVOLTAGE").debounce_s, stuck),
            "hot": fault_row(cfg, "DISCHARGE_OVERTEMP").debounce_s + sensor_hot,
            "cold": fault_row(cfg, "DISCHARGE_UNDERTEMP").debounce_s + sensor_cold,
            "charge_hot": fault_row(cfg, "CHARGE_OVERTEMP").debounce_s + sensor_hot,
            "charge_cold": fault_row(cfg, "CHARGE_UNDERTEMP").debounce_s + sensor_cold,
        }

    def _check_fault_means_open(self, act: Actuation) -> None:
        fw = self.fw
        prot = fw.protection
        fault_rows = bool((prot.active & np.array(prot.latching, dtype=bool)).any())
        assert fw.fault_active == (fault_rows or bool(fw.event_faults))
        fault_bits = act.fault_bitmap & self.fault_only_bits
        if fw.fault_active or fault_bits:
            assert act.contactors == OPEN, (act.state, act.contactors, fw.event_faults,
                                            act.fault_bitmap)
            assert act.state == "FAULT", act.state
            assert act.charge_limit_a == 0.0 and act.discharge_limit_a == 0.0
        if act.contactors != OPEN:
            assert act.state in ("PRECHARGE", "RUN", "RECOVERY"), (act.state, act.contactors)
        if act.state in ("RUN", "RECOVERY"):
            assert act.contactors.main_closed, act.contactors

    def _check_limit_deadlines(self, act: Actuation, cfg: FirmwareConfig) -> None:
        if all(onset_s is None for onset_s in self.onset_s.values()):
            return
        for key, deadline_s in self._deadlines_s(cfg).items():
            onset_s = self.onset_s[key]
            if onset_s is not None and self.now_s - onset_s >= deadline_s - TIME_EPS_S:
                assert act.contactors == OPEN, (
                    f"{key} since {onset_s:.1f} s, now {self.now_s:.1f} s (debounce "
                    f"{deadline_s} s): contactors {act.contactors}, state {act.state}, "
                    f"bitmap {act.fault_bitmap:#x}")

    def _check_limits(self, act: Actuation) -> None:
        lc = self.fw.cfg.limits
        for value, maximum in ((act.charge_limit_a, lc.max_charge_a),
                               (act.discharge_limit_a, lc.max_discharge_a)):
            assert math.isfinite(value) and 0.0 <= value <= maximum, (value, maximum)
        if act.state not in ("RUN", "RECOVERY") or self.fw.fault_active:
            assert act.charge_limit_a == 0.0 and act.discharge_limit_a == 0.0
        if act.state == "RECOVERY":
            assert act.discharge_limit_a == 0.0
            assert act.charge_limit_a <= lc.recovery_charge_a

    # --- time -------------------------------------------------------------------------------

    @rule(ticks=st.integers(1, 12))
    def tick(self, ticks: int) -> None:
        for _ in range(ticks):
            self._step(self._measure())

    @rule(ticks=st.integers(10, 80))
    def tick_long(self, ticks: int) -> None:
        for _ in range(ticks):
            self._step(self._measure())

    def _then_run(self, data: st.DataObject) -> None:
        """Most changes are worth nothing without time to act on them: a rule that changes
        the pack or the plant runs on for a while (0 to 12 s), so that a short run holds an
        excursion past a debounce. A second in a latched FAULT is enough: from there on
        nothing changes until a host acts."""
        in_fault = 0
        for _ in range(data.draw(st.integers(0, 120), label="then ticks")):
            self._step(self._measure())
            in_fault = in_fault + 1 if self.fw.fault_active else 0
            if in_fault > 10:
                break

    @rule(ticks=st.integers(1, 20))
    def silent(self, ticks: int) -> None:
        """The rig sends nothing: the runtime steps with None."""
        for _ in range(ticks):
            self._step(None)

    @rule(short=st.booleans())
    def malformed(self, short: bool) -> None:
        """One measurement with the wrong number of cells (a rig configured for another pack)."""
        m = self._measure()
        v = m.cell_voltage_v[:-1] if short else np.append(m.cell_voltage_v, 3.0)
        self._step(Measurement(v, m.temperature_c, m.current_a, m.bus_voltage_v,
                               m.contactors))

    # --- the host --------------------------------------------------------------------------

    @rule(name=st.sampled_from(HOST_REQUESTS))
    def request(self, name: str) -> None:
        self._request(name)

    def _request(self, name: str) -> str | None:
        answer = self.fw.request(name)
        if answer is None and name in ("clear-faults", "service-reset"):
            self.clear_sent = True
        return answer

    @rule(data=st.data())
    def back_to_health(self, data: st.DataObject) -> None:
        """A healthy, cooperating pack and a clear-faults + run, so that runs reach RUN
        again after a fault and the rules after this one act on a running pack."""
        self.cells = np.full(self.n, self._healthy_v(0.5))
        self.temps = np.full(self.temps.size, 25.0)
        self.plant, self.balancing = "cooperating", "none"
        self.open_wire = self.offset = self.cell_flicker = self.temp_flicker = None
        self.stuck = {}
        self._step(self._measure())  # the firmware judges a clear on the readings it has
        self._request("clear-faults")
        self._request("run")
        self._then_run(data)

    # --- the pack ---------------------------------------------------------------------------

    @rule(data=st.data())
    def set_cells(self, data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["healthy", "one", "all"]), label="how")
        level = data.draw(st.floats(0.0, 1.0), label="level")
        spread = data.draw(st.lists(st.floats(-0.003, 0.003), min_size=self.n,
                                    max_size=self.n), label="spread")
        cells = self._healthy_v(level) + np.array(spread)
        if how == "one":
            i = data.draw(st.integers(0, self.n - 1), label="cell")
            cells[i] = data.draw(cell_values(self.chem), label="value")
        elif how == "all":
            cells = np.array(data.draw(st.lists(cell_values(self.chem), min_size=self.n,
                                                max_size=self.n), label="cells"))
        self.cells = cells
        self._then_run(data)

    @rule(data=st.data())
    def set_temps(self, data: st.DataObject) -> None:
        n = self.temps.size
        temps = np.array(data.draw(st.lists(st.floats(0.0, 45.0), min_size=n, max_size=n),
                                   label="healthy"))
        how = data.draw(st.sampled_from(["healthy", "one", "all"]), label="how")
        if how == "one":
            j = data.draw(st.integers(0, n - 1), label="sensor")
            temps[j] = data.draw(temp_values(self.chem), label="value")
        elif how == "all":
            temps = np.array(data.draw(st.lists(temp_values(self.chem), min_size=n,
                                                max_size=n), label="temps"))
        self.temps = temps
        self._then_run(data)

    @rule(data=st.data())
    def set_current(self, data: st.DataObject) -> None:
        self.current_a = data.draw(current_values(self.default_cfg), label="current_a")
        self._then_run(data)

    @rule(data=st.data())
    def set_plant(self, data: st.DataObject) -> None:
        self.plant = data.draw(st.sampled_from(["cooperating", "arbitrary"]), label="plant")
        if self.plant == "arbitrary":
            finite = self.cells[np.isfinite(self.cells)]
            pack_v = float(finite.sum()) if finite.size else 0.0
            self.bus_v = data.draw(st.one_of(st.floats(-10.0, 2.0 * pack_v + 1.0),
                                             st.sampled_from([0.0, pack_v, NAN])),
                                   label="bus_v")
            self.feedback = Contactors(*data.draw(st.tuples(st.booleans(), st.booleans(),
                                                            st.booleans())))
        self.balancing = data.draw(st.sampled_from(["none", "commanded", "arbitrary"]),
                                   label="balancing")
        self.balancing_mask = np.array(data.draw(st.lists(st.booleans(), min_size=self.n,
                                                          max_size=self.n)))
        self._then_run(data)

    # --- injected faults ---------------------------------------------------------------------

    @rule(data=st.data())
    def open_sense_wire(self, data: st.DataObject) -> None:
        """A cell reads high and its neighbour as much low."""
        i = data.draw(st.integers(0, self.n - 2), label="cell")
        self.open_wire = (i, data.draw(st.floats(0.01, 1.5), label="shift_v"))
        self._then_run(data)

    @rule(data=st.data())
    def sensor_offset(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, self.n - 1), label="cell")
        self.offset = (i, data.draw(st.floats(-2.0, 2.0), label="offset_v"))
        self._then_run(data)

    @rule(data=st.data())
    def sensor_stuck(self, data: st.DataObject) -> None:
        """A reading that repeats to the bit from now on."""
        i = data.draw(st.integers(0, self.n - 1), label="cell")
        self.stuck[i] = float(self._measure().cell_voltage_v[i])
        self._then_run(data)

    @rule(data=st.data())
    def intermittent_cell(self, data: st.DataObject) -> None:
        """A loose sense wire: every other reading of a cell drops out (unreadable, 0 V) or
        jumps to any other value."""
        i = data.draw(st.integers(0, self.n - 1), label="cell")
        self.cells[i] = data.draw(cell_values(self.chem), label="value")
        self.cell_flicker = (i, data.draw(st.one_of(st.sampled_from([NAN, 0.0]),
                                                    cell_values(self.chem)), label="dropout"))
        self._then_run(data)

    @rule(data=st.data())
    def intermittent_temp(self, data: st.DataObject) -> None:
        """A loose sensor wire: every other reading drops out (unreadable, an open NTC's
        -60 °C, a shorted one's 150 °C) or jumps to any other value."""
        j = data.draw(st.integers(0, self.temps.size - 1), label="sensor")
        self.temps[j] = data.draw(temp_values(self.chem), label="value")
        self.temp_flicker = (j, data.draw(st.one_of(st.sampled_from([NAN, -60.0, 150.0]),
                                                    temp_values(self.chem)), label="dropout"))
        self._then_run(data)

    @precondition(lambda self: self.act is not None and self.act.contactors.main_closed)
    @rule(data=st.data())
    def weld(self, data: st.DataObject) -> None:
        """The main contactors weld: current and bus stay after an open command."""
        self.plant = "welded"
        if abs(self.current_a) < 2.0:
            self.current_a = -2.0
        self._then_run(data)

    @rule(data=st.data())
    def repair(self, data: st.DataObject) -> None:
        self.open_wire = self.offset = self.cell_flicker = self.temp_flicker = None
        self.stuck = {}
        if self.plant == "welded":
            self.plant = "cooperating"
        self._then_run(data)

    # --- configuration -----------------------------------------------------------------------

    def _write(self, changes: list[tuple[object, object]]) -> bool:
        """A host's write by parameter id; whether it was accepted."""
        cfg_before, overrides_before = self.fw.cfg, copy.deepcopy(self.overrides)
        try:
            cfg, overrides = apply_changes(self.overrides, changes, self.chem, self.n,
                                           self.capacity_ah)
        except ParameterError:
            assert self.fw.cfg is cfg_before
            assert self.overrides == overrides_before
            return False
        assert self.overrides == overrides_before  # the overrides in effect are not touched
        check_accepted(cfg, self.chem, self.n, self.capacity_ah)
        self.fw.reconfigure(cfg)  # anything apply_changes accepts, the firmware takes
        assert self.fw.cfg is cfg
        self.overrides = overrides
        return True

    @rule(data=st.data())
    def write_config(self, data: st.DataObject) -> None:
        """One to three changes by parameter id: mostly known ids, values of any type."""
        count = data.draw(st.integers(1, 3), label="count")
        changes: list[tuple[object, object]] = []
        for _ in range(count):
            if data.draw(st.integers(0, 9), label="unknown id?") == 0:
                pid = data.draw(st.one_of(st.integers(-5, 0x10000), st.text(max_size=3),
                                          st.none(), st.booleans()), label="id")
                value = data.draw(st.floats(), label="value")
            else:
                param = data.draw(st.one_of(st.sampled_from(self.safety_params),
                                            st.sampled_from(self.params)), label="param")
                default = self._current_value(param)
                pid, value = param.id, data.draw(config_value(param, default, self.chem),
                                                 label=param.name)
            changes.append((pid, value))
        self._write(changes)

    @rule(data=st.data())
    def write_protection_row(self, data: st.DataObject) -> None:
        """A threshold with a release on its safe side, and a debounce: moves a row as a
        whole, as a host tightening (or trying to loosen) protection would."""
        rows = [p for p in self.params if p.name.endswith(".threshold")]
        threshold = data.draw(st.sampled_from(rows), label="row")
        base = self.params.index(threshold)
        release, debounce = self.params[base + 1], self.params[base + 2]
        default = self._current_value(threshold)
        lim = self.chem.limits
        value = data.draw(st.one_of(
            st.floats(0.5, 1.5).map(lambda f: default * f),
            st.sampled_from([lim.v_min, lim.v_max, self.n * lim.v_max, self.n * lim.v_min,
                             lim.discharge_temp_max_c, lim.charge_temp_min_c,
                             lim.v_max + 0.01, lim.v_min - 0.01])), label="threshold")
        above = self.fw.cfg.protection[(threshold.id - PROTECTION_BASE) // IDS_PER_ROW].above
        gap = data.draw(st.floats(1e-3, 5.0), label="gap")
        changes = [(threshold.id, value), (release.id, value - gap if above else value + gap)]
        if data.draw(st.booleans(), label="debounce?"):
            changes.append((debounce.id, data.draw(st.floats(0.0, 6.0), label="debounce_s")))
        self._write(changes)

    def _current_value(self, param) -> object:
        return value_of(self.fw.cfg, param)


# Many short runs rather than few long ones: a fresh pack reaches RUN within five ticks, and
# most findings need a running pack, one excursion and the time to hold it (each rule that
# changes the pack runs on for up to 12 s). What a short search holds too rarely, the plain
# tests below drive on purpose; of the 23 firmware mutations tried for issue 19, two are
# left to the machine alone - a closing started while a FAULT row debounces, a crash that
# leaves the contactors closed - and with the examples drawn as `make test` draws them, 10
# runs catch both (at runs 6 and 11). 60 runs: a margin for that and for what no one has
# tried yet. The draws follow this class's source: an edit to it draws others, so check
# again after one. The long randomised search is benchmarks/fuzz_hypothesis.py (this many
# runs a round: give it more rounds). About 5 s.
FirmwareSafety.TestCase.settings = settings(
    max_examples=60, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestFirmwareSafety = pytest.mark.filterwarnings(
    # NaN and infinite readings are the point: numpy says so while the firmware copes.
    "ignore:invalid value encountered:RuntimeWarning")(FirmwareSafety.TestCase)


# --- the same machine, driven through the cases a short search holds too rarely ----------
#
# Each FAULT row on a reading a rig sends (a cell, a temperature, the current), held just past its
# threshold in a running pack: every step goes through `FirmwareSafety._step`, so all the
# invariants above are checked on the way too.

READING_ROWS = {  # (fault, quantity) -> (what the rig's reading is of, charging)
    ("CHARGE_OVERCURRENT", "charge_a"): ("current", False),
    ("DISCHARGE_OVERCURRENT", "discharge_a"): ("current", False),
    ("SHORT_CIRCUIT", "discharge_a"): ("current", False),
    ("CELL_OVERVOLTAGE", "cell_v_max"): ("cell", False),
    ("CELL_UNDERVOLTAGE", "cell_v_min"): ("cell", False),
    ("VOLTAGE_SENSOR_FAULT", "cell_v_max"): ("cell", False),
    ("VOLTAGE_SENSOR_FAULT", "cell_v_min"): ("cell", False),
    ("DISCHARGE_OVERTEMP", "discharge_temp_max"): ("temp", False),
    ("DISCHARGE_UNDERTEMP", "discharge_temp_min"): ("temp", False),
    ("CHARGE_OVERTEMP", "charge_temp_max"): ("temp", True),
    ("CHARGE_UNDERTEMP", "charge_temp_min"): ("temp", True),
    ("TEMP_SENSOR_FAULT", "temp_reading_max"): ("temp", False),
    ("TEMP_SENSOR_FAULT", "temp_reading_min"): ("temp", False)}
ROW_CASES = [pytest.param(chem, key, id=f"{chem}-{key[0]}-{key[1]}")
             for chem in sorted(PRESETS) for key in READING_ROWS]
# The current stops as the contactors open: a current row cannot be held between its
# threshold and release in FAULT.
LATCH_CASES = [case for case in ROW_CASES if READING_ROWS[case.values[1]][0] != "current"]
ALLOWED_S = 60.0  # the longest any of these waits is given: far beyond every debounce
RowName = tuple[str, str]  # fault, quantity


def running(chem_name: str, charging: bool) -> FirmwareSafety:
    """A 4S pack in RUN, at rest or charging at half its maximum."""
    machine = FirmwareSafety()
    machine.build(chem_name=chem_name, n_series=4, n_temp=2, parallel=4, level=0.5)
    if charging:
        cfg = machine.fw.cfg
        machine.current_a = cfg.rest_current_a + 0.5 * cfg.limits.max_charge_a
    run_until(machine, lambda act: act.state == "RUN")
    return machine


def run_until(machine: FirmwareSafety, done, measured: bool = True) -> int:
    """Steps (with measurements, or silent) until `done(actuation)`; returns how many."""
    for ticks in range(1, round(ALLOWED_S / TICK_S)):
        machine._step(machine._measure() if measured else None)
        if done(machine.act):
            return ticks
    raise AssertionError(f"not within {ALLOWED_S} s: state {machine.act.state}")


def run_for(machine: FirmwareSafety, duration_s: float) -> None:
    for _ in range(round(duration_s / TICK_S)):
        machine._step(machine._measure())


def set_reading(machine: FirmwareSafety, name: RowName, value: float) -> None:
    """One cell, or one temperature sensor, or the current (as charge_a or discharge_a),
    reads `value` from the next step on."""
    kind = READING_ROWS[name][0]
    if kind == "cell":
        machine.cells[0] = value
    elif kind == "temp":
        machine.temps[0] = value
    else:
        machine.current_a = value if name[1] == "charge_a" else -value


def healthy_reading(machine: FirmwareSafety, name: RowName) -> float:
    return {"cell": machine._healthy_v(0.5), "temp": 25.0, "current": 0.0}[
        READING_ROWS[name][0]]


def just_past(row: ProtectionRow, threshold: float) -> float:
    """Past `threshold` by a hundredth of the row's hysteresis: past it on every tick (the
    plant's cell noise is far smaller), and short of the next limit out."""
    step = 0.01 * abs(row.threshold - row.release)
    return threshold + step if row.above else threshold - step


def ticks_of(debounce_s: float) -> int:
    """The ticks a debounce takes at TICK_S: it trips on the tick that completes it."""
    return math.ceil((debounce_s - TIME_EPS_S) / TICK_S)


def trip(machine: FirmwareSafety, name: RowName, value: float, debounce_s: float) -> None:
    """Holds the reading at `value` from the next tick on, in RUN: the contactors stay
    closed for as long as the debounce, and open into FAULT, the fault's bit set, on the
    tick that completes it."""
    set_reading(machine, name, value)
    ticks = run_until(machine, lambda act: act.contactors == OPEN)
    assert ticks == ticks_of(debounce_s) + 1, (name, value, ticks, debounce_s)
    act = machine.act
    assert act.state == "FAULT" and act.fault_bitmap & (1 << FAULT_CODES[name[0]]), (
        act.state, act.fault_bitmap)


@pytest.mark.parametrize(("chem_name", "name"), ROW_CASES)
def test_a_reading_just_past_a_fault_threshold_opens_on_the_tick_its_debounce_ends(
        chem_name: str, name: RowName) -> None:
    machine = running(chem_name, READING_ROWS[name][1])
    row = fault_row(machine.fw.cfg, *name)
    trip(machine, name, just_past(row, row.threshold), row.debounce_s)


@pytest.mark.parametrize("dropout", [NAN, -60.0, 150.0])
@pytest.mark.parametrize(("chem_name", "name"), [
    case for case in ROW_CASES if case.values[1][0] in ("DISCHARGE_OVERTEMP",
                                                        "DISCHARGE_UNDERTEMP")])
def test_a_temperature_past_its_fault_threshold_trips_on_time_through_sensor_dropouts(
        chem_name: str, name: RowName, dropout: float) -> None:
    """A loose sensor wire: every other reading drops out (unreadable, an open NTC's -60 °C,
    a shorted one's 150 °C). The firmware holds the sensor's last plausible reading through
    them, so the row's debounce runs on from the first reading past its threshold."""
    machine = running(chem_name, charging=False)
    row = fault_row(machine.fw.cfg, *name)
    machine.temp_flicker = (0, dropout)  # on odd ticks
    first_drops_out = machine.k % 2  # then the excursion starts a tick later
    trip(machine, name, just_past(row, row.threshold), row.debounce_s + first_drops_out * TICK_S)


@pytest.mark.parametrize(("reading", "dropout"), [(NAN, -60.0), (150.0, -60.0), (-np.inf, -60.0),
                                                  (-60.0, NAN), (-60.0, 150.0)])
@pytest.mark.parametrize("chem_name", sorted(PRESETS))
def test_a_sensor_that_reads_beyond_both_sides_of_its_window_in_turn_trips_its_fault(
        chem_name: str, reading: float, dropout: float) -> None:
    """A sensor that gives no plausible reading, in turn too hot (or unreadable) and too
    cold, is broken: the highest-reading row trips it within its debounce of the first
    reading once both sides are seen, and names it. Each row alone would see one reading
    at a time and restart its debounce at the next, and the pack ran on blind."""
    machine = running(chem_name, charging=False)
    name = ("TEMP_SENSOR_FAULT", "temp_reading_max")
    row = fault_row(machine.fw.cfg, *name)
    machine.temp_flicker = (0, dropout)  # on odd ticks
    # The highest-reading row starts at the first reading past its side: the first one
    # unless it is too cold, when both sides are seen a reading later.
    late = (reading if machine.k % 2 == 0 else dropout) == -60.0
    trip(machine, name, reading, row.debounce_s + late * TICK_S)
    assert [(e.name, e.index) for e in machine.act.events if e.action == "raised"] == [
        ("TEMP_SENSOR_FAULT", 0)]


@pytest.mark.parametrize(("chem_name", "name"), LATCH_CASES)
def test_a_tripped_fault_stays_latched_until_a_clear_finds_its_reading_past_release(
        chem_name: str, name: RowName) -> None:
    machine = running(chem_name, READING_ROWS[name][1])
    # Recovery off: a clear with a cell below the under-voltage release would otherwise
    # start a recovery charge, its way out by design (the last test but one).
    assert machine._write([(next(p.id for p in machine.params
                                 if p.name == "limits.recovery_charge_a"), 0.0)])
    row = fault_row(machine.fw.cfg, *name)
    trip(machine, name, just_past(row, row.threshold), row.debounce_s)
    wait_s = 2.0 * row.release_s + 1.0  # a row that releases by itself would have by then
    # Between release and threshold: no longer tripping, not yet safe.
    set_reading(machine, name, 0.5 * (row.threshold + row.release))
    run_for(machine, wait_s)
    assert machine.act.state == "FAULT"
    assert machine._request("clear-faults") is not None  # refused, and why
    run_for(machine, 1.0)
    assert machine.act.state == "FAULT" and machine.act.contactors == OPEN
    # Past release: safe, yet latched until a clear.
    set_reading(machine, name, healthy_reading(machine, name))
    run_for(machine, wait_s)
    assert machine.act.state == "FAULT" and machine.act.contactors == OPEN
    assert machine._request("clear-faults") is None
    run_until(machine, lambda act: act.state == "RUN")  # and the pack runs again


@pytest.mark.parametrize(("chem_name", "name"), ROW_CASES)
def test_a_fault_row_a_host_retunes_in_run_trips_on_its_new_numbers(
        chem_name: str, name: RowName) -> None:
    """Threshold moved halfway to the nearest of its release and the fault's lower levels'
    thresholds, debounce halved, written by parameter id as a host writes them: a reading
    past the new threshold but short of the old one trips on the new debounce."""
    machine = running(chem_name, READING_ROWS[name][1])
    cfg = machine.fw.cfg
    row = fault_row(cfg, *name)
    inner = [r.threshold for r in cfg.protection
             if (r.fault, r.quantity) == name and r is not row] + [row.release]
    threshold = 0.5 * (row.threshold + min(inner, key=lambda x: abs(x - row.threshold)))
    base = PROTECTION_BASE + IDS_PER_ROW * cfg.protection.index(row)  # its threshold's id
    assert machine._write([(base, threshold), (base + 2, 0.5 * row.debounce_s)])
    run_for(machine, TICK_S)
    assert machine.act.state == "RUN"
    trip(machine, name, 0.5 * (threshold + row.threshold), 0.5 * row.debounce_s)


@pytest.mark.parametrize("chem_name", sorted(PRESETS))
def test_a_rig_silent_while_charging_opens_at_the_timeout_with_both_limits_zero(
        chem_name: str) -> None:
    """Steps without a measurement leave the limits alone (`Firmware._limits`) until the
    measurement timeout's FAULT, which must still take them to 0 (invariant 3)."""
    machine = running(chem_name, charging=True)
    run_until(machine, lambda act: act.charge_limit_a > 0.0)
    timeout_s = machine.fw.cfg.measurement_timeout_s
    last_measured_s = machine.now_s - TICK_S
    run_until(machine, lambda act: act.contactors == OPEN, measured=False)
    opened_s = machine.now_s - TICK_S
    assert opened_s - TICK_S - last_measured_s <= timeout_s < opened_s - last_measured_s
    act = machine.act
    assert act.state == "FAULT" and act.charge_limit_a == act.discharge_limit_a == 0.0


@pytest.mark.parametrize("chem_name", sorted(PRESETS))
def test_an_under_voltage_fault_cleared_below_its_release_recovers_by_a_charge_alone(
        chem_name: str) -> None:
    """The way out of CELL_UNDERVOLTAGE with a cell still below the release: a clear starts
    a recovery charge - RECOVERY, no discharge, a charge limit of at most
    `limits.recovery_charge_a` (invariant 3, every step) - that ends in RUN once the cell
    is back past the release."""
    name = ("CELL_UNDERVOLTAGE", "cell_v_min")
    machine = running(chem_name, charging=False)
    row = fault_row(machine.fw.cfg, *name)
    trip(machine, name, just_past(row, row.threshold), row.debounce_s)
    set_reading(machine, name, 0.5 * (row.threshold + row.release))
    machine.current_a = machine.fw.cfg.limits.recovery_charge_a  # a trickle charger
    assert machine._request("clear-faults") is None
    run_until(machine, lambda act: act.state == "RECOVERY")
    run_for(machine, 5.0)
    assert machine.act.state == "RECOVERY"
    set_reading(machine, name, healthy_reading(machine, name))
    run_until(machine, lambda act: act.state == "RUN")


@pytest.mark.parametrize("chem_name", sorted(PRESETS))
def test_a_write_just_past_a_safety_bound_is_refused_or_keeps_invariant_4(
        chem_name: str) -> None:
    """Every safety parameter written alone just either side of its default, and each FAULT
    row's threshold and release just either side of the edges of the chemistry's window,
    through `_write` (which checks invariant 4 on whatever is accepted, and that a refusal
    changes nothing): the bounds the random writes reach only now and then, every one of
    them, each from the defaults."""
    machine = FirmwareSafety()
    machine.build(chem_name=chem_name, n_series=4, n_temp=2, parallel=4, level=0.5)
    windows = absolute_windows(machine.chem, machine.n)
    answers = []
    for param in machine.safety_params:
        if param.kind != "float":
            continue
        default = machine._current_value(param)
        values = [default * (1 + 1e-6) + 1e-6, default * (1 - 1e-6) - 1e-6]
        path = param.path  # protection.FAULT.LEVEL[.quantity].field for a row's
        if path[0] == "protection" and path[-1] in ("threshold", "release") and (
                path[1] in windows):
            values += [x + d * (1e-6 * abs(x) + 1e-6) for x in windows[path[1]]
                       for d in (-1, 1)]
        for value in values:
            answers.append(machine._write([(param.id, value)]))
            if answers[-1]:
                machine.fw.reconfigure(machine.default_cfg)
                machine.overrides = {}
    assert any(answers) and not all(answers)  # both sides of the bounds were reached
