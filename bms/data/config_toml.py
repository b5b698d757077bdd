"""Firmware configuration as TOML: the defaults written out with a comment on every key,
and a reader that lets a file override any subset of them.

Why and how: docs/internals.md, bms/data/config_toml.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from bms.data.chemistry import Chemistry
from bms.data.config import (
    FAULT_LOG_SIZE_MAX,
    BalancingMode,
    BalancingWhen,
    FirmwareConfig,
    KeepaliveAction,
    OpenWireFallback,
    ProtectionRow,
    default_config,
)
from bms.data.faults import Level
from bms.data.quantities import QUANTITY_BY_NAME
from bms.data.validation import Problems, read_toml

# --- what every key means ----------------------------------------------------------

# (section, field) -> (unit, meaning); section "" is the top level of the file.
FIELD_DOCS: dict[tuple[str, str], tuple[str, str]] = {
    ("", "measurement_timeout_s"): (
        "s", "a measurement older than this is stale: MEASUREMENT_TIMEOUT, contactors open"),
    ("", "rest_current_a"): ("A", "below this current (either sign) the pack is at rest"),
    ("", "fault_log_size"): ("entries", "fault log capacity; the oldest entries go first"),
    ("limits", "max_charge_a"): (
        "A", "highest charge current limit ever published (<= max charge C x capacity)"),
    ("limits", "max_discharge_a"): (
        "A", "highest discharge current limit ever published (<= max discharge C x capacity)"),
    ("limits", "ramp_a_per_s"): ("A/s", "how fast published limits may rise (they fall at once)"),
    ("limits", "charge_taper_v"): (
        "V", "the charge limit falls to 0 over this far below the cell charge voltage"),
    ("limits", "discharge_taper_v"): (
        "V", "the discharge limit falls to 0 over this far above the undervoltage threshold"),
    ("limits", "soc_taper"): ("fraction 0..1", "limits taper to 0 over this last share of SoC"),
    ("limits", "cold_charge_min_fraction"): (
        "fraction 0..1", "share of the charge limit left just above the CHARGE_UNDERTEMP "
        "WARNING threshold (at and below it the limit is 0)"),
    ("limits", "alarm_fraction"): ("fraction 0..1", "an active ALARM cuts limits to this share"),
    ("", "lockout_trips"): (
        "trips", "the same FAULT this many times within lockout_window_s locks the contactors "
        "open until a service action (service-reset); clear-faults no longer clears it"),
    ("", "lockout_window_s"): ("s", "the window lockout_trips counts in"),
    ("limits", "discharge_stop_margin_v"): (
        "V", "the discharge limit reaches 0 where the weakest cell, under the current it "
        "allows, would stand this far above the highest under-voltage threshold"),
    ("limits", "charge_stop_margin_v"): (
        "V", "the charge limit reaches 0 where the strongest cell, under the current it "
        "allows, would stand at the charge voltage or this far below the lowest "
        "over-voltage threshold, whichever is lower"),
    ("limits", "recovery_charge_a"): (
        "A", "the charge limit of a recovery charge (after an under-voltage FAULT, or from "
        "storage below the release): discharge is forbidden until every cell is back above "
        "the under-voltage release; 0: no recovery charge"),
    ("limits", "empty_release_fraction"): (
        "fraction 0..1", "once the discharge limit reached 0 at the under-voltage end "
        "(empty), it stays 0 until the pack has taken back this share of its capacity in "
        "charge; 0: no hold"),
    ("limits", "recovery_timeout_s"): (
        "s", "a recovery charge that has not lifted every cell above the release by then "
        "ends in CELL_UNDERVOLTAGE FAULT"),
    ("precharge", "done_fraction"): (
        "fraction 0..1", "precharge is done when the bus reaches this share of pack voltage"),
    ("precharge", "done_current_a"): (
        "A", "... and the precharge current has fallen below this"),
    ("precharge", "timeout_s"): ("s", "a precharge not done by then has failed"),
    ("precharge", "retries"): ("count", "further attempts after a failed precharge (0 = none)"),
    ("precharge", "retry_wait_s"): ("s", "wait between precharge attempts"),
    ("contactors", "weld_check_s"): (
        "s", "after an open command, current and bus voltage must be gone by then"),
    ("contactors", "weld_current_a"): ("A", "current still above this then: welded"),
    ("contactors", "weld_bus_fraction"): (
        "fraction 0..1", "bus still above this share of pack voltage then: welded"),
    ("balancing", "mode"): ("off | voltage | soc", "what balancing equalises"),
    ("balancing", "start_mv"): ("mV", "a cell this far above the lowest starts bleeding"),
    ("balancing", "stop_mv"): ("mV", "... and stops once within this (below start_mv)"),
    ("balancing", "min_cell_v"): ("V", "no cell below this voltage is bled"),
    ("balancing", "when"): ("rest | charge | always", "when balancing may run"),
    ("balancing", "max_cells"): ("count", "cells bled at once, at most"),
    ("balancing", "max_temp_c"): ("°C", "no balancing above this temperature"),
    ("balancing", "measure_every_s"): ("s", "bleeding pauses for one tick this often to measure"),
    ("balancing", "bleed_resistor_ohm"): (
        "ohm", "bleed resistor: a bleeding cell loses its voltage over this much current"),
    ("balancing", "sense_wire_ohm"): (
        "ohm", "per sense wire: the voltage rows see readings less the bleed currents' drop"),
    ("estimation", "reference_power_w"): ("W", "runtime is also given at this discharge power"),
    ("estimation", "current_noise_a"): ("A", "rms noise of one current reading"),
    ("estimation", "offset_sigma_a"): ("A", "how far the current sensor's zero may be off"),
    ("estimation", "period_s"): ("s", "the SoC filter runs this often (coulombs count every step)"),
    ("estimation", "voltage_noise_v"): ("V", "rms noise of one cell voltage reading"),
    ("estimation", "model_error_v"): ("V", "how far the OCV table may be from the cell at rest"),
    ("estimation", "model_correlation_s"): ("s", "how long such a model error persists"),
    ("estimation", "rest_settle_s"): ("s", "after this long at rest the cells have relaxed"),
    ("estimation", "full_taper_c"): (
        "C", "at charge voltage with the charge current below this, the cell is full"),
    ("estimation", "empty_margin_v"): (
        "V", "discharging, a cell this close above undervoltage is empty"),
    ("estimation", "trusted_slope_mv_per_pct"): (
        "mV/%", "voltage alone resets SoC only where the OCV curve is at least this steep"),
    ("estimation", "stored_soc_sigma"): ("fraction 0..1", "how far a stored SoC may be off"),
    ("estimation", "learn_offset_when_open"): (
        "true | false", "contactors open: take the current reading as the sensor's offset"),
    ("open_wire", "test_every_s"): (
        "s", "the AFE's open-wire test is asked for this often, never while a cell bleeds "
        "(bleeding pauses to measure every balancing.measure_every_s)"),
    ("open_wire", "confirm_tests"): (
        "count", "a sense wire is open once this many tests in a row pulled its reading "
        "past the OPEN_WIRE threshold"),
    ("open_wire", "fallback"): (
        "passive | off", "a source that does not run the test (a replay, a rig's frame): "
        "passive = two neighbours moved apart, standing out from every other cell; "
        "off = no open-wire detection"),
    ("can", "keepalive_timeout_s"): (
        "s", "the inverter on a CAN link may be silent this long: then INVERTER_TIMEOUT"),
    ("can", "keepalive_action"): (
        "off | warn | derate | open", "INVERTER_TIMEOUT as nothing, a WARNING, an ALARM "
        "(limits cut) or a FAULT (contactors open)"),
}

# Protection quantity -> (unit, what it is).

ROW_FIELDS = ("threshold", "release", "debounce_s", "release_s")
FIXED_ROW_FIELDS = ("fault", "level", "quantity", "above")


# --- bounds -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bound:
    """An allowed interval; either end may be open or missing."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""
    named: str = ""  # what the bound is, said before its number: "the default"

    def admits(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open
                                      else not _beyond(value, self.low, above=False))
        high_ok = self.high is None or (value < self.high if self.high_open
                                        else not _beyond(value, self.high, above=True))
        return low_ok and high_ok

    def text(self) -> str:
        named = f"{self.named} " if self.named else ""
        if self.low is not None and self.high is not None:
            text = "must be within {}{}, {}{}".format(
                "(" if self.low_open else "[", _num(self.low), _num(self.high),
                ")" if self.high_open else "]")
        elif self.low is not None:
            text = (f"must be {'above' if self.low_open else 'at least'} "
                    f"{named}{_num(self.low)}")
        else:
            text = (f"must be {'below' if self.high_open else 'at most'} "
                    f"{named}{_num(self.high)}")
        return f"{text} ({self.why})" if self.why else text


