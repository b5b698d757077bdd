"""The BMS firmware: protection, state machine and contactors, current limits, balancing
and the fault log, composed by one step function, `Firmware.step(measurement, now_s)`,
which never reads a clock, never sleeps and does no I/O.

Why and how: docs/internals.md, bms/core/firmware.py.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import numpy as np

from bms.core.balancing import Balancer, sense_wire_shift_v
from bms.core.counters import Counters
from bms.core.current_check import CurrentCheck
from bms.core.estimator import Estimator
from bms.core.fault_log import FaultLog
from bms.core.inverter_watch import InverterWatch
from bms.core.open_wire import OpenWireCheck
from bms.core.pack_v_drift import PackVoltageDrift
from bms.core.protection import TIME_EPS_S, Protection, RowKey, row_key
from bms.core.rest_drift import RestDrift
from bms.core.signals import (
    HOST_REQUESTS,
    OPEN,
    Actuation,
    Contactors,
    Estimate,
    FaultEvent,
    Measurement,
    State,
)
from bms.data.chemistry import Chemistry
from bms.data.config import (
    KEEPALIVE_LEVELS,
    TEMP_PLAUSIBLE_C,
    FirmwareConfig,
    ProtectionRow,
    default_config,
    inverter_rows,
)
from bms.data.faults import FAULT_CODES, Level, bitmap
from bms.data.quantities import QUANTITIES, QUANTITY_BY_NAME, QUANTITY_INDEX, Offender

# The state machine as a table: the states each state may move on to. Any state goes to
# FAULT the step a FAULT-level fault is active (not listed). A move not listed here is a
# firmware bug: `_enter` raises, and the step's guard turns it into INTERNAL_ERROR.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.INIT: frozenset({State.STANDBY}),
    State.STANDBY: frozenset({State.PRECHARGE, State.STORAGE}),
    State.PRECHARGE: frozenset({State.RUN, State.RECOVERY, State.STANDBY}),
    State.RUN: frozenset({State.STANDBY}),
    # Once every fault is cleared, or only under-voltage stands and a recovery charge starts.
    State.FAULT: frozenset({State.STANDBY}),
    # Once the pack passes its self-check, or its cells are below the release but
    # plausible and a recovery charge starts.
    State.STORAGE: frozenset({State.STANDBY}),
    State.SERVICE: frozenset(),
    State.RECOVERY: frozenset({State.RUN, State.STANDBY}),  # cells back; or not asked to run
}

# Faults of the hardware or of the firmware itself: clear-faults cannot clear them, only a
# service action (`service-reset`), which the fault log records.
HARDWARE_FAULTS = frozenset({"CONTACTOR_WELDED", "PRECHARGE_FAILED", "INTERNAL_ERROR"})
SERVICE_NOTE = "cleared by a service action (service-reset)"
RECOVERY_NOTE = ("recovery charge: charge at limits.recovery_charge_a at most, no discharge, "
                 "until every cell is back above the under-voltage release")
# A timeout before the first measurement ever: nothing was decided blind and the contactors
# never closed, so it clears itself when measurements begin.
BOOT_TIMEOUT_NOTE = "no measurement since start"
BOOT_TIMEOUT_CLEARED = "the first measurement arrived"

# A reading that has not changed while the pack's mean reading moved this much should have:
# several converter steps, well above the mean's noise.
STUCK_PACK_MOVE_V = 0.005

NEGATIVE = Contactors(negative=True)
PRECHARGING = Contactors(negative=True, precharge=True)
CLOSING = Contactors(negative=True, precharge=True, positive=True)
CLOSED = Contactors(negative=True, positive=True)
TEMP_TAPER_C = 5.0  # limits fall to 0 over this last stretch before a temperature stop
# Empty: the voltage leaves the discharge limit less than EMPTY_LIMIT_SHARE of its most (a
# load that follows the limit never takes it to 0 exactly); or less than EMPTY_REST_SHARE
# with no current to speak of (under EMPTY_LIMIT_SHARE of the most), as when an inverter
# stopped at the step its bus carries (0.1 A on CAN: 2 % of a 1.5 Ah pack's 4.5 A).
EMPTY_LIMIT_SHARE = 0.01
EMPTY_REST_SHARE = 0.05
TAPER_RISE_SHARE_PER_S = 0.004  # within the discharge taper the limit climbs this at most
RAISED_AT_RESTART_NOTE = ("over its threshold when the firmware restarted (a reset or a "
                          "power cycle): raised, not debounced again")
STANDBY_OPEN_WAIT_S = 5.0  # a standby request waits this long for the current to stop
# The states with the pack on the bus through its main contactors: the only ones whose
# published limits may be above 0.
CONNECTED = frozenset({State.RUN, State.RECOVERY})
TEMP_HIGH_SIDE, TEMP_LOW_SIDE = 1, 2  # a temperature reading beyond the plausible window
TEMP_BOTH_SIDES = TEMP_HIGH_SIDE | TEMP_LOW_SIDE
BALANCING_STATES = frozenset({State.STANDBY, State.RUN})  # the states balancing may run in
# Suspended in STORAGE, where cells may be taken to 0 V, and during a recovery charge out of
# under-voltage: there their voltages say nothing of under-voltage, imbalance or sense wires.
LOW_CELL_SUSPENDED = {"CELL_UNDERVOLTAGE", "PACK_UNDERVOLTAGE", "CELL_IMBALANCE", "OPEN_WIRE"}
# The faults a recovery charge is the way out of.
UNDERVOLTAGE = frozenset({"CELL_UNDERVOLTAGE", "PACK_UNDERVOLTAGE"})
# While one of these is active the cell readings are in doubt: estimation counts charge
# only, and takes nothing from the voltages (a reading pulled high by an open sense wire
# would otherwise "prove" the cell full).
VOLTAGE_DOUBT = bitmap({"OPEN_WIRE", "VOLTAGE_SENSOR_FAULT"})


# A step's figures, from `_quantities`'s dict, in the order of QUANTITIES: one C call.
_IN_QUANTITY_ORDER = operator.itemgetter(*(quantity.name for quantity in QUANTITIES))
# The figures every step reads back (`_figure_values`) by their place: a dozen reads a step,
# each a method call and a dict look-up less than `_figure`'s.
CELL_V_MAX, CELL_V_MIN, PACK_V, TEMP_MAX, TEMP_MIN = (
    QUANTITY_INDEX[name] for name in ("cell_v_max", "cell_v_min", "pack_v",
                                      "discharge_temp_max", "discharge_temp_min"))


@dataclasses.dataclass(frozen=True)
class HandOver:
    """What one firmware passes to the next at a restart (a host's reset, a power cycle
    through the store) beyond the pack's state: what a host resetting the BMS must not be
    able to wipe. Ages are seconds before the hand-over."""

    # FAULT trips within the lockout window: a host resetting before each clear of a
    # standing short closed the pack onto it without end, never reaching lockout.
    trip_ages_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # A contactor closed, or an opening's weld check under way: the next firmware checks
    # for a weld before it closes anything (a welded pack precharged onto its live bus).
    weld_check_due: bool = False
    # FAULT rows over their threshold, not yet raised: raised by the next firmware (resets
    # every few seconds restarted every debounce: a cell taken past its absolute maximum).
    debouncing_rows: tuple[RowKey, ...] = ()
    # A recovery charge under way (None: none): resumed, its timeout counting on (a reset
    # let the pack into RUN at full current with its cells below the release).
    recovery_age_s: float | None = None
    # Precharge attempts of the sequence under way, the one in progress counted: the next
    # sequence counts on from them (resets renewed the retries: 24 precharges, no fault).
    precharge_attempts: int = 0


def _open_wire_spread_v(cfg: FirmwareConfig) -> float:
    """Without the open-wire test: an open wire moves two cells apart by twice its score, so
    a smaller spread rules it out without looking closer."""
    return 2.0 * min((r.threshold for r in cfg.protection if r.quantity == "open_wire_v"),
                     default=np.inf)


def voltage_window_v(cfg: FirmwareConfig, charge_v: float) -> tuple[float, float]:
    """(floor, ceiling): the cell voltages the limits stop at, inside the first voltage row
    each direction meets (its WARNING) by the configured margin; the ceiling never above
    the charge voltage."""
    under = [r.threshold for r in cfg.protection if r.quantity == "cell_v_min" and not r.above
             and r.fault == "CELL_UNDERVOLTAGE"]
    over = [r.threshold for r in cfg.protection if r.quantity == "cell_v_max" and r.above
            and r.fault == "CELL_OVERVOLTAGE"]
    lc = cfg.limits
    floor = max(under, default=0.0) + lc.discharge_stop_margin_v
    ceiling = min(charge_v, min(over, default=np.inf) - lc.charge_stop_margin_v)
    return floor, ceiling


def temperature_window_c(cfg: FirmwareConfig, chem: Chemistry
                         ) -> tuple[float, float, float, float]:
    """(charge cold, charge hot, discharge cold, discharge hot): the temperatures the current
    limits reach 0 at, the first temperature row each direction meets (its WARNING), so
    that a charger or a load that obeys the limits never takes a temperature row past its
    WARNING; the chemistry's limits where no row is left."""
    lim = chem.limits

    def first(fault: str, above: bool, default: float) -> float:
        ts = [r.threshold for r in cfg.protection if r.fault == fault and r.above == above]
        return (min if above else max)(ts, default=default)

    return (first("CHARGE_UNDERTEMP", False, lim.charge_temp_min_c),
            first("CHARGE_OVERTEMP", True, lim.charge_temp_max_c),
            first("DISCHARGE_UNDERTEMP", False, lim.discharge_temp_min_c),
            first("DISCHARGE_OVERTEMP", True, lim.discharge_temp_max_c))


