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
        act = self.fw.step(m, self.now_s)
        self.act = act
        if was_open and act.contactors != OPEN:  # a closing starts: no FAULT row may be due
            assert not self.fw.protection.fault_pending(), (act.state, act.contactors)
        well_formed = m is not None and m.cell_voltage_v.shape == (self.n,)
        if well_formed:
            self._track_onsets(m, pre_state, cfg)
        self._check_fault_means_open(act)
        if well_formed:
            self._check_limit_deadlines(act, cfg)
        self._check_limits(act)
        self.k += 1

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
        self.fw.request(name)

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
        self.fw.request("clear-faults")
        self.fw.request("run")
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

    def _write(self, changes: list[tuple[object, object]]) -> None:
        cfg_before, overrides_before = self.fw.cfg, copy.deepcopy(self.overrides)
        try:
            cfg, overrides = apply_changes(self.overrides, changes, self.chem, self.n,
                                           self.capacity_ah)
        except ParameterError:
            assert self.fw.cfg is cfg_before
            assert self.overrides == overrides_before
            return
        assert self.overrides == overrides_before  # the overrides in effect are not touched
        check_accepted(cfg, self.chem, self.n, self.capacity_ah)
        self.fw.reconfigure(cfg)  # anything apply_changes accepts, the firmware takes
        assert self.fw.cfg is cfg
        self.overrides = overrides

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
# changes the pack runs on for up to 12 s). 250 runs: with the examples drawn as `make test`
# draws them, debounces tripping late (under-voltage by 0.3 s; every row by 0.25 s) and a
# FAULT that leaves the charge limit up failed at runs 2, ~105 and ~150; 450 runs caught no
# more of those tried. The long search: benchmarks/fuzz_hypothesis.py. About 17 s.
FirmwareSafety.TestCase.settings = settings(
    max_examples=250, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestFirmwareSafety = pytest.mark.filterwarnings(
    # NaN and infinite readings are the point: numpy says so while the firmware copes.
    "ignore:invalid value encountered:RuntimeWarning")(FirmwareSafety.TestCase)