def _num(x: float) -> str:
    """A bound as shown in a message: 12 significant digits, so 16 x 4.1 reads 65.6."""
    return f"{x:.12g}"


def _beyond(value: float, bound: float, above: bool) -> bool:
    """Whether `value` is past an inclusive `bound` by more than float rounding: a bound
    computed as 16 x 4.1 may be 65.59999999999999, and 65.6 as typed must pass it. The
    slack is relative: a bound of 0 is exact, or -1e-10 A would pass as a maximum current
    and a limit computed from it would be published negative."""
    slack = 1e-9 * abs(bound)
    return value > bound + slack if above else value < bound - slack


class _Pack(NamedTuple):
    chem: Chemistry
    n_series: int
    capacity_ah: float


POSITIVE = Bound(0.0, None, low_open=True)
MAX_MEASUREMENT_TIMEOUT_S = 10.0
NON_NEGATIVE = Bound(0.0)
FRACTION = Bound(0.0, 1.0)


def _v_window(p: _Pack, why: str = "the chemistry's voltage window") -> Bound:
    return Bound(0.0, p.chem.limits.v_max - p.chem.limits.v_min, low_open=True, why=why)


def _any_temp(p: _Pack) -> Bound:
    lim = p.chem.limits
    return Bound(min(lim.charge_temp_min_c, lim.discharge_temp_min_c),
                 max(lim.charge_temp_max_c, lim.discharge_temp_max_c),
                 why="the chemistry's temperature limits")


