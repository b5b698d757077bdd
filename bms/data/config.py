"""Firmware configuration: thresholds, debounce times, precharge, contactors, limits,
balancing and timeouts, as frozen data derived from a chemistry.

`default_config(chemistry)` gives the defaults; a TOML file may tighten them, never
loosen them past the chemistry's absolute limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bms.data.chemistry import Chemistry
from bms.data.faults import Level

# Readings outside these cannot come from a working sensor (an NTC open or shorted reads
# far outside them; a cell reading past its absolute limit by this margin is a sensor).
TEMP_PLAUSIBLE_C = (-55.0, 125.0)
CELL_V_IMPLAUSIBLE_MARGIN = 0.3
CELL_V_IMPLAUSIBLE_BELOW = -0.1  # a cell may be at 0 V (storage), never this far below
# A current of this many times the short-circuit threshold no pack drives and no charger
# pushes; a bus reading of this many times the pack's highest voltage no bus it is wired to
# has. Beyond them (or unreadable) the sensor has failed.
CURRENT_IMPLAUSIBLE_SHORTS = 10.0
BUS_V_IMPLAUSIBLE_PACKS = 2.0
# The most entries `fault_log_size` allows (the protocol's fault log page counts them in 16
# bits); the persistent store keeps this many of the pack's history whatever the size.
FAULT_LOG_SIZE_MAX = 65535


def cell_v_plausible(chem: Chemistry) -> tuple[float, float]:
    """The cell readings a working sensor can give: outside, the sensor has failed."""
    return CELL_V_IMPLAUSIBLE_BELOW, chem.limits.v_max + CELL_V_IMPLAUSIBLE_MARGIN


@dataclass(frozen=True)
class ProtectionRow:
    """One protection check: `quantity` beyond `threshold` for `debounce_s` raises `fault`
    at `level`; back beyond `release` for `release_s` clears it (a FAULT also needs a
    clear-faults request)."""

    fault: str
    level: Level
    quantity: str
    above: bool  # True: trips when the quantity rises above the threshold
    threshold: float
    release: float
    debounce_s: float
    release_s: float


@dataclass(frozen=True)
class PrechargeConfig:
    done_fraction: float = 0.95  # bus voltage over pack voltage that ends precharge
    done_current_a: float = 0.5  # and the precharge current must have fallen below this
    timeout_s: float = 3.0
    retries: int = 2
    retry_wait_s: float = 5.0


@dataclass(frozen=True)
class ContactorConfig:
    weld_check_s: float = 3.0  # after an open command, current / bus must be gone by then
    weld_current_a: float = 1.0  # current still flowing above this means welded
    weld_bus_fraction: float = 0.5  # bus still above this fraction of pack voltage: welded


@dataclass(frozen=True)
class LimitsConfig:
    max_charge_a: float
    max_discharge_a: float
    ramp_a_per_s: float  # how fast published limits may rise (they fall at once)
    charge_taper_v: float = 0.1  # charge limit falls to 0 over this far below charge_v
    discharge_taper_v: float = 0.2  # discharge limit falls to 0 over this above undervoltage
    soc_taper: float = 0.05  # limits taper over the last 5 % of SoC
    # The charge limit just above the CHARGE_UNDERTEMP WARNING (0 at and below it).
    cold_charge_min_fraction: float = 0.1
    alarm_fraction: float = 0.5  # an active ALARM cuts limits to this fraction
    # Limits reach 0 where a cell would stand this far inside the first voltage row it meets
    # (its WARNING), under the current they allow (the cells' resistance taken into account).
    discharge_stop_margin_v: float = 0.03
    charge_stop_margin_v: float = 0.01
    # The way back from an under-voltage FAULT or from storage at 0 V: a charge at this
    # current at most, discharge forbidden, until every cell is back above the release
    # (`bms.core.firmware`, RECOVERY). 0 turns recovery off: such a pack stays in FAULT.
    recovery_charge_a: float = field(kw_only=True)
    recovery_timeout_s: float = 4 * 3600.0  # cells not back above the release by then: FAULT
    # Once the discharge limit has reached 0 at the floor (empty), it stays 0 until the
    # pack has taken back this share of its capacity: the voltage recovering at rest does
    # not invite an inverter to start again on an empty pack. 0: no hold.
    empty_release_fraction: float = 0.02


class BalancingMode(StrEnum):
    """What passive balancing compares (`bms.core.balancing`)."""

    OFF = "off"
    VOLTAGE = "voltage"
    SOC = "soc"


class BalancingWhen(StrEnum):
    """When passive balancing may bleed."""

    REST = "rest"
    CHARGE = "charge"
    ALWAYS = "always"


@dataclass(frozen=True)
class BalancingConfig:
    mode: BalancingMode = BalancingMode.VOLTAGE
    start_mv: float = 10.0
    stop_mv: float = 5.0
    min_cell_v: float = 3.0
    when: BalancingWhen = BalancingWhen.REST
    max_cells: int = 8
    max_temp_c: float = 50.0
    measure_every_s: float = 10.0  # bleeding pauses for one tick this often to measure
    bleed_resistor_ohm: float = 33.0  # what a bleeding cell's charge is counted through
    sense_wire_ohm: float = 0.1  # per sense wire: its bleed drop is taken off the readings


@dataclass(frozen=True)
class EstimationConfig:
    """State estimation (`bms.core.estimator`): what it assumes of sensors and model, and when
    it trusts the voltage alone."""

    reference_power_w: float  # the load the runtime at reference power is given for
    current_noise_a: float  # rms noise of one current reading
    offset_sigma_a: float  # how far off the current sensor's zero may be at start
    period_s: float = 1.0  # the filter runs this often; the coulomb count every step
    voltage_noise_v: float = 1.5e-3  # rms noise of one cell reading, quantisation included
    model_error_v: float = 5e-3  # how far the OCV table may be from the cell at rest
    model_correlation_s: float = 300.0  # how long such an error persists
    rest_settle_s: float = 600.0  # rest this long and the cells have relaxed
    full_taper_c: float = 0.05  # at charge voltage with the current below this: full
    empty_margin_v: float = 0.1  # a cell this close above undervoltage while discharging: empty
    trusted_slope_mv_per_pct: float = 10.0  # voltage alone sets SoC only where OCV is this steep
    stored_soc_sigma: float = 0.15  # how far a stored SoC may be off (stale)
    # With the contactors open no current flows, so the reading is the sensor's offset.
    # Off where that does not hold: a sensor outside the contactors, or a replayed trace.
    learn_offset_when_open: bool = True


class OpenWireFallback(StrEnum):
    """What open-wire detection does with a measurement source that does not run the
    AFE's open-wire test (a replayed trace, a rig's frame)."""

    PASSIVE = "passive"  # look for the pattern in the readings, strictly
    OFF = "off"  # no open-wire detection at all


@dataclass(frozen=True)
class OpenWireConfig:
    """Open-wire detection (`bms.core.open_wire`): the AFE's active test, and what to do
    without it. The OPEN_WIRE row's threshold is how far a test must pull a reading."""

    test_every_s: float = 2.0  # the test is asked for this often, never while a cell bleeds
    confirm_tests: int = 2  # a sense wire is open once this many tests in a row say so
    fallback: OpenWireFallback = OpenWireFallback.PASSIVE