def _ramp(x: float) -> float:
    """x clipped to [0, 1]: the share of a limit left as a quantity nears its threshold.
    Comparisons rather than min(max()), called eight times a step: the same result, a NaN
    and a -0.0 included."""
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _rounded(x: float, digits: int) -> float | None:
    """`x` rounded for a log entry; None when it is not a number (NaN, infinite)."""
    return round(x, digits) if math.isfinite(x) else None


def _readable(a: np.ndarray, fill: float) -> np.ndarray:
    """`a` with its unreadable (non-finite) readings replaced by `fill`: they never win."""
    return np.where(np.isfinite(a), a, fill)


def _magnitude(x: float) -> float:
    """|x|; infinite when `x` is unreadable (NaN): beyond every plausibility threshold."""
    return math.inf if math.isnan(x) else abs(x)


def _with_usable_current(m: Measurement) -> Measurement:
    """`m` for the parts of the step that need a current: an unreadable one (NaN, infinite)
    as none flowing. Its sensor row (`current_reading_a`, FAULT, at once) opens the pack."""
    return m if math.isfinite(m.current_a) else dataclasses.replace(m, current_a=0.0)


def _first_unreadable(a: np.ndarray, otherwise: int) -> int:
    """The first unreadable (non-finite) reading of `a`, else `otherwise`."""
    bad = ~np.isfinite(a)
    return int(np.argmax(bad)) if bad.any() else otherwise