def _max_current(p: _Pack, c_rate: float, what: str) -> Bound:
    return Bound(0.0, c_rate * p.capacity_ah,
                 why=f"the chemistry's max {what} {_num(c_rate)} C x {_num(p.capacity_ah)} Ah")


# (section, field) -> the allowed values (a Bound for numbers, a tuple for words).
FIELD_RULES: dict[tuple[str, str], Callable[[_Pack], Bound | tuple[str, ...]]] = {
    # A longer timeout would leave the contactors closed on a rig that has gone silent.
    ("", "measurement_timeout_s"): lambda p: Bound(0.0, MAX_MEASUREMENT_TIMEOUT_S,
                                                   low_open=True,
                                                   why="a silent rig must open the contactors"),
    # "At rest" also means "not charging" to the charge-temperature rows: a larger one
    # would switch them off.
    ("", "rest_current_a"): lambda p: Bound(0.0, max(0.25 * p.capacity_ah, 1.0),
                                            why="a quarter C (1 A for a small pack): a pack "
                                            "charging faster is not at rest"),
    # The protocol's fault log page counts entries in 16 bits.
    ("", "fault_log_size"): lambda p: Bound(1, FAULT_LOG_SIZE_MAX,
                                            why="what the protocol's fault log pages can "
                                            "count"),
    ("limits", "max_charge_a"): lambda p: _max_current(p, p.chem.limits.max_charge_c, "charge"),
    ("limits", "max_discharge_a"): lambda p: _max_current(p, p.chem.limits.max_discharge_c,
                                                          "discharge"),
    ("limits", "ramp_a_per_s"): lambda p: POSITIVE,
    ("limits", "charge_taper_v"): _v_window,
    ("limits", "discharge_taper_v"): _v_window,
    ("limits", "soc_taper"): lambda p: Bound(0.0, 1.0, low_open=True),
    ("limits", "cold_charge_min_fraction"): lambda p: FRACTION,
    ("limits", "alarm_fraction"): lambda p: FRACTION,
    ("", "lockout_trips"): lambda p: Bound(1, 100),
    ("", "lockout_window_s"): lambda p: Bound(1.0, 7 * 86400.0, why="a week"),
    ("limits", "discharge_stop_margin_v"): lambda p: Bound(0.0, 0.5, why="half a volt"),
    ("limits", "charge_stop_margin_v"): lambda p: Bound(0.0, 0.5, why="half a volt"),
    # A trickle: a deeply discharged cell is charged gently until it is back in range.
    ("limits", "recovery_charge_a"): lambda p: Bound(0.0, 0.2 * p.capacity_ah,
                                                     why="a fifth C: a recovery charge is a "
                                                     "trickle"),
    ("limits", "recovery_timeout_s"): lambda p: Bound(60.0, 86400.0, why="a day"),
    ("limits", "empty_release_fraction"): lambda p: Bound(0.0, 0.5,
                                                          why="half the capacity"),
    # The positive contactor closes only onto a bus charged near the pack voltage.
    ("precharge", "done_fraction"): lambda p: Bound(0.8, 1.0,
                                                    why="closing onto a bus further below "
                                                    "the pack voltage is an inrush"),
    ("precharge", "done_current_a"): lambda p: Bound(0.0, max(1.0, 0.5 * p.capacity_ah),
                                                     low_open=True,
                                                     why="half C: a precharge still drawing "
                                                     "more has not finished"),
    ("precharge", "timeout_s"): lambda p: Bound(0.0, 60.0, low_open=True, why="a minute"),
    ("precharge", "retries"): lambda p: Bound(0, 10),
    ("precharge", "retry_wait_s"): lambda p: Bound(0.0, 600.0, why="ten minutes"),
    ("contactors", "weld_check_s"): lambda p: Bound(0.0, 60.0, low_open=True, why="a minute"),
    ("contactors", "weld_current_a"): lambda p: Bound(0.0, max(2.0, 0.5 * p.capacity_ah),
                                                      low_open=True,
                                                      why="half C flowing through open "
                                                      "contactors is a weld"),
    ("contactors", "weld_bus_fraction"): lambda p: Bound(0.0, 1.0, True, True),
    ("balancing", "mode"): lambda p: tuple(BalancingMode),
    ("balancing", "start_mv"): lambda p: Bound(0.0, 1e3 * _v_window(p).high, low_open=True,
                                               why="the chemistry's voltage window"),
    ("balancing", "stop_mv"): lambda p: NON_NEGATIVE,
    ("balancing", "min_cell_v"): lambda p: Bound(p.chem.limits.v_min, p.chem.limits.v_max,
                                                 why="the chemistry's absolute limits"),
    ("balancing", "when"): lambda p: tuple(BalancingWhen),
    ("balancing", "max_cells"): lambda p: Bound(1),
    ("balancing", "max_temp_c"): _any_temp,
    ("balancing", "measure_every_s"): lambda p: POSITIVE,
    ("balancing", "bleed_resistor_ohm"): lambda p: POSITIVE,
    ("balancing", "sense_wire_ohm"): lambda p: Bound(0.0, 1.0),
    ("estimation", "reference_power_w"): lambda p: POSITIVE,
    ("estimation", "current_noise_a"): lambda p: POSITIVE,
    ("estimation", "offset_sigma_a"): lambda p: POSITIVE,
    ("estimation", "period_s"): lambda p: Bound(0.0, 60.0, low_open=True),
    ("estimation", "voltage_noise_v"): lambda p: POSITIVE,
    ("estimation", "model_error_v"): lambda p: POSITIVE,
    ("estimation", "model_correlation_s"): lambda p: NON_NEGATIVE,
    ("estimation", "rest_settle_s"): lambda p: POSITIVE,
    ("estimation", "full_taper_c"): lambda p: Bound(0.0, 1.0, low_open=True),
    ("estimation", "empty_margin_v"): _v_window,
    ("estimation", "trusted_slope_mv_per_pct"): lambda p: POSITIVE,
    ("estimation", "stored_soc_sigma"): lambda p: Bound(0.0, 1.0, low_open=True),
    # An open sense wire blinds the voltage rows of two cells until it is found.
    ("open_wire", "test_every_s"): lambda p: Bound(0.0, 60.0, low_open=True,
                                                   why="an open wire must be found within "
                                                   "minutes"),
    ("open_wire", "confirm_tests"): lambda p: Bound(1, 10),
    ("open_wire", "fallback"): lambda p: tuple(OpenWireFallback),
    # Inverters send their keep-alive every second or so; a day of silence is no watch.
    ("can", "keepalive_timeout_s"): lambda p: Bound(1.0, 86400.0,
                                                    why="from a keep-alive period to a day"),
    ("can", "keepalive_action"): lambda p: tuple(KeepaliveAction),
}