class KeepaliveAction(StrEnum):
    """What the firmware does once the inverter on a CAN link has stopped its keep-alive
    for `CanConfig.keepalive_timeout_s`: the level it raises INVERTER_TIMEOUT at."""

    OFF = "off"  # nothing: an inverter that sends no keep-alive
    WARN = "warn"  # WARNING: reported
    DERATE = "derate"  # ALARM: the limits cut to limits.alarm_fraction
    OPEN = "open"  # FAULT: contactors open, latched until clear-faults


KEEPALIVE_LEVELS: dict[KeepaliveAction, Level] = {
    KeepaliveAction.WARN: Level.WARNING, KeepaliveAction.DERATE: Level.ALARM,
    KeepaliveAction.OPEN: Level.FAULT}


@dataclass(frozen=True)
class CanConfig:
    """The CAN link to an inverter (`bms.links.can`): how long the inverter's keep-alive
    may stop, and what the firmware does then."""

    keepalive_timeout_s: float = 10.0
    keepalive_action: KeepaliveAction = KeepaliveAction.WARN


def inverter_rows(can: CanConfig) -> tuple[ProtectionRow, ...]:
    """INVERTER_TIMEOUT at every level: trips once the keep-alive has been silent for the
    timeout, releases as soon as one arrives. Not in the configurable table (the timeout
    is their one number): the firmware appends them and enables the row of the action's
    level (`KEEPALIVE_LEVELS`)."""
    timeout_s = can.keepalive_timeout_s
    return tuple(ProtectionRow("INVERTER_TIMEOUT", level, "inverter_silence_s", True,
                               timeout_s, 0.5 * timeout_s, 0.0, 0.0) for level in Level)