class Firmware:
    def __init__(self, chemistry: Chemistry, n_series: int, pack_capacity_ah: float,
                 config: FirmwareConfig | None = None,
                 stored_soc: float | np.ndarray | None = None, autostart: bool = True):
        """`stored_soc` (fraction, pack or per cell) is the estimate kept over a power-down;
        without it, estimation starts from the rest voltage. `autostart`: `run` is requested
        at boot (a pack that closes on power-up, and the headless harnesses, which play the
        host); without it the pack waits in STANDBY for a host's `run`."""
        self.chem = chemistry
        self.n_series = n_series
        self.cfg = config or default_config(chemistry, n_series, pack_capacity_ah)
        # The configurable table, then the inverter keep-alive rows (`_enable_inverter_row`).
        self.protection = Protection(self.cfg.protection + inverter_rows(self.cfg.can))
        self.inverter_watch = InverterWatch()  # fed by a field link (`bms.links.can`)
        self._inverter_level: str | None = ""  # the INVERTER_TIMEOUT row enabled; "": unset
        self.balancer = Balancer(self.cfg.balancing, n_series)
        self.log = FaultLog(self.cfg.fault_log_size)
        self.rest_drift = RestDrift(self.cfg.rest_current_a)
        thr = chemistry.thresholds
        self.estimator = Estimator(
            chemistry, n_series, pack_capacity_ah, self.cfg.estimation, self.cfg.rest_current_a,
            thr.charge_v, thr.undervoltage_v, self.cfg.balancing.bleed_resistor_ohm,
            stored_soc)
        self.estimate: Estimate | None = None
        # Judged on the estimator's model of the pack (`Estimator.pack_model`); its noise is
        # set from the configuration (`_derive_from`).
        self.current_check = CurrentCheck(min_step_a=0.1 * pack_capacity_ah, pack_noise_v=0.0)
        self._bleed_read: np.ndarray | None = None  # the bleed the last reading was taken under
        self.state = State.INIT
        self.autostart = autostart  # a restart (a host's Reset) starts the same way
        self.requested = "run" if autostart else "standby"
        self.clear_requested = False
        self.service_requested = False
        # FAULTs that tripped lockout_trips times within lockout_window_s: the contactors stay
        # open until a service action; the times each FAULT tripped, newest last.
        self.locked_out: set[str] = set()
        self._trips_s: dict[str, list[float]] = {}
        # What a restart handed over (`take_over`), put on this firmware's clock at its
        # first step; the precharge attempts are counted on by the next sequence.
        self._handed = HandOver()
        self._precharges_before = 0
        self.soc = 0.0
        self.last_s: float | None = None
        self.first_step_s = 0.0  # a silence from start times out from here
        self.last_measurement_s: float | None = None
        self._boot_timeout = False  # MEASUREMENT_TIMEOUT raised before any measurement
        self.last: Measurement | None = None
        self.contactors = OPEN
        self.phase_since_s = 0.0
        self.precharge_attempt = 0
        self.opened_at_s: float | None = None  # when the main contactors were last opened
        self.charge_limit_a = 0.0
        self.discharge_limit_a = 0.0
        # Emptied: the discharge limit reached 0 at the floor; the charge taken since, A s
        # (None: not held; `_limits`).
        self.empty_charge_as: float | None = None
        self.capacity_as = pack_capacity_ah * 3600.0
        self.no_balancing = np.zeros(n_series, dtype=bool)
        self._mask = self.no_balancing
        self._bleeding = False
        self.open_wire = OpenWireCheck(n_series)
        self.pack_v_drift = PackVoltageDrift(n_series)
        self._last_v: np.ndarray | None = None  # last cell readings, to spot a stuck one
        self._last_v_s = 0.0  # when they were read
        self._stuck_s = np.zeros(n_series)  # how long each has repeated while the pack moved
        self._none_stuck = True  # every one of `_stuck_s` is 0.0 (see `_count_repeats`)
        self._change_means_v = (0.0, 0.0)  # bounds on `_mean_at_change_v` (`_may_count`)
        self._mean_at_change_v = np.zeros(n_series)  # the mean reading when each last changed
        self._temp_held_c = np.zeros(0)  # each sensor's last plausible reading (NaN: none)
        self._cells_unreadable = False  # a cell reading this step is NaN or infinite
        self._temp_key: tuple | None = None  # the readings `_temp_figures` were worked from
        # Each sensor's sides of the plausible window read since its last plausible reading.
        self._temp_sides = np.zeros(0, dtype=int)
        self._temp_figures: tuple[tuple[float, float], float, float] | None = None
        self._derive_from(self.cfg)
        self.counters = Counters()
        self.event_faults: set[str] = set()  # latched faults raised outside the table
        # The cell or sensor each raised row named, by row and level, for its clear.
        self._raised_offender: dict[tuple[str, str, bool, str], int | None] = {}
        self._low_cell_suspended = False
        # A recovery charge is under way (or starting: STANDBY, PRECHARGE): since when, and
        # since when the pack has been discharging in it (None: not).
        self.recovering_since_s: float | None = None
        self._recovery_discharge_since_s: float | None = None
        self.quantities = np.zeros(len(QUANTITIES))
        self._figure_values: list[float] = self.quantities.tolist()  # see `_quantities`
        self._soc_with_bled_of: Estimate | None = None  # see `_soc_with_bled`
        self._soc_with_bled_v = np.zeros(n_series)
        self._resistance_of: Estimate | None = None  # see `_cell_resistance`
        self._resistance = (np.zeros(n_series), 0.0, 0.0)
        lim = chemistry.limits
        self._charge_temp_neutral_c = 0.5 * (lim.charge_temp_min_c + lim.charge_temp_max_c)

    # --- host interface ------------------------------------------------------------

    def request(self, name: str) -> str | None:
        """Host request: `run`, `standby`, `storage`, `clear-faults` (every fault whose
        cause is gone, but no hardware fault and nothing locked out) or `service-reset` (a
        service action: clears those too). Taken (None) only when the firmware will act on
        it; else nothing changes, and the answer is why not and what to do (`refusal`)."""
        if name not in HOST_REQUESTS:
            raise ValueError(f"unknown request {name!r}; allowed: {', '.join(HOST_REQUESTS)}")
        why = self.refusal(name)
        if why is not None:
            return why
        if name == "clear-faults":
            self.clear_requested = True
        elif name == "service-reset":
            self.service_requested = True
        else:
            self.requested = name
        return None

    def refusal(self, name: str) -> str | None:
        """Why the firmware cannot act on host request `name` now, as of its last step
        (None: it can). `standby` always can: opening is always safe. A clear must end the
        FAULT, or start a recovery charge out of it. `run` and `storage` wait while a FAULT
        is latched and no clear is on its way (a timeout from start ends by itself: it
        counts as one), except a `run` that a recovery charge out of under-voltage needs.
        Every way in (protocol, MQTT, scenarios) asks here."""
        if name in ("clear-faults", "service-reset"):
            standing = self._standing_after_clear(service=name == "service-reset")
            return (f"{name} would leave the pack in FAULT, so nothing was cleared: "
                    + "; ".join(standing)) if standing else None
        latched = sorted({f for f, _, _ in self.protection.latched_rows()} | self.event_faults)
        ends_itself = self._boot_timeout and latched == ["MEASUREMENT_TIMEOUT"]
        if (name == "standby" or not self.fault_active or self.clear_requested
                or self.service_requested or ends_itself
                or name == "run" and self._recovery_way_out(False)):
            return None
        standing = self._standing_after_clear(service=False)
        return (f"{name} waits while a FAULT is latched ({', '.join(latched)}): "
                + ("; ".join(standing) if standing else "send clear-faults first"))

    def _standing_after_clear(self, service: bool) -> list[str]:
        """What a clear (`service`: a service action) would leave latched, each with what
        to do about it; [] when it ends the FAULT or starts a recovery charge."""
        if self.locked_out and not service:  # then a clear clears nothing at all
            return [f"{name} is locked out ({self.cfg.lockout_trips} trips within "
                    f"{self.cfg.lockout_window_s:g} s): only a service action (service-reset) "
                    "clears it" for name in sorted(self.locked_out)]
        standing = [self._event_standing(name, service) for name in sorted(self.event_faults)]
        standing = [text for text in standing if text]
        held = self.protection.held_rows()
        if not standing and self._recovery_way_out(service):
            if self.requested == "run":
                return []  # the clear starts a recovery charge
            return [f"{self.protection.rows[i].fault}: {self._held_text(i)}; the way out is a "
                    "recovery charge, which closes the contactors: send run, then clear-faults"
                    for i in held]
        return standing + [f"{self.protection.rows[i].fault}: {self._held_text(i)}; clear "
                           "again once it is" for i in held]

    def _recovery_way_out(self, service: bool) -> bool:
        """After a clear only under-voltage rows (and those the low cells make meaningless)
        would stand, and a recovery charge is configured: it is the way out of the FAULT."""
        held = {self.protection.rows[i].fault for i in self.protection.held_rows()}
        events = [name for name in self.event_faults if self._event_standing(name, service)]
        return bool(held & UNDERVOLTAGE and held <= LOW_CELL_SUSPENDED and not events
                    and (service or not self.locked_out) and self._recovery_on)

    def _held_text(self, row: int) -> str:
        """A held row's reading against its release, in words."""
        r = self.protection.rows[row]
        unit = QUANTITY_BY_NAME[r.quantity].unit
        return (f"{r.quantity} was {self.protection.last_value(row):.4g} {unit}, not yet "
                f"{'below' if r.above else 'above'} its release {r.release:g} {unit}")

    def _event_standing(self, name: str, service: bool) -> str:
        """Why a latched fault raised outside the table would stand after a clear; ""
        when it would clear."""
        if name in HARDWARE_FAULTS and not service:
            return (f"{name} is a hardware fault: only a service action (service-reset) "
                    "clears it, once the hardware is seen to")
        if name == "MEASUREMENT_TIMEOUT" and self._boot_timeout:
            return ("MEASUREMENT_TIMEOUT: no measurement since start; it clears itself with "
                    "the first one")
        if name == "MEASUREMENT_TIMEOUT":
            last_s = self.last_measurement_s
            if last_s is None or self.last_s - last_s > self.cfg.measurement_timeout_s:
                return ("MEASUREMENT_TIMEOUT: no measurement "
                        + ("since start" if last_s is None else
                           f"for {self.last_s - last_s:.3g} s")
                        + "; clear again once measurements arrive")
        return ""

    def reconfigure(self, cfg: FirmwareConfig) -> None:
        """Replaces the configuration at run time and keeps every state: raised faults and
        debounces under way, the estimate, the balancing latches, the fault log (shrunk to
        its newest entries), the state machine. The next step runs on the new numbers;
        published limits above a lowered maximum fall in that step. `cfg` must be for this
        pack and validated (`bms.data.parameters.apply_changes`); one with other protection rows
        or a balancing configuration the balancer refuses changes nothing."""
        Balancer.check(cfg.balancing, self.n_series)  # both refusals before any change
        self.protection.retune(cfg.protection + inverter_rows(cfg.can))
        self.balancer.retune(cfg.balancing)
        self.log.resize(cfg.fault_log_size)
        self.rest_drift.rest_current_a = cfg.rest_current_a
        self.estimator.reconfigure(cfg.estimation, cfg.rest_current_a,
                                   cfg.balancing.bleed_resistor_ohm)
        self._derive_from(cfg)
        self.cfg = cfg

    def _derive_from(self, cfg: FirmwareConfig) -> None:
        """The figures the step reads from a configuration, worked out once per one."""
        self._open_wire_spread_v = _open_wire_spread_v(cfg)
        self.current_check.tune(cfg.estimation.voltage_noise_v * math.sqrt(self.n_series))
        self.floor_v, self.ceiling_v = voltage_window_v(cfg, self.chem.thresholds.charge_v)
        self.temp_window_c = temperature_window_c(cfg, self.chem)
        # While one of these is over its threshold or raised, the readings are in doubt and
        # the pack sensor's ratio to the cells is not learnt (`_quantities`).
        self._voltage_sensor_rows = tuple(i for i, r in enumerate(cfg.protection)
                                          if r.fault == "VOLTAGE_SENSOR_FAULT")
        # The rows on the charge temperatures, by quantity (see `_quantities`): a few
        # indices, looked up one by one faster than an array mask is applied.
        self._charge_temp_max_rows, self._charge_temp_min_rows = (
            tuple(i for i, r in enumerate(self.protection.rows) if r.quantity == quantity)
            for quantity in ("charge_temp_max", "charge_temp_min"))
        # Leaving storage and ending a recovery charge need each under-voltage FAULT row's
        # quantity past its release; the cell row is the one a failed recovery latches again.
        uv_rows = [r for r in cfg.protection if r.fault in UNDERVOLTAGE and r.level == Level.FAULT]
        self._recovery_release = [(r.quantity, r.release) for r in uv_rows]
        self._recovery_latch = [r for r in uv_rows if r.quantity == "cell_v_min"]
        self._recovery_discharge_s = min((r.debounce_s for r in self._recovery_latch),
                                         default=0.0) - TIME_EPS_S

    @property
    def _clearing(self) -> bool:
        """This step answers a clear request: a service action, or clear-faults while
        nothing is locked out."""
        return self.service_requested or (self.clear_requested and not self.locked_out)

    @property
    def fault_active(self) -> bool:
        return bool(self.event_faults) or self.protection.any_fault

    # --- the step ------------------------------------------------------------------

    def step(self, m: Measurement | None, now_s: float) -> Actuation:
        """One firmware cycle. Any exception inside ends in INTERNAL_ERROR, contactors open."""
        try:
            return self._step(m, now_s)
        except Exception as exc:  # noqa: BLE001 - fail safe whatever went wrong
            # Safe state first, bookkeeping after: nothing below may stop the opening.
            if self.contactors.main_closed:
                self.opened_at_s = now_s
            self.contactors = OPEN
            self.state = State.FAULT
            events: list[FaultEvent] = []
            try:
                self._raise_event_fault(events, now_s, "INTERNAL_ERROR", None, None,
                                        note=f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the log is secondary to opening
                self.event_faults.add("INTERNAL_ERROR")
            return self._actuation(events, self.no_balancing)

    def _step(self, m: Measurement | None, now_s: float) -> Actuation:
        if self.last_s is not None:
            self.counters.count_time(self.state, now_s - self.last_s)
        else:
            self.first_step_s = now_s
        first, self.last_s = self.last_s is None, now_s
        events: list[FaultEvent] = []
        if first:
            self._take_over(events, now_s)
        if m is None:
            never = self.last_measurement_s is None
            silent_s = now_s - (self.first_step_s if never else self.last_measurement_s)
            if (silent_s > self.cfg.measurement_timeout_s
                    and "MEASUREMENT_TIMEOUT" not in self.event_faults):
                self._boot_timeout = never
                self._raise_event_fault(events, now_s, "MEASUREMENT_TIMEOUT", None, silent_s,
                                        BOOT_TIMEOUT_NOTE if never else "")
                self._open(now_s)
                self.state = State.FAULT
            return self._actuation(events, self.no_balancing)
        # The charge since the last measurement, not the last step: steps without one
        # (a silent rig) carry no current reading of their own.
        since_measurement_s = (0.0 if self.last_measurement_s is None
                               else now_s - self.last_measurement_s)
        self.last_measurement_s = now_s
        self.last = m  # as read: a log entry names what was unreadable
        read_m, m = m, _with_usable_current(m)
        if self._boot_timeout:
            self._boot_timeout = False
            self._clear_event_fault(events, now_s, "MEASUREMENT_TIMEOUT", BOOT_TIMEOUT_CLEARED)

        q = self._quantities(m, read_m)
        service = self.service_requested
        if service:
            self.locked_out.clear()
            self.pack_v_drift.restart()  # a sensor may have been replaced: learn afresh
            self._trips_s.clear()
            self._precharges_before = 0  # the resistor was seen to: its retries start again
        clear = self._clearing
        note = SERVICE_NOTE if service else ""
        self._enable_inverter_row(events, now_s)
        for change in self.protection.evaluate(q, now_s, clear):
            row = self.protection.rows[change.row]
            self._log(events, FaultEvent(now_s, row.fault, FAULT_CODES[row.fault], row.level,
                                         change.action,
                                         self._row_offender(row, change.action, m),
                                         self.protection.last_value(change.row)),
                      note if change.action == "cleared" else "")
        if clear:  # with a measurement in hand, a timeout is over too
            for name in sorted(self.event_faults):
                if service or name not in HARDWARE_FAULTS:
                    self._clear_event_fault(events, now_s, name, note)
            if self._only_undervoltage_stands():
                self._start_recovery(events, now_s)
        self._count(m, since_measurement_s)
        self._estimate(m, since_measurement_s, now_s)
        self._sequence(m, now_s, events)
        self._check_weld(read_m, now_s, events)
        self._limits(m, since_measurement_s)  # steps without a measurement leave them alone
        self._suspend_low_cell_rows(events, now_s)
        mask = self.balancer.step(
            m.cell_voltage_v, self.estimate.cell_soc, self._figure_values[TEMP_MAX],
            m.current_a,
            self.cfg.rest_current_a,
            # An alarm stops balancing: bleeding healthy cells toward one with an internal
            # short, or during a sensor alarm, only makes matters worse.
            allowed=(self.state in BALANCING_STATES and not self.fault_active
                     and not self.protection.any_alarm),
            now_s=now_s)
        if mask is not self._mask:
            self._mask = mask
            self._bleeding = bool(mask.any())
        self.clear_requested = self.service_requested = False
        # The open-wire test runs in the coming interval: only one without a bleed.
        wire_test = self.open_wire.request(now_s, not self._bleeding, self.cfg.open_wire)
        return self._actuation(events, mask, wire_test)

    # --- pieces ----------------------------------------------------------------------

    def _quantities(self, m: Measurement, read_m: Measurement) -> np.ndarray:
        """The numbers the protection table watches (`bms.data.quantities`), in its order;
        `read_m` is `m` as read, before `_with_usable_current`."""
        v = m.cell_voltage_v
        i_a = m.current_a
        if v.shape != (self.n_series,):
            raise ValueError(f"measurement has {v.shape} cell voltages for {self.n_series} "
                             "cells")
        # A bleed's current drops the bleeding cells' voltages through their resistance:
        # two readings under different bleeds do not show what the pack current did.
        bleed = m.balancing if m.balancing is not None else self._mask
        # `_bleeding` is the firmware's own mask's any(), kept as the mask changes.
        bleeding = self._bleeding if m.balancing is None else bool(bleed.any())
        # The voltage rows judge the cells, not the sense wires: a cell whose neighbours
        # bleed reads high by their drop in the shared wires (25 mV on a full na-nvpf
        # cell, past its over-voltage WARNING), and that drop is known.
        judged_v = v - sense_wire_shift_v(
            np.where(bleed & np.isfinite(v), v, 0.0) / self.cfg.balancing.bleed_resistor_ohm,
            self.cfg.balancing.sense_wire_ohm) if bleeding else v
        v_sum = float(v.sum())  # the pack voltage, and the mean reading: summed once
        v_max, v_min = float(judged_v.max()), float(judged_v.min())
        # The judged readings are the readings less a finite shift: as readable as they are.
        self._cells_unreadable = unreadable = not (math.isfinite(v_max) and math.isfinite(v_min))
        if unreadable:  # a NaN or infinite cell reading: a sensor fault, never a value
            finite = judged_v[np.isfinite(judged_v)]
            v_max, v_min = (float(finite.max()), float(finite.min())) if finite.size else (
                0.0, 0.0)
        t_reading, t_max, t_min = self._temperatures(m.temperature_c)
        neutral = self._charge_temp_neutral_c
        # The charge temperatures are watched while charging; and a raised charge-temperature
        # row keeps seeing the real one until it is back past its release: were it shown
        # the neutral one as the charger pauses, it would clear, and trip again as the
        # charger resumes.
        charging = i_a > self.cfg.rest_current_a
        raised = self.protection.any_row_active
        charge_t = (t_max if charging or raised(self._charge_temp_max_rows) else neutral,
                    t_min if charging or raised(self._charge_temp_min_rows) else neutral)
        idle_a = 0.0 if m.contactors.main_closed or m.contactors.precharge else abs(i_a)
        # From the AFE's open-wire test where the source runs it, else (fallback) from the
        # readings. Bleeding shifts the readings of a cell and its neighbours in opposite
        # directions, like an open wire: only readings and tests taken with no cell
        # bleeding count, and between them the last figure holds.
        clean = not self._bleeding and (m.balancing is None or not m.balancing.any())
        open_wire_v = self.open_wire.update(v, m.open_wire_test_v, clean,
                                            self._open_wire_spread_v, self.cfg.open_wire)
        longest_s = self._count_repeats(v, v_sum / v.size)  # the mean as v.mean() gives it
        stuck_s = math.inf if unreadable else longest_s
        # The SoC estimates of the step before: this step's come after protection. A
        # suspected internal short latches: the fall is held until a clear request.
        if self._clearing:
            self.rest_drift.clear()
        e = self.estimate
        rest_soc_drop = 0.0 if e is None else self.rest_drift.update(
            self._soc_with_bled(e), i_a, e.reset_epoch, self.last_s)
        pack_v = v_sum if not unreadable else v_max * self.n_series
        # A mask (bool) is equal to itself: the usual case, the firmware's own mask again,
        # needs no comparison.
        comparable = self._bleed_read is not None and (
            bleed is self._bleed_read or np.array_equal(bleed, self._bleed_read))
        self._bleed_read = bleed
        mismatch_a = self.current_check.update(
            i_a, math.nan if unreadable or not math.isfinite(read_m.current_a) else pack_v,
            self.last_s, self.estimator.pack_model(), comparable)
        sensed_v = m.pack_voltage_v
        # An unreadable pack sensor disagrees with any sum of the cells.
        pack_mismatch_v = (0.0 if sensed_v is None or (unreadable and math.isfinite(sensed_v))
                           else _magnitude(sensed_v - pack_v))
        # Without a bleed the voltage rows judge the readings themselves: their sum is known.
        judged_sum_v = math.nan if unreadable else (
            v_sum if judged_v is v else float(judged_v.sum()))
        # Tightly, against the ratio learnt while the voltage sensor rows were quiet (as of
        # the step before): a fault is never learnt away.
        pack_drift_v = self.pack_v_drift.update(
            sensed_v, judged_sum_v, self.last_s,
            hold=self.protection.over_or_active(self._voltage_sensor_rows))
        figures = {
            "cell_v_max": v_max, "cell_v_min": v_min, "pack_v": pack_v,
            "charge_temp_max": charge_t[0], "charge_temp_min": charge_t[1],
            "discharge_temp_max": t_max, "discharge_temp_min": t_min,
            "charge_a": i_a, "discharge_a": -i_a,
            "cell_soc_spread": 0.0 if e is None else e.soc_spread,
            "temp_spread": t_max - t_min, "open_wire_v": open_wire_v,
            "temp_reading_max": t_reading[0], "temp_reading_min": t_reading[1],
            "idle_current_a": idle_a, "rest_soc_drop": rest_soc_drop,
            "reading_stuck_s": stuck_s, "current_step_mismatch_a": mismatch_a,
            "pack_v_mismatch_v": pack_mismatch_v,
            "pack_v_drift_v": pack_drift_v,
            "current_reading_a": _magnitude(read_m.current_a),
            "bus_v_reading_v": _magnitude(m.bus_voltage_v),
            "inverter_silence_s": self.inverter_watch.silence_s(self.last_s),
        }
        q = self.quantities
        q[:] = _IN_QUANTITY_ORDER(figures)
        # The figures as Python floats, for `_figure`: a dozen reads a step, each cheaper
        # from a list than from the array.
        self._figure_values = q.tolist()
        return q

    def _temperatures(self, t: np.ndarray) -> tuple[tuple[float, float], float, float]:
        """(the highest and lowest raw reading, the highest and lowest trusted temperature).
        The temperatures are sampled far less often than the cells are (once a second in the
        simulated pack, every tick in the cell readings): the figures of a sample are kept
        and reused while the readings repeat to the bit, which gives them again exactly."""
        key = (t.dtype, t.shape, t.tobytes())  # the dtype itself: `.str` builds a string
        if key == self._temp_key:
            return self._temp_figures
        lo, hi = TEMP_PLAUSIBLE_C
        # A reading on the window's edge is plausible (the TEMP_SENSOR_FAULT rows trip only
        # beyond it): were it left out here too, a sensor at exactly 125 °C would trip nothing.
        plausible = (t >= lo) & (t <= hi)
        if self._temp_held_c.shape != t.shape:  # the first reading, or another sensor count
            self._temp_held_c = np.full(t.shape, np.nan)
            self._temp_sides = np.zeros(t.shape, dtype=int)
        # A sensor that has read beyond both sides (or unreadable and too cold) with no
        # plausible reading between is broken, not hot nor cold: each row alone would see
        # an excursion of one reading and restart its debounce at the next.
        side = np.where(np.isfinite(t) & (t < lo), TEMP_LOW_SIDE, TEMP_HIGH_SIDE)
        self._temp_sides = sides = np.where(plausible, 0, self._temp_sides | side)
        if (sides == TEMP_BOTH_SIDES).any():
            t = self._readable_temperatures(t)
        # An unreadable reading (NaN, infinite), or none at all, is no reading a working
        # sensor gives: it counts as the highest, one sensor fault (the lowest is then
        # among the readable ones).
        t_read = t[np.isfinite(t)]
        t_reading = (float(t.max()) if t.size and t_read.size == t.size else math.inf,
                     float(t_read.min()) if t_read.size else hi)
        neutral = self._charge_temp_neutral_c
        self._temp_held_c = held = np.where(plausible, t, self._temp_held_c)
        if lo <= t_reading[1] and t_reading[0] <= hi:
            t_max, t_min = t_reading
        else:
            # A faulty reading is not trusted: the sensor stands at its last plausible one
            # (a loose wire on a hot sensor that drops every other reading must not restart
            # the over-temperature debounce each time), and one that never gave any is left
            # to the others.
            known = held[~np.isnan(held)]
            t_max, t_min = (float(known.max()), float(known.min())) if known.size else (
                neutral, neutral)
        self._temp_key, self._temp_figures = key, (t_reading, t_max, t_min)
        return self._temp_figures

    def _readable_temperatures(self, t: np.ndarray) -> np.ndarray:
        """The readings, a sensor read beyond both sides of the plausible window since its
        last plausible reading as unreadable (NaN)."""
        return np.where(self._temp_sides == TEMP_BOTH_SIDES, np.nan, t)

    def _count_repeats(self, v: np.ndarray, mean_v: float) -> float:
        """How long each reading has repeated to the bit while the pack moved; returns the
        longest, s (infinite for an unreadable cell). At rest, or held at constant voltage,
        readings that do not move are right, and noise smaller than the converter's step
        leaves some readings unchanged for hours: time counts for a reading only once the
        pack's mean reading has moved `STUCK_PACK_MOVE_V` since it last changed, so a reading
        is stuck when it stands still while the pack does not."""
        if not math.isfinite(mean_v):  # an unreadable cell: the sensor rows deal with it
            self._last_v = None
            return math.inf
        if self._last_v is None or self._last_v.shape != v.shape:
            self._stuck_s = np.zeros(v.shape)
            self._mean_at_change_v = np.full(v.shape, mean_v)
            self._change_means_v = (mean_v, mean_v)
            self._none_stuck = True  # every count is exactly 0.0
        else:
            # In place, with `where=` masks rather than np.where: both arrays are the
            # firmware's own, and the masked forms skip a temporary and a scalar broadcast.
            changed = v != self._last_v
            np.copyto(self._mean_at_change_v, mean_v, where=changed)
            # Most steps no reading counts and none has: the counts stay 0.0, and the
            # passes that count, restart and find the longest would change nothing.
            # (`_may_count` first: it keeps its bounds every step.)
            if self._may_count(mean_v) or not self._none_stuck:
                should_move = np.abs(self._mean_at_change_v - mean_v) > STUCK_PACK_MOVE_V
                dt_s = self.last_s - self._last_v_s
                np.add(self._stuck_s, dt_s, out=self._stuck_s, where=should_move)
                np.copyto(self._stuck_s, 0.0, where=changed)  # a changed reading starts again
                self._none_stuck = not self._stuck_s.any()
        self._last_v, self._last_v_s = v, self.last_s
        return 0.0 if self._none_stuck else float(self._stuck_s.max())

    def _may_count(self, mean_v: float) -> bool:
        """Whether a reading's time may count this step: the mean has moved
        STUCK_PACK_MOVE_V from the lowest or the highest of the means at the readings' last
        changes. Exact: |x - mean| rounds in the order of x on either side of the mean, so
        no x between those two is further than both. They are bounds kept without a pass
        over the cells (this step's changes stored `mean_v`, so they only widen to it), made
        exact (two passes) only when they leave the answer open."""
        lo_v, hi_v = self._change_means_v
        lo_v, hi_v = min(lo_v, mean_v), max(hi_v, mean_v)
        if hi_v - mean_v > STUCK_PACK_MOVE_V or mean_v - lo_v > STUCK_PACK_MOVE_V:
            lo_v = float(self._mean_at_change_v.min())
            hi_v = float(self._mean_at_change_v.max())
        self._change_means_v = (lo_v, hi_v)
        return hi_v - mean_v > STUCK_PACK_MOVE_V or mean_v - lo_v > STUCK_PACK_MOVE_V

    def _figure(self, quantity: str) -> float:
        """This step's figure of one quantity."""
        return self._figure_values[QUANTITY_INDEX[quantity]]

    def _soc_with_bled(self, e: Estimate) -> np.ndarray:
        """Each cell's SoC with the charge bled since start added back (what `rest_drift`
        judges), worked out once per estimate: an estimate's arrays never change after it
        is published (`Actuation`), and a new one comes only with a filter run."""
        if e is not self._soc_with_bled_of:
            self._soc_with_bled_of = e
            self._soc_with_bled_v = e.cell_soc + e.cell_bled_soc
        return self._soc_with_bled_v

    def _row_offender(self, row: ProtectionRow, action: str, m: Measurement) -> int | None:
        """The cell or sensor a row's event names: at its raise, the one behind it; at its
        clear, the one named at the raise, so that a monitor pairs the two (the one behind
        the quantity then may be another). A row latched before a restart was raised by
        another firmware: its clear names the one behind it now."""
        key = (*row_key(row), row.level)
        if action == "cleared" and key in self._raised_offender:
            return self._raised_offender.pop(key)
        offender = self._offender(row.quantity, m)
        if action == "raised":
            self._raised_offender[key] = offender
        return offender

    def _offender(self, quantity: str, m: Measurement) -> int | None:
        """The cell or sensor (0-based) behind a quantity, located only when a row changes."""
        v, t = m.cell_voltage_v, m.temperature_c
        match QUANTITY_BY_NAME[quantity].offender:
            case Offender.HIGHEST_CELL:
                return int(np.argmax(_readable(v, -np.inf)))
            case Offender.LOWEST_CELL:
                return int(np.argmin(_readable(v, np.inf)))
            case Offender.CELL_OFF_THE_MEAN:
                return int(np.argmax(np.abs(v - v.mean())))
            case Offender.OPEN_WIRE_CELL:
                return self.open_wire.worst_cell(v)
            case Offender.STUCK_CELL:  # an unreadable cell is the stuck one
                return _first_unreadable(v, int(np.argmax(self._stuck_s)))
            case Offender.REST_SOC_OUTLIER if self.estimate is not None:
                soc = self.estimate.cell_rest_soc
                if soc is None or np.isnan(soc).all():
                    return None
                off = np.abs(soc - np.nanmedian(soc))
                return int(np.argmax(np.where(np.isnan(off), -1.0, off)))
            case Offender.SOC_DROP_CELL if self.estimate is not None:
                return self.rest_drift.worst_cell(self.estimate.cell_soc
                                                  + self.estimate.cell_bled_soc)
            case Offender.HOTTEST_SENSOR:
                return int(np.argmax(_readable(t, -np.inf)))
            case Offender.COLDEST_SENSOR:
                return int(np.argmin(_readable(t, np.inf)))
            case Offender.HOTTEST_READING if t.size:
                return _first_unreadable(self._readable_temperatures(t), int(np.argmax(t)))
        return None

    def _count(self, m: Measurement, dt_s: float) -> None:
        """Throughput always; voltage extremes only from readings not in doubt (an open
        sense wire's reading is not a cell's)."""
        c, figure = self.counters, self._figure_values
        c.count_charge(m.current_a, figure[PACK_V], dt_s)
        if self.protection.active_bitmap() & VOLTAGE_DOUBT:
            v_min, v_max = math.inf, -math.inf
        else:
            v_min, v_max = figure[CELL_V_MIN], figure[CELL_V_MAX]
        c.see(v_min, v_max, figure[TEMP_MIN], figure[TEMP_MAX], m.current_a)

    def _estimate(self, m: Measurement, dt_s: float, now_s: float) -> None:
        if m.balancing is None:
            bleeding = self._mask if self._bleeding else None
        else:
            bleeding = m.balancing if m.balancing.any() else None
        trusted = not self.protection.active_bitmap() & VOLTAGE_DOUBT
        self.estimate = self.estimator.step(m, dt_s, now_s, bleeding, trusted)
        self.soc = self.estimate.soc

    def _sequence(self, m: Measurement, now_s: float, events: list[FaultEvent]) -> None:
        """The state machine and the contactor order."""
        if self.fault_active:
            self.recovering_since_s = None  # a fault ends a recovery charge
            if self.state != State.FAULT:
                self._open(now_s)
                self.state = State.FAULT
            return
        state, req = self.state, self.requested
        if state in (State.INIT, State.FAULT):  # FAULT here means every fault has been cleared
            self._enter(State.STANDBY, now_s)
        elif state == State.STORAGE:
            if req != "storage" and self._plausible(m):
                if self._past_release():
                    self._enter(State.STANDBY, now_s)
                elif req == "run" and self._recovery_on:
                    self._start_recovery(events, now_s)
                    self._enter(State.STANDBY, now_s)
        elif state == State.STANDBY:
            if self.recovering_since_s is not None and req != "run":
                self.recovering_since_s = None  # the host no longer asks for the charge
            elif req == "run" and self.opened_at_s is None and not self.protection.fault_pending():
                self.precharge_attempt = 1 + self._precharges_before
                self._precharges_before = 0
                self.contactors = NEGATIVE
                self._enter(State.PRECHARGE, now_s)
            elif req == "storage":
                self._enter(State.STORAGE, now_s)
        elif state == State.PRECHARGE:
            self._precharge(m, now_s, events)
        elif state in CONNECTED and req != "run":
            if (abs(m.current_a) < self.cfg.rest_current_a
                    or now_s - self.phase_since_s >= STANDBY_OPEN_WAIT_S):
                self.recovering_since_s = None
                self._open(now_s)
                self._enter(State.STANDBY, now_s)
        elif state == State.RECOVERY:
            self._supervise_recovery(m, now_s, events)
        if self.state in CONNECTED and req == "run":
            self.phase_since_s = now_s  # restart the standby wait whenever run is held

    def _precharge(self, m: Measurement, now_s: float, events: list[FaultEvent]) -> None:
        cfg = self.cfg.precharge
        if self.requested != "run":
            self._open(now_s)
            self._enter(State.STANDBY, now_s)
            return
        elapsed_s = now_s - self.phase_since_s
        if self.contactors == OPEN:  # waiting to retry; as from STANDBY, not with a FAULT due
            if elapsed_s >= cfg.retry_wait_s and not self.protection.fault_pending():
                self.contactors = NEGATIVE
                self.phase_since_s = now_s
            return
        if self.contactors == NEGATIVE:
            self.contactors = PRECHARGING
            return
        if self.contactors == CLOSING:
            self.contactors = CLOSED
            self.counters.contactor_cycles += 1
            self._enter(State.RUN if self.recovering_since_s is None else State.RECOVERY, now_s)
            return
        pack_v = self._figure("pack_v")
        # Only a readable bus confirms it: an infinite reading (a failing sensor, its row
        # still debouncing) must not close the pack onto the bus.
        if (math.isfinite(m.bus_voltage_v) and m.bus_voltage_v >= cfg.done_fraction * pack_v
                and abs(m.current_a) < cfg.done_current_a):
            self.contactors = CLOSING
        elif elapsed_s >= cfg.timeout_s:
            self.contactors = OPEN
            self.phase_since_s = now_s
            if self.precharge_attempt > cfg.retries:
                self._raise_event_fault(events, now_s, "PRECHARGE_FAILED", None,
                                        m.bus_voltage_v)
                self.state = State.FAULT
            else:
                self.precharge_attempt += 1

    def _enable_inverter_row(self, events: list[FaultEvent], now_s: float) -> None:
        """Only the INVERTER_TIMEOUT row of the configured keep-alive action's level watches
        the inverter's silence (none for `off`); a row an action changed at run time turns
        off clears, reported like any clear."""
        level = KEEPALIVE_LEVELS.get(self.cfg.can.keepalive_action)
        if level == self._inverter_level:
            return
        self._inverter_level = level
        # The other levels' rows only: the configured one's, raised and latched before a
        # restart, stays raised (turned off and on at the first step, it was cleared).
        changes = self.protection.set_enabled({"INVERTER_TIMEOUT"}, False, set(Level) - {level})
        if level is not None:
            self.protection.set_enabled({"INVERTER_TIMEOUT"}, True, {level})
        for change in changes:
            row = self.protection.rows[change.row]
            self._log(events, FaultEvent(now_s, row.fault, FAULT_CODES[row.fault], row.level,
                                         change.action), "can.keepalive_action changed")

    def _suspend_low_cell_rows(self, events: list[FaultEvent], now_s: float) -> None:
        """The LOW_CELL_SUSPENDED rows are off exactly while the state is STORAGE (a
        sodium-ion pack may be taken to 0 V for shipping) or a recovery charge is under
        way, however either ends."""
        suspended = self.state == State.STORAGE or self.recovering_since_s is not None
        if suspended == self._low_cell_suspended:
            return
        self._low_cell_suspended = suspended
        note = RECOVERY_NOTE if self.recovering_since_s is not None else ""
        for change in self.protection.set_enabled(LOW_CELL_SUSPENDED, not suspended):
            row = self.protection.rows[change.row]
            self._log(events, FaultEvent(now_s, row.fault, FAULT_CODES[row.fault], row.level,
                                         change.action), note)

    def _plausible(self, m: Measurement) -> bool:
        """Leaving storage, first: every reading plausible, nothing raised or locked out."""
        v, t = m.cell_voltage_v, m.temperature_c
        lo, hi = TEMP_PLAUSIBLE_C
        return bool(v.min() >= 0.0 and v.max() <= self.chem.limits.v_max
                    and t.min() > lo and t.max() < hi and not self.protection.active.any()
                    and not self.locked_out)

    def _past_release(self) -> bool:
        """Every under-voltage FAULT row's quantity past its release: the pack may run as
        it is (leaving storage, ending a recovery charge). Below it, the way out is a
        recovery charge."""
        return all(self._figure(q) >= release for q, release in self._recovery_release)

    @property
    def _recovery_on(self) -> bool:
        """A recovery charge is configured (`limits.recovery_charge_a` 0 turns it off)."""
        return self.cfg.limits.recovery_charge_a > 0.0

    # --- the recovery charge ----------------------------------------------------------

    def _only_undervoltage_stands(self) -> bool:
        """After a clear: under-voltage FAULT rows stand, their cells still below the
        release, with no other FAULT than those the low cells themselves make meaningless
        (LOW_CELL_SUSPENDED), and a recovery charge is wanted and configured."""
        latched = {fault for fault, _, _ in self.protection.latched_rows()}
        return bool(latched & UNDERVOLTAGE and latched <= LOW_CELL_SUSPENDED
                    and not self.event_faults
                    and self.requested == "run" and self._recovery_on)

    def _start_recovery(self, events: list[FaultEvent], now_s: float) -> None:
        """Suspends the low-cell rows (their raised rows clear, logged with the reason):
        the state machine then precharges and closes into RECOVERY."""
        self.recovering_since_s = now_s
        self._recovery_discharge_since_s = None
        self._suspend_low_cell_rows(events, now_s)

    def _supervise_recovery(self, m: Measurement, now_s: float,
                            events: list[FaultEvent]) -> None:
        """RECOVERY: back to RUN, contactors closed, once every under-voltage FAULT row's
        quantity is past its release. A discharge held as long as the cell row's debounce,
        or a charge that has not got there within the timeout, ends it in the
        under-voltage FAULT it came from (which counts toward a lockout)."""
        if self._past_release():
            self.recovering_since_s = None
            self._enter(State.RUN, now_s)
            return
        if m.current_a < -self.cfg.rest_current_a:
            if self._recovery_discharge_since_s is None:
                self._recovery_discharge_since_s = now_s
        else:
            self._recovery_discharge_since_s = None
        if (self._recovery_discharge_since_s is not None
                and now_s - self._recovery_discharge_since_s >= self._recovery_discharge_s):
            why = f"discharged at {-m.current_a:.3g} A during a recovery charge"
        elif now_s - self.recovering_since_s >= self.cfg.limits.recovery_timeout_s:
            why = (f"a recovery charge left a cell below the release after "
                   f"{self.cfg.limits.recovery_timeout_s:g} s")
        else:
            return
        self.recovering_since_s = None
        self.protection.latch([row_key(row) for row in self._recovery_latch])
        for row in self._recovery_latch:
            self._log(events, FaultEvent(now_s, row.fault, FAULT_CODES[row.fault], row.level,
                                         "raised", self._row_offender(row, "raised", m),
                                         self._figure(row.quantity)), why)
        self._open(now_s)
        self.state = State.FAULT

    def _enter(self, state: State, now_s: float) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"no transition from {self.state} to {state}")
        self.state = state
        self.phase_since_s = now_s

    def _open(self, now_s: float) -> None:
        """Opens every contactor in this very step; counts an opening under load."""
        was_closed = self.contactors.main_closed
        self.contactors = OPEN
        if was_closed:
            self.opened_at_s = now_s
            current_a = self.last.current_a if self.last is not None else 0.0
            if abs(current_a) >= self.cfg.rest_current_a:
                self.counters.opened_under_load += 1
                self.counters.last_open_current_a = current_a

    def _check_weld(self, m: Measurement, now_s: float, events: list[FaultEvent]) -> None:
        """Commanded open, yet current flows, the bus stays up or the feedback says closed.
        An unreadable current or bus voltage proves nothing open: the check waits for
        readable ones (and a precharge for the check)."""
        cfg = self.cfg.contactors
        if (self.opened_at_s is None or self.contactors.main_closed
                or now_s - self.opened_at_s < cfg.weld_check_s
                or not (math.isfinite(m.current_a) and math.isfinite(m.bus_voltage_v))):
            return
        self.opened_at_s = None
        pack_v = self._figure("pack_v")
        feedback = m.contactors
        if (abs(m.current_a) > cfg.weld_current_a
                or feedback.negative or feedback.positive or feedback.precharge
                or m.bus_voltage_v > cfg.weld_bus_fraction * pack_v):
            self._raise_event_fault(events, now_s, "CONTACTOR_WELDED", None, m.bus_voltage_v)
            self.state = State.FAULT

    def _limits(self, m: Measurement, dt_s: float) -> None:
        """Charge and discharge limits, derated and ramped; zero unless running cleanly.
        Each reaches 0 before the first voltage row of its direction: the current that
        would take the weakest (strongest) cell to the floor (ceiling) from where it would
        rest, through its resistance, is the most allowed; each temperature derating
        likewise reaches 0 at the first temperature row of its direction
        (`temperature_window_c`)."""
        lc, thr, figure = self.cfg.limits, self.chem.thresholds, self._figure_values
        above_floor_v = figure[CELL_V_MIN] - self.floor_v
        charge = discharge = 0.0
        if self.state in CONNECTED and self.requested == "run" and not self.fault_active:
            t_max, t_min = figure[TEMP_MAX], figure[TEMP_MIN]
            # Each temperature derating ends at the first temperature row of its direction.
            charge_lo, charge_hi, discharge_lo, discharge_hi = self.temp_window_c
            cold = _ramp((t_min - charge_lo)
                         / max(thr.cold_charge_derate_below_c - charge_lo, 1e-9))
            cold = 0.0 if t_min <= charge_lo else (
                lc.cold_charge_min_fraction + (1.0 - lc.cold_charge_min_fraction) * cold)
            charge = lc.max_charge_a * min(
                cold,
                _ramp((charge_hi - t_max) / TEMP_TAPER_C),
                _ramp((1.0 - self.soc) / lc.soc_taper),
                _ramp((self.ceiling_v - figure[CELL_V_MAX]) / lc.charge_taper_v),
            )
            charge_ir_a, discharge_ir_a = self._voltage_room_a(m)
            by_voltage = min(discharge_ir_a, lc.max_discharge_a * _ramp(
                above_floor_v / lc.discharge_taper_v))
            discharge = min(by_voltage, lc.max_discharge_a * min(
                _ramp((discharge_hi - t_max) / TEMP_TAPER_C),
                _ramp((t_min - discharge_lo) / TEMP_TAPER_C),
                # SoC only trims the discharge limit to a fifth: the voltage taper above is
                # what ends a discharge, so an estimate that is off cannot cut a UPS
                # ride-through short.
                _ramp(self.soc / lc.soc_taper + 0.2)))
            # Empty - the voltage ends the discharge and the estimate agrees (a dip under a
            # load the model underrates, at a SoC the estimate still gives, is not): held
            # at 0 until charged, though the voltage recovers at rest.
            share = (EMPTY_REST_SHARE
                     if abs(m.current_a) < EMPTY_LIMIT_SHARE * lc.max_discharge_a
                     else EMPTY_LIMIT_SHARE)
            if (self.empty_charge_as is None and lc.empty_release_fraction
                    and by_voltage < share * lc.max_discharge_a and self.soc <= lc.soc_taper):
                self.empty_charge_as = 0.0  # held from here; the count is not restarted
            if self.empty_charge_as is not None:
                discharge = 0.0
            charge = min(charge, charge_ir_a)
            if self.state == State.RECOVERY:  # a trickle in, nothing out
                charge, discharge = min(charge, lc.recovery_charge_a), 0.0
            if self.protection.any_alarm:
                charge *= lc.alarm_fraction
                discharge *= lc.alarm_fraction
        if self.empty_charge_as is not None and m.current_a > self.cfg.rest_current_a:
            # A charge, not a current sensor's offset (which released a hold with none).
            self.empty_charge_as += m.current_a * dt_s
            if self.empty_charge_as >= lc.empty_release_fraction * self.capacity_as:
                self.empty_charge_as = None
        rise_a = lc.ramp_a_per_s * dt_s
        self.charge_limit_a = min(charge, self.charge_limit_a + rise_a)
        # Within the discharge taper the limit falls at once but climbs back slowly: read
        # on the loaded voltage it rose as soon as an inverter backed off, and one that
        # follows it a frame late hunted around it (a 2 s cycle of 40 % of the DCL).
        if above_floor_v < lc.discharge_taper_v:
            rise_a = min(rise_a, TAPER_RISE_SHARE_PER_S * lc.max_discharge_a * dt_s)
        self.discharge_limit_a = min(discharge, self.discharge_limit_a + rise_a)

    def _voltage_room_a(self, m: Measurement) -> tuple[float, float]:
        """(charge, discharge): the currents that would take the strongest cell to the
        ceiling and the weakest to the floor, from the voltage each would rest at. Far
        from both ends a bound from the extremes shows neither binds, and the per-cell
        figures are not worked out."""
        r_ohm, r_max, r_min = self._cell_resistance()
        v_max, v_min = self._figure_values[CELL_V_MAX], self._figure_values[CELL_V_MIN]
        if not (r_min > 0.0 and math.isfinite(v_max) and math.isfinite(v_min)):
            return math.inf, math.inf  # no model yet, or a sensor fault deals with it
        i_a, lc = m.current_a, self.cfg.limits
        # (v_k - i r_k - floor) / r_k >= (v_min - floor) / r_max - i while v_min is above the
        # floor; likewise for the charge side.
        far_from_empty = (v_min > self.floor_v
                          and (v_min - self.floor_v) / r_max - i_a >= lc.max_discharge_a)
        far_from_full = (v_max < self.ceiling_v
                         and (self.ceiling_v - v_max) / r_max + i_a >= lc.max_charge_a)
        if far_from_empty and far_from_full:
            return math.inf, math.inf
        if self._cells_unreadable:  # as `_quantities` found this step's readings
            return math.inf, math.inf  # an unreadable cell: its sensor fault deals with it
        rest_v = m.cell_voltage_v - i_a * r_ohm  # charging lifts the terminals
        # The ufunc's reduce: what np.min calls, at half its cost (its wrappers).
        charge_a = float(np.minimum.reduce((self.ceiling_v - rest_v) / r_ohm))
        discharge_a = float(np.minimum.reduce((rest_v - self.floor_v) / r_ohm))
        return max(charge_a, 0.0), max(discharge_a, 0.0)

    def _cell_resistance(self) -> tuple[np.ndarray, float, float]:
        """The estimator's cell resistances (`Estimator.cell_resistance_ohm`), their largest
        and their smallest. They change only with a filter run, which publishes a new
        estimate: worked out once per estimate rather than every step."""
        if self.estimate is not self._resistance_of:
            r_ohm = self.estimator.cell_resistance_ohm()
            self._resistance = (r_ohm, float(r_ohm.max()), float(r_ohm.min()))
            self._resistance_of = self.estimate
        return self._resistance

    # --- faults outside the table and the log -----------------------------------------

    def _raise_event_fault(self, events, now_s, name, index, value, note: str = "") -> None:
        if name in self.event_faults:
            return
        self.event_faults.add(name)
        self._log(events, FaultEvent(now_s, name, FAULT_CODES[name], Level.FAULT, "raised",
                                     index, value), note)

    def _clear_event_fault(self, events, now_s, name, note: str = "") -> None:
        self.event_faults.discard(name)
        self._log(events, FaultEvent(now_s, name, FAULT_CODES[name], Level.FAULT, "cleared"),
                  note)

    def _log(self, events: list[FaultEvent], event: FaultEvent, note: str = "") -> None:
        """Publishes and logs `event` with a snapshot of the pack. Both hold finite numbers
        only (a store and a broker keep them as strict JSON): a value that is none is None."""
        if event.value is not None and not math.isfinite(event.value):
            event = dataclasses.replace(event, value=None)
        events.append(event)
        if event.level == Level.FAULT and event.action == "raised":
            note = "; ".join(filter(None, (note, self._count_trip(event.name, event.t_s))))
        snapshot = {"state": self.state, "soc_pct": _rounded(self.soc * 100.0, 2)}
        try:
            snapshot.update(self._measured_snapshot(self.last))
        except (AttributeError, TypeError, ValueError):  # no measurement, or a broken one
            snapshot["measurement"] = "unavailable"
        if note:
            snapshot["note"] = note
        self.log.record(event, snapshot)

    @staticmethod
    def _measured_snapshot(m: Measurement) -> dict:
        """The readings in a log entry: extremes of the readable ones, and the unreadable
        ones (NaN, infinite) named as people count them, from 1."""
        v, t = m.cell_voltage_v, m.temperature_c
        v_ok, t_ok = np.isfinite(v), np.isfinite(t)
        out = {"pack_v": _rounded(float(v.sum()), 3), "current_a": _rounded(m.current_a, 3),
               "cell_v_min": _rounded(float(v[v_ok].min(initial=np.inf)), 4),
               "cell_v_max": _rounded(float(v[v_ok].max(initial=-np.inf)), 4),
               "temp_c_max": _rounded(float(t[t_ok].max(initial=-np.inf)), 2)}
        pack_level = {"current": m.current_a, "bus voltage": m.bus_voltage_v,
                      "pack voltage": m.pack_voltage_v}
        unreadable = ([f"cell {k + 1}" for k in np.flatnonzero(~v_ok)]
                      + [f"sensor {k + 1}" for k in np.flatnonzero(~t_ok)]
                      + [name for name, x in pack_level.items()
                         if x is not None and not math.isfinite(x)])
        if unreadable:
            out["unreadable"] = ", ".join(unreadable)
        return out

    def hand_over(self) -> HandOver:
        """What this firmware passes to the next at a restart (before its own first step,
        what it was handed: two restarts in a row lose nothing)."""
        if self.last_s is None:
            return self._handed
        window_s = self.cfg.lockout_window_s
        ages = {name: [self.last_s - t for t in times if self.last_s - t < window_s]
                for name, times in self._trips_s.items()}
        return HandOver(
            trip_ages_s={name: ages_s for name, ages_s in ages.items() if ages_s},
            weld_check_due=self.contactors != OPEN or self.opened_at_s is not None,
            debouncing_rows=tuple(self.protection.debouncing_fault_rows()),
            recovery_age_s=(None if self.recovering_since_s is None
                            else self.last_s - self.recovering_since_s),
            precharge_attempts=(self.precharge_attempt if self.state == State.PRECHARGE
                                else self._precharges_before))

    def take_over(self, handed: HandOver) -> list[RowKey]:
        """Before the first step: what the firmware before handed over. Returns the
        debouncing rows that name no FAULT row of this table (the others are taken)."""
        if self.last_s is not None:
            raise RuntimeError("a hand-over is taken before the first step")
        index = self.protection.fault_rows()
        self._handed = dataclasses.replace(handed, debouncing_rows=tuple(
            k for k in handed.debouncing_rows if k in index))
        self._precharges_before = handed.precharge_attempts
        return [k for k in handed.debouncing_rows if k not in index]

    def _take_over(self, events: list[FaultEvent], now_s: float) -> None:
        """At the first step: what a restart handed over goes on this firmware's clock."""
        h = self._handed
        self._trips_s = {name: [now_s - age_s for age_s in ages_s]
                         for name, ages_s in h.trip_ages_s.items()}
        if h.weld_check_due:
            self.opened_at_s = now_s
        # Not over a latched FAULT or a lockout: suspending the low-cell rows would clear
        # the one a recovery's timeout latched.
        if h.recovery_age_s is not None and not (self.fault_active or self.locked_out):
            self._start_recovery(events, now_s)
            self.recovering_since_s = now_s - h.recovery_age_s
        self.protection.latch(list(h.debouncing_rows))  # those the firmware before debounced
        index = self.protection.fault_rows()
        for key in h.debouncing_rows:
            row = self.protection.rows[index[key]]
            self._log(events, FaultEvent(now_s, row.fault, FAULT_CODES[row.fault], row.level,
                                         "raised"), RAISED_AT_RESTART_NOTE)

    def _count_trip(self, name: str, now_s: float) -> str:
        """Counts a FAULT's trip; the note for the log when it locks the pack out."""
        window_s = self.cfg.lockout_window_s
        trips = [t for t in self._trips_s.get(name, []) if now_s - t < window_s] + [now_s]
        self._trips_s[name] = trips
        if len(trips) < self.cfg.lockout_trips or name in self.locked_out:
            return ""
        self.locked_out.add(name)
        return (f"locked out: {len(trips)} trips within {window_s:g} s; clear-faults is "
                "refused until a service action (service-reset)")

    def _actuation(self, events: list[FaultEvent], mask: np.ndarray,
                   wire_test: bool = False) -> Actuation:
        if self.state not in CONNECTED or self.fault_active:
            self.charge_limit_a = self.discharge_limit_a = 0.0
        else:  # never above the maximum in force: one lowered since the last measurement
            lc = self.cfg.limits  # (a step without one leaves the limits alone) binds now
            self.charge_limit_a = min(self.charge_limit_a, lc.max_charge_a)
            self.discharge_limit_a = min(self.discharge_limit_a, lc.max_discharge_a)
        bitmap = self.protection.active_bitmap()
        warning_bits, alarm_bits, fault_bits = self.protection.level_bitmaps
        for name in self.event_faults:  # raised outside the table: latched, FAULT level
            bitmap |= 1 << FAULT_CODES[name]
            fault_bits |= 1 << FAULT_CODES[name]
        return Actuation(
            state=self.state,
            contactors=self.contactors,
            balance_mask=mask,
            charge_limit_a=self.charge_limit_a,
            discharge_limit_a=self.discharge_limit_a,
            fault_bitmap=bitmap,
            soc=min(max(self.soc, 0.0), 1.0),
            events=tuple(events),
            estimate=self.estimate,
            charge_voltage_limit_v=self.ceiling_v * self.n_series,
            discharge_voltage_limit_v=self.floor_v * self.n_series,
            open_wire_test=wire_test,
            level_bitmaps=(warning_bits, alarm_bits, fault_bits),
        )