def absolute_bound(fault: str, p: _Pack) -> Bound | None:
    """The chemistry's absolute limit on a protection fault's thresholds, if it has one."""
    lim, n = p.chem.limits, p.n_series
    if fault in ("CELL_OVERVOLTAGE", "CELL_UNDERVOLTAGE"):
        return Bound(lim.v_min, lim.v_max, why="the chemistry's absolute limits")
    if fault in ("PACK_OVERVOLTAGE", "PACK_UNDERVOLTAGE"):
        return Bound(n * lim.v_min, n * lim.v_max,
                     why=f"{n} x the chemistry's absolute cell limits")
    if fault in ("CHARGE_OVERTEMP", "CHARGE_UNDERTEMP"):
        return Bound(lim.charge_temp_min_c, lim.charge_temp_max_c,
                     why="the chemistry's charge temperature limits")
    if fault in ("DISCHARGE_OVERTEMP", "DISCHARGE_UNDERTEMP"):
        return Bound(lim.discharge_temp_min_c, lim.discharge_temp_max_c,
                     why="the chemistry's discharge temperature limits")
    return None


def row_bounds(row: ProtectionRow, pack: _Pack) -> dict[str, tuple[Bound, ...]]:
    """The bounds each settable field of a protection row keeps to on its own, in the order
    they are checked (a value is told of the first it breaks); the release against the
    threshold and the levels' order are checked beside them."""
    bound = absolute_bound(row.fault, pack)
    magnitude = bound is None and QUANTITY_BY_NAME[row.quantity].magnitude
    threshold = [bound or (POSITIVE if magnitude else None)]
    release = [bound or (NON_NEGATIVE if magnitude else None)]
    debounce = [NON_NEGATIVE]
    full = _full_pack_v(row, pack)
    if full is not None:
        threshold.append(full)
    if row.level == Level.FAULT:
        # A FAULT may act sooner, never later: a long debounce would switch it off.
        debounce.append(Bound(high=row.debounce_s, named="the default",
                              why="a FAULT may be made faster, not slower"))
        if bound is None:  # nor be loosened where the chemistry sets no limit
            why = "a FAULT threshold with no absolute limit may be tightened, not loosened"
            threshold.append(Bound(high=row.threshold, named="the default", why=why)
                             if row.above else
                             Bound(low=row.threshold, named="the default", why=why))
    return {"debounce_s": tuple(debounce), "release_s": (NON_NEGATIVE,),
            "threshold": tuple(b for b in threshold if b is not None),
            "release": tuple(b for b in release if b is not None)}