@dataclass(frozen=True)
class FirmwareConfig:
    protection: tuple[ProtectionRow, ...]
    limits: LimitsConfig
    estimation: EstimationConfig
    precharge: PrechargeConfig = field(default_factory=PrechargeConfig)
    contactors: ContactorConfig = field(default_factory=ContactorConfig)
    balancing: BalancingConfig = field(default_factory=BalancingConfig)
    measurement_timeout_s: float = 1.0
    rest_current_a: float = 0.2  # below this the pack is at rest
    fault_log_size: int = 1000
    # The same FAULT this many times within the window locks the contactors open: only a
    # service action (`service-reset`) clears it, not clear-faults.
    lockout_trips: int = 3
    lockout_window_s: float = 600.0
    open_wire: OpenWireConfig = field(default_factory=OpenWireConfig)
    can: CanConfig = field(default_factory=CanConfig)


def default_config(chem: Chemistry, n_series: int, pack_capacity_ah: float) -> FirmwareConfig:
    """Defaults for a pack: thresholds from the chemistry, debounce times after foxBMS
    (voltage 2 s, temperature 5 s, current 0.1 s - see shared/sodium-ion.md)."""
    lim, thr = chem.limits, chem.thresholds
    charge_a = lim.max_charge_c * pack_capacity_ah
    discharge_a = lim.max_discharge_c * pack_capacity_ah
    short_a = 4.0 * discharge_a
    span = thr.overvoltage_v - thr.overvoltage_release_v

    def three(fault, quantity, above, fault_at, hysteresis, debounce_s, release_s, step):
        """WARNING, ALARM and FAULT rows `step` apart, the FAULT at `fault_at`; each
        releases `hysteresis` back on the safe side of its own threshold."""
        sign = 1.0 if above else -1.0
        rows = []
        for level, k in zip(Level, (2, 1, 0), strict=True):
            threshold = fault_at - sign * step * k
            rows.append(ProtectionRow(fault, level, quantity, above, threshold,
                                      threshold - sign * hysteresis, debounce_s, release_s))
        return rows

    rows = [
        *three("CELL_OVERVOLTAGE", "cell_v_max", True, thr.overvoltage_v, span, 2.0, 2.0,
               (thr.overvoltage_v - thr.charge_v) / 3),
        *three("CELL_UNDERVOLTAGE", "cell_v_min", False, thr.undervoltage_v,
               thr.undervoltage_release_v - thr.undervoltage_v, 2.0, 2.0, 0.05),
        ProtectionRow("PACK_OVERVOLTAGE", "FAULT", "pack_v", True,
                      thr.overvoltage_v * n_series, thr.overvoltage_release_v * n_series, 2.0, 2.0),
        ProtectionRow("PACK_UNDERVOLTAGE", "FAULT", "pack_v", False,
                      thr.undervoltage_v * n_series, thr.undervoltage_release_v * n_series,
                      2.0, 2.0),
        *three("CHARGE_OVERTEMP", "charge_temp_max", True, lim.charge_temp_max_c,
               5.0, 5.0, 5.0, 3.0),
        *three("CHARGE_UNDERTEMP", "charge_temp_min", False, lim.charge_temp_min_c,
               5.0, 5.0, 5.0, 3.0),
        *three("DISCHARGE_OVERTEMP", "discharge_temp_max", True, lim.discharge_temp_max_c,
               5.0, 5.0, 5.0, 3.0),
        *three("DISCHARGE_UNDERTEMP", "discharge_temp_min", False, lim.discharge_temp_min_c,
               5.0, 5.0, 5.0, 3.0),
        # Two tiers: a moderate over-current for seconds, a high one for a fraction of one.
        ProtectionRow("CHARGE_OVERCURRENT", "ALARM", "charge_a", True, 1.1 * charge_a,
                      charge_a, 5.0, 2.0),
        ProtectionRow("CHARGE_OVERCURRENT", "FAULT", "charge_a", True, 1.5 * charge_a,
                      charge_a, 0.3, 2.0),
        ProtectionRow("DISCHARGE_OVERCURRENT", "ALARM", "discharge_a", True, 1.1 * discharge_a,
                      discharge_a, 5.0, 2.0),
        ProtectionRow("DISCHARGE_OVERCURRENT", "FAULT", "discharge_a", True, 1.5 * discharge_a,
                      discharge_a, 0.3, 2.0),
        ProtectionRow("SHORT_CIRCUIT", "FAULT", "discharge_a", True, short_a,
                      discharge_a, 0.0, 2.0),
        # Imbalance is a difference in charge, judged where the voltage can tell it: the
        # cells' SoC by their voltages (`Estimate.soc_spread`). A voltage spread is not one:
        # it grows with the load (resistance differences) and near empty, where the OCV is
        # steep, and with the cell count (416 cells with a 1 % SoC spread span 6 %).
        ProtectionRow("CELL_IMBALANCE", "WARNING", "cell_soc_spread", True, 0.1, 0.07,
                      10.0, 10.0),
        ProtectionRow("CELL_IMBALANCE", "ALARM", "cell_soc_spread", True, 0.2, 0.15,
                      10.0, 10.0),
        ProtectionRow("TEMP_SPREAD", "WARNING", "temp_spread", True, 10.0, 7.0, 10.0, 10.0),
        # Plausibility: readings no working sensor gives.
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_max", True,
                      cell_v_plausible(chem)[1], lim.v_max, 0.5, 1.0),
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_min", False,
                      cell_v_plausible(chem)[0], 0.0, 0.5, 1.0),
        # A working converter's noise moves every reading; one that repeats to the bit
        # for this long is stuck.
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "reading_stuck_s", True, 10.0, 1.0,
                      0.0, 1.0),
        ProtectionRow("TEMP_SENSOR_FAULT", "FAULT", "temp_reading_max", True,
                      TEMP_PLAUSIBLE_C[1], TEMP_PLAUSIBLE_C[1] - 5.0, 1.0, 1.0),
        ProtectionRow("TEMP_SENSOR_FAULT", "FAULT", "temp_reading_min", False,
                      TEMP_PLAUSIBLE_C[0], TEMP_PLAUSIBLE_C[0] + 5.0, 1.0, 1.0),
        # An open sense wire: one cell reads high and its neighbour as much low.
        ProtectionRow("OPEN_WIRE", "FAULT", "open_wire_v", True, 0.08, 0.02, 0.5, 1.0),
        # A current step the pack voltage does not follow came from the sensor.
        ProtectionRow("CURRENT_SENSOR_FAULT", "ALARM", "current_step_mismatch_a", True,
                      0.1 * pack_capacity_ah, 0.05 * pack_capacity_ah, 0.0, 1.0),
        # A cell whose SoC falls at rest against the others: an internal short.
        ProtectionRow("CELL_SELF_DISCHARGE", "WARNING", "rest_soc_drop", True, 0.01, 0.005,
                      0.0, 60.0),
        ProtectionRow("CELL_SELF_DISCHARGE", "ALARM", "rest_soc_drop", True, 0.02, 0.01,
                      0.0, 60.0),
        # Current measured while both main contactors are open: the sensor has an offset.
        ProtectionRow("CURRENT_SENSOR_FAULT", "ALARM", "idle_current_a", True,
                      0.05 * pack_capacity_ah, 0.02 * pack_capacity_ah, 5.0, 5.0),
        # The pack voltage sensor and the sum of the cells disagree: one of them is off (a
        # cell reading's offset, or the sensor's). The band: 0.1 V and 0.5 % of the pack.
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "ALARM", "pack_v_mismatch_v", True,
                      0.1 + 0.005 * chem.nominal_v * n_series,
                      0.05 + 0.0025 * chem.nominal_v * n_series, 5.0, 5.0),
        # Tightly: the two moved apart since their ratio was learnt (`bms.core.pack_v_drift`):
        # a cell reading's offset that appears in operation. 20 mV is 1.5x the largest healthy
        # figure (416S at a 1 s tick, 12 h); the figure's filter, not the debounce, averages
        # the noise. WARNING, not ALARM: the margin over healthy noise is thin on long
        # strings at a 1 s tick, and what a wrong reading does (the balancer bleeding the
        # wrong cells) takes hours; the operator is told at once.
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "WARNING", "pack_v_drift_v", True,
                      0.02, 0.01, 2.0, 10.0),
        # Plausibility of the pack-level readings. Without the current the firmware is blind
        # to a short circuit: at once. Without the bus voltage a precharge cannot be confirmed
        # nor a contactor proved open: as the cell readings.
        ProtectionRow("CURRENT_SENSOR_FAULT", "FAULT", "current_reading_a", True,
                      CURRENT_IMPLAUSIBLE_SHORTS * short_a, short_a, 0.0, 1.0),
        ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "bus_v_reading_v", True,
                      BUS_V_IMPLAUSIBLE_PACKS * n_series * lim.v_max, n_series * lim.v_max,
                      0.5, 1.0),
    ]
    return FirmwareConfig(
        protection=tuple(rows),
        estimation=EstimationConfig(
            # A two-hour load on the pack's nominal energy: a typical UPS rating.
            reference_power_w=0.5 * chem.nominal_v * n_series * pack_capacity_ah,
            current_noise_a=1e-3 * pack_capacity_ah,
            offset_sigma_a=0.01 * pack_capacity_ah),
        limits=LimitsConfig(max_charge_a=charge_a, max_discharge_a=discharge_a,
                            ramp_a_per_s=max(charge_a, discharge_a) / 10.0,
                            # C/20: a trickle, as chargers pre-charge a deeply empty cell.
                            recovery_charge_a=0.05 * pack_capacity_ah),
    )
