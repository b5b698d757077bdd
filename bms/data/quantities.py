"""What the protection table can watch: one row a quantity (name, unit, meaning, how the
offending cell or sensor is found on a trip), read by the configuration, the firmware and
the documentation alike, so none of them keeps a list of its own."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Offender(StrEnum):
    """Where the firmware looks for the cell or sensor behind a quantity when a row trips."""

    NONE = "none"  # a pack-level figure: no one cell or sensor
    HIGHEST_CELL = "highest cell"
    LOWEST_CELL = "lowest cell"
    CELL_OFF_THE_MEAN = "cell furthest from the mean"
    OPEN_WIRE_CELL = "cell the open-wire test pulled down (else furthest from the mean)"
    STUCK_CELL = "cell whose reading has repeated longest (an unreadable one first)"
    SOC_DROP_CELL = "cell whose SoC fell most against the others"
    REST_SOC_OUTLIER = "cell whose SoC by its voltage is furthest from the others' median"
    HOTTEST_SENSOR = "highest temperature reading"
    COLDEST_SENSOR = "lowest temperature reading"
    HOTTEST_READING = "highest raw temperature reading (an unreadable one first)"


@dataclass(frozen=True)
class Quantity:
    """One number per step, computed by the firmware from the measurement."""

    name: str
    unit: str
    doc: str
    offender: Offender = Offender.NONE
    magnitude: bool = False  # never negative: thresholds above 0, releases at or above 0


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("cell_v_max", "V", "highest cell voltage", Offender.HIGHEST_CELL),
    Quantity("cell_v_min", "V", "lowest cell voltage", Offender.LOWEST_CELL),
    Quantity("pack_v", "V", "pack voltage"),
    Quantity("charge_temp_max", "°C", "highest valid temperature while charging",
             Offender.HOTTEST_SENSOR),
    Quantity("charge_temp_min", "°C", "lowest valid temperature while charging",
             Offender.COLDEST_SENSOR),
    Quantity("discharge_temp_max", "°C", "highest valid temperature", Offender.HOTTEST_SENSOR),
    Quantity("discharge_temp_min", "°C", "lowest valid temperature", Offender.COLDEST_SENSOR),
    Quantity("charge_a", "A", "charge current", magnitude=True),
    Quantity("discharge_a", "A", "discharge current", magnitude=True),
    Quantity("cell_soc_spread", "fraction 0..1",
             "how far apart the cells' SoC stand by their voltages (the model's drops taken "
             "out), beyond what the OCV's slope lets a voltage tell: 0 where it is flat",
             Offender.REST_SOC_OUTLIER, magnitude=True),
    Quantity("temp_spread", "°C", "highest minus lowest valid temperature",
             Offender.HOTTEST_SENSOR, magnitude=True),
    Quantity("open_wire_v", "V",
             "how far the AFE's open-wire test pulled a cell reading down, in every one of "
             "the last tests (open sense wire); without the test, the opposite deviation of "
             "two neighbouring cells that stand out from the rest",
             Offender.OPEN_WIRE_CELL, magnitude=True),
    Quantity("temp_reading_max", "°C",
             "highest raw temperature reading; infinite when one is unreadable (NaN, "
             "infinite, or beyond both sides of the plausible window in turn since its last "
             "plausible reading) or there is none", Offender.HOTTEST_READING),
    # An unreadable reading counts as the highest (one sensor fault, not two), so the
    # lowest is among the readable ones.
    Quantity("temp_reading_min", "°C", "lowest raw temperature reading",
             Offender.COLDEST_SENSOR),
    Quantity("idle_current_a", "A", "current measured with the contactors open",
             magnitude=True),
    Quantity("rest_soc_drop", "fraction 0..1",
             "largest fall of one cell's SoC against the others at rest", Offender.SOC_DROP_CELL),
    Quantity("reading_stuck_s", "s",
             "how long a cell reading has repeated exactly while most others moved",
             Offender.STUCK_CELL),
    Quantity("pack_v_mismatch_v", "V",
             "the pack voltage sensor against the sum of the cell readings", magnitude=True),
    Quantity("current_step_mismatch_a", "A",
             "current step the cell voltages do not follow (a current sensor gone wrong)"),
    Quantity("pack_v_drift_v", "V",
             "how far the pack voltage sensor and the sum of the cell readings (as the "
             "voltage rows judge them) have moved apart since their ratio was learnt, "
             "filtered over seconds: a reading's offset that appeared in operation",
             magnitude=True),
    Quantity("current_reading_a", "A",
             "magnitude of the current reading; infinite when unreadable (NaN, infinite)",
             magnitude=True),
    Quantity("bus_v_reading_v", "V",
             "magnitude of the bus voltage reading; infinite when unreadable (NaN, infinite)",
             magnitude=True),
    Quantity("inverter_silence_s", "s",
             "time since the inverter's last keep-alive on a field link (CAN); 0 while no "
             "link watches for one", magnitude=True),
)

QUANTITY_BY_NAME: dict[str, Quantity] = {q.name: q for q in QUANTITIES}
# Each quantity's place in the firmware's array of this step's figures.
QUANTITY_INDEX: dict[str, int] = {q.name: i for i, q in enumerate(QUANTITIES)}