def _full_pack_v(row: ProtectionRow, pack: _Pack) -> Bound | None:
    """A full cell at rest (the charge branch at 100 %, `OcvCurve.full_v`) is no
    over-voltage: a CELL_OVERVOLTAGE threshold must lie above it, and a PACK_OVERVOLTAGE
    one above n_series times it; else a full pack would trip."""
    if not row.above or row.fault not in ("CELL_OVERVOLTAGE", "PACK_OVERVOLTAGE"):
        return None
    n, what = ((1, "a full cell's rest voltage, the OCV at 100 %")
               if row.fault == "CELL_OVERVOLTAGE"
               else (pack.n_series, f"{pack.n_series} x a full cell's rest voltage"))
    return Bound(low=n * pack.chem.ocv.full_v, low_open=True,
                 why=f"{what}: a full pack at rest would be an over-voltage")


def static_bounds(chem: Chemistry, n_series: int,
                  pack_capacity_ah: float) -> dict[tuple[str, ...], tuple[Bound, ...]]:
    """The bounds every numeric key keeps to on its own, by its dotted path split (as
    `bms.data.parameters` names keys): the range a host may show. A value within them may
    still be refused for how it stands to another key (`parse_config` says which)."""
    pack = _Pack(chem, n_series, pack_capacity_ah)
    cfg = default_config(chem, n_series, pack_capacity_ah)
    out: dict[tuple[str, ...], tuple[Bound, ...]] = {}
    for (section, name), rule in FIELD_RULES.items():
        bound = rule(pack)
        if isinstance(bound, Bound):
            out[(section, name) if section else (name,)] = (bound,)
    for key, row in zip(row_keys(cfg.protection), cfg.protection, strict=True):
        for name, bounds in row_bounds(row, pack).items():
            out[("protection", *key, name)] = bounds
    return out


# --- the shape of the file -----------------------------------------------------------


def config_sections(cfg: FirmwareConfig) -> dict[str, object]:
    """The tables of the file: FirmwareConfig fields that are themselves dataclasses."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if dataclasses.is_dataclass(getattr(cfg, f.name))}


def config_scalars(cfg: FirmwareConfig) -> list[str]:
    """The top-level keys: FirmwareConfig fields that are plain values."""
    sections = config_sections(cfg)
    return [f.name for f in dataclasses.fields(cfg)
            if f.name != "protection" and f.name not in sections]


def row_keys(rows: tuple[ProtectionRow, ...]) -> list[tuple[str, ...]]:
    """Each row's path under [protection]: (fault, level), or (fault, level, quantity) when
    the fault has more than one row at that level."""
    count = Counter((r.fault, r.level) for r in rows)
    keys = [(r.fault, r.level) if count[r.fault, r.level] == 1 else (r.fault, r.level, r.quantity)
            for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("two protection rows share a fault, level and quantity")
    return keys


# --- writing -------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    raise TypeError(f"cannot write {value!r} as TOML")


def _key_lines(items: list[tuple[str, object, str]]) -> list[str]:
    """`key = value  # comment` lines with the comments aligned."""
    texts = [f"{key} = {_toml_value(value)}" for key, value, _ in items]
    width = max(len(t) for t in texts)
    return [f"{t:<{width}}  # {comment}" for t, (_, _, comment) in zip(texts, items, strict=True)]


def _doc(section: str, name: str) -> str:
    unit, meaning = FIELD_DOCS.get((section, name), ("", "(undocumented)"))
    return f"{unit}: {meaning}" if unit else meaning


def config_to_toml(cfg: FirmwareConfig, chem: Chemistry) -> str:
    """The whole configuration as TOML, with the unit and meaning of every key."""
    lim = chem.limits
    lines = [
        f"# bms-emu firmware configuration ({chem.name} cells).",
        "# Units are SI; current is positive when charging. A file may set any subset of",
        "# these keys; the rest keep their defaults.",
        "",
        *_key_lines([(name, getattr(cfg, name), _doc("", name)) for name in config_scalars(cfg)]),
    ]
    for section, obj in config_sections(cfg).items():
        lines += ["", f"[{section}]"]
        lines += _key_lines([(f.name, getattr(obj, f.name), _doc(section, f.name))
                             for f in dataclasses.fields(obj)])
    lines += [
        "",
        "# Protection: each row trips when its quantity is beyond `threshold` for `debounce_s`",
        "# and clears once back beyond `release` for `release_s`; a FAULT latches until a",
        "# clear-faults request. A row's quantity and direction are fixed. Rows may be",
        "# tightened, never loosened past the chemistry's absolute limits:",
        f"#   cell voltage {_num(lim.v_min)}..{_num(lim.v_max)} V (pack: n_series times that),",
        f"#   charge temperature {_num(lim.charge_temp_min_c)}..{_num(lim.charge_temp_max_c)} "
        f"°C, discharge temperature {_num(lim.discharge_temp_min_c)}.."
        f"{_num(lim.discharge_temp_max_c)} °C;",
        "# a FAULT threshold with no such limit (currents, sensor plausibility) may only",
        "# move to the safe side of its default.",
    ]
    for key, row in zip(row_keys(cfg.protection), cfg.protection, strict=True):
        quantity = QUANTITY_BY_NAME[row.quantity]
        unit, what = quantity.unit, quantity.doc
        unit_text = f" ({unit})" if unit else ""
        beyond, back = ("above", "below") if row.above else ("below", "above")
        latch = "; latches until cleared" if row.level == Level.FAULT else ""
        lines += [
            "",
            f"# {row.fault} {row.level}: {row.quantity}, {what}{unit_text}, trips {beyond}"
            f"{latch}",
            f"[protection.{'.'.join(key)}]",
            *_key_lines([
                ("threshold", row.threshold, f"{unit or 'value'}: trips {beyond} this"),
                ("release", row.release, f"{unit or 'value'}: clears {back} this"),
                ("debounce_s", row.debounce_s, "s: how long beyond threshold before it trips"),
                ("release_s", row.release_s, "s: how long beyond release before it clears"),
            ]),
        ]
    return "\n".join(lines) + "\n"


# --- reading -------------------------------------------------------------------------

_BAD = object()  # a value of the wrong type: reported, and left out of later checks
INT32_LIMIT = 2**31  # integer parameters travel as int32 (the protocol's ValueKind.INT)


def _coerce(problems: Problems, where: str, value: object, default: object) -> object:
    """`value` as the type of `default`, or _BAD after adding a problem."""
    if isinstance(default, str):
        if isinstance(value, str):
            # a choice's word as its enum (the rules check the word); other text as it is
            kind = type(default)
            return kind(value) if isinstance(default, StrEnum) and value in list(kind) else value
        problems.add(where, value, "must be a string")
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
        problems.add(where, value, "must be true or false")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.add(where, value, "must be an integer")
        elif -INT32_LIMIT <= value < INT32_LIMIT:
            return value
        else:
            problems.add(where, value, f"must be within [{-INT32_LIMIT}, {INT32_LIMIT - 1}] "
                         "(the protocol carries integers in 32 bits)")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, value, "must be a number")
    elif not -sys.float_info.max <= value <= sys.float_info.max:  # an int past any float too
        problems.add(where, value, "must be a finite number")
    else:
        return float(value)
    return _BAD


def _check_rule(problems: Problems, where: str, value: object, rule) -> bool:
    """Whether `value` obeys `rule`; adds a problem when it does not."""
    if isinstance(rule, tuple):
        if value in rule:
            return True
        problems.add(where, value, f"must be one of {[str(word) for word in rule]}")
        return False
    if rule.admits(value):
        return True
    problems.add(where, value, rule.text())
    return False


def _read_table(problems: Problems, where: str, table: object, obj, section: str,
                pack: _Pack) -> dict[str, object]:
    """The values a file gives for one section that pass their own checks (`obj` holds the
    defaults); the others are reported."""
    if not isinstance(table, dict):
        problems.add(where, table, "must be a table")
        return {}
    allowed = [f.name for f in dataclasses.fields(obj)]
    values = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key not in allowed:
            problems.add(at, value, f"unknown field; allowed: {allowed}")
            continue
        value = _coerce(problems, at, value, getattr(obj, key))
        if value is _BAD:
            continue
        rule = FIELD_RULES.get((section, key))
        if rule is None or _check_rule(problems, at, value, rule(pack)):
            values[key] = value
    return values


def _row_tables(problems: Problems, data: object, keys: list[tuple[str, ...]]):
    """Yields (row index, its table, its dotted name) for each row the file sets."""
    if not isinstance(data, dict):
        problems.add("protection", data, "must be a table of [protection.FAULT.LEVEL] tables")
        return
    tree: dict = {}
    for i, key in enumerate(keys):
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = i

    def walk(node: dict, table: object, where: str, depth: int = 0):
        if not isinstance(table, dict):
            problems.add(where, table, "must be a table")
            return
        for name, sub in table.items():
            at = f"{where}.{name}"
            if name not in node:
                # by depth, not by the dots in `at`: a quoted key may hold dots of its own
                what = ("fault", "level", "quantity")[depth]
                problems.add(at, sub, f"unknown {what}; allowed: {list(node)}")
            elif isinstance(node[name], dict):
                yield from walk(node[name], sub, at, depth + 1)
            elif not isinstance(sub, dict):
                problems.add(at, sub, "must be a table")
            else:
                yield node[name], sub, at

    yield from walk(tree, data, "protection")


def _read_row(problems: Problems, where: str, table: dict, row: ProtectionRow,
              pack: _Pack) -> dict[str, float]:
    """The values a file gives for one protection row (`row` holds the defaults) that pass
    their checks; the others are reported."""
    values: dict[str, float] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in FIXED_ROW_FIELDS:
            direction = "above" if row.above else "below"
            problems.add(at, value, f"is fixed by the row ({row.quantity}, trips {direction}); "
                         f"allowed: {list(ROW_FIELDS)}")
        elif key not in ROW_FIELDS:
            problems.add(at, value, f"unknown field; allowed: {list(ROW_FIELDS)}")
        else:
            value = _coerce(problems, at, value, 0.0)
            if value is not _BAD:
                values[key] = value
    refused = set()
    for key, bounds in row_bounds(row, pack).items():
        if key in values and not all(_check_rule(problems, f"{where}.{key}", values[key], b)
                                     for b in bounds):  # the first bound broken is said
            refused.add(key)
            del values[key]
    if not refused & {"threshold", "release"} and ("threshold" in values
                                                   or "release" in values):
        t = values.get("threshold", row.threshold)
        r = values.get("release", row.release)
        if (r >= t) if row.above else (r <= t):
            side = "below" if row.above else "above"
            if "release" in values:
                problems.add(f"{where}.release", r,
                             f"must be {side} the threshold ({_num(t)}): the row trips "
                             f"{'above' if row.above else 'below'} it")
            else:
                other = "above" if row.above else "below"
                problems.add(f"{where}.threshold", t,
                             f"must be {other} the release ({_num(r)}); set a release too")
    return values


def parse_config(data: dict, source: str, chem: Chemistry, n_series: int,
                 pack_capacity_ah: float) -> FirmwareConfig:
    """The defaults for this pack with the file's values applied; raises InputError naming
    every bad key (with its value and what is allowed) and applies nothing if any is bad."""
    base = default_config(chem, n_series, pack_capacity_ah)
    pack = _Pack(chem, n_series, pack_capacity_ah)
    problems = Problems(source)
    sections = config_sections(base)
    scalars = config_scalars(base)
    allowed = [*scalars, *sections, "protection"]
    changes: dict[str, object] = {}

    for key, value in data.items():
        if key in scalars:
            value = _coerce(problems, key, value, getattr(base, key))
            rule = FIELD_RULES.get(("", key))
            if value is not _BAD and (rule is None or _check_rule(problems, key, value,
                                                                  rule(pack))):
                changes[key] = value
        elif key in sections:
            values = _read_table(problems, key, value, sections[key], key, pack)
            changes[key] = dataclasses.replace(sections[key], **values)
            if key == "balancing":
                _check_balancing(problems, changes[key], values)
        elif key != "protection":
            problems.add(key, value, f"unknown key or table; allowed: {allowed}")

    if "protection" in data:
        rows = list(base.protection)
        changed: set[int] = set()
        for i, table, where in _row_tables(problems, data["protection"],
                                           row_keys(base.protection)):
            before = len(problems.items)
            values = _read_row(problems, where, table, rows[i], pack)
            rows[i] = dataclasses.replace(rows[i], **values)
            if "threshold" in values and len(problems.items) == before:  # else said already
                changed.add(i)
        _check_level_order(problems, rows, changed)
        changes["protection"] = tuple(rows)

    problems.raise_if_any()
    return dataclasses.replace(base, **changes)


def _check_level_order(problems: Problems, rows: list[ProtectionRow], changed: set[int]) -> None:
    """In the direction of danger a fault's WARNING trips first, then its ALARM, then its
    FAULT: a changed threshold may not pass the next level's (or fall short of the last)."""
    keys = row_keys(tuple(rows))
    order = list(Level)
    groups: dict[tuple[str, str, bool], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row.fault, row.quantity, row.above), []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: order.index(rows[i].level))
        for milder, severer in zip(members, members[1:], strict=False):
            if not {milder, severer} & changed:
                continue
            low, high = rows[milder], rows[severer]
            if _beyond(low.threshold, high.threshold, low.above):
                i = milder if milder in changed else severer
                direction = "above" if low.above else "below"
                problems.add(f"protection.{'.'.join(keys[i])}.threshold", rows[i].threshold,
                             f"the {low.level} ({_num(low.threshold)}) must trip before the "
                             f"{high.level} ({_num(high.threshold)}): this row trips "
                             f"{direction} its threshold")


def _check_balancing(problems: Problems, merged, given: dict) -> None:
    if ("stop_mv" in given or "start_mv" in given) and merged.stop_mv >= merged.start_mv:
        where = "balancing.stop_mv" if "stop_mv" in given else "balancing.start_mv"
        value = merged.stop_mv if "stop_mv" in given else merged.start_mv
        other = (f"below balancing.start_mv ({_num(merged.start_mv)})" if "stop_mv" in given
                 else f"above balancing.stop_mv ({_num(merged.stop_mv)})")
        problems.add(where, value, f"must be {other}")


def load_config(path: str | Path, chem: Chemistry, n_series: int,
                pack_capacity_ah: float) -> FirmwareConfig:
    """Reads a firmware configuration file; raises InputError naming the file and every
    bad key."""
    return parse_config(read_toml(path), str(path), chem, n_series, pack_capacity_ah)
