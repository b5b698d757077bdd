"""The firmware's signals on the wire: every mapping between a Measurement or an Actuation
and its protocol frame, and the code tables that go with them (states, contactor bits,
commands, balancing modes, parameter kinds). Sans-IO: the links and the rig call these."""

from __future__ import annotations

import math

import numpy as np

from bms.core.signals import Actuation, Contactors, Measurement, State
from bms.data.config import BalancingMode
from bms.data.parameters import Limits, Parameter
from protocol import messages as pm

VALUE_KINDS = {"float": pm.ValueKind.FLOAT, "int": pm.ValueKind.INT,
               "bool": pm.ValueKind.BOOL, "choice": pm.ValueKind.CHOICE}
# A protocol command and the host request it makes of the firmware.
COMMAND_REQUESTS = {pm.Command.RUN: "run", pm.Command.STANDBY: "standby",
                    pm.Command.STORAGE: "storage", pm.Command.CLEAR_FAULTS: "clear-faults",
                    pm.Command.SERVICE_RESET: "service-reset"}
# The wire's code of a balancing mode and the firmware's mode share the member's name.
BALANCING_MODES: dict[pm.BalancingMode, BalancingMode] = {
    code: BalancingMode[code.name] for code in pm.BalancingMode}


def state_name(code: int) -> str:
    """The state of a wire code; an unknown code (a newer device) as `code N`."""
    try:
        return State.from_code(code).value
    except IndexError:
        return f"code {code}"


def contactor_bits(c: Contactors) -> int:
    bits = pm.CONTACTOR_BITS
    return ((bits["negative"] if c.negative else 0) | (bits["precharge"] if c.precharge else 0)
            | (bits["positive"] if c.positive else 0))


def contactors_of(bits: int) -> Contactors:
    b = pm.CONTACTOR_BITS
    return Contactors(negative=bool(bits & b["negative"]), precharge=bool(bits & b["precharge"]),
                      positive=bool(bits & b["positive"]))


def measurement_frame(m: Measurement, rig_seq: int, now_s: float,
                      bleeding: np.ndarray) -> pm.MeasurementFrame:
    """What a rig sends: `bleeding` is the bleed the readings were taken under. A 1.0 frame
    leaves out the pack voltage sensor and the open-wire test (protocol 1.1)."""
    return pm.MeasurementFrame(
        rig_seq, now_s, m.current_a, m.bus_voltage_v, contactor_bits(m.contactors),
        m.cell_voltage_v, m.temperature_c, np.asarray(bleeding, bool),
        pack_voltage_v=math.nan if m.pack_voltage_v is None else m.pack_voltage_v,
        open_wire_test_v=m.open_wire_test_v)


def measurement_of(frame: pm.MeasurementFrame) -> Measurement:
    """A NaN pack voltage is no pack voltage sensor (a 1.0 frame has none): the sum of the
    cells is then not checked against it."""
    pack_v = float(frame.pack_voltage_v)
    test_v = frame.open_wire_test_v
    return Measurement(
        cell_voltage_v=frame.cell_voltage_v.astype(np.float64),
        temperature_c=frame.temperature_c.astype(np.float64),
        current_a=float(frame.current_a),
        bus_voltage_v=float(frame.bus_voltage_v),
        contactors=contactors_of(frame.contactors),
        balancing=frame.balancing,
        pack_voltage_v=None if math.isnan(pack_v) else pack_v,
        open_wire_test_v=None if test_v is None else test_v.astype(np.float64),
    )


def actuation_frame(act: Actuation, rig_seq: int, now_s: float) -> pm.ActuationFrame:
    warning, alarm, fault = act.level_bitmaps
    return pm.ActuationFrame(
        rig_seq, now_s, State(act.state).code, contactor_bits(act.contactors),
        act.fault_bitmap, act.charge_limit_a, act.discharge_limit_a,
        math.nan if act.estimate is None else act.soc * 100.0,  # as Status: none before one
        np.asarray(act.balance_mask, bool),
        charge_voltage_limit_v=_or_nan(act.charge_voltage_limit_v),
        discharge_voltage_limit_v=_or_nan(act.discharge_voltage_limit_v),
        warning_bitmap=warning, alarm_bitmap=alarm, fault_level_bitmap=fault,
        rig_requests=pm.RIG_REQUEST_BITS["open_wire_test"] if act.open_wire_test else 0)


def _or_nan(x: float | None) -> float:
    return math.nan if x is None else x


def parameter_entry(p: Parameter, limits: Limits, persisted: bool) -> dict:
    """A ParameterList entry: what a client builds a settings form from. Every parameter
    may be read and written; a CHOICE's default travels as its word's position."""
    default = p.choices.index(limits.default) if p.kind == "choice" else limits.default
    bits = pm.OPEN_END_BITS
    return {"param_id": p.id, "kind": int(VALUE_KINDS[p.kind]), "name": p.name,
            "unit": p.unit, "choices": tuple(str(word) for word in p.choices),
            "min": math.nan if limits.low is None else float(limits.low),
            "max": math.nan if limits.high is None else float(limits.high),
            "open_ends": (bits["min"] if limits.low_open else 0)
            | (bits["max"] if limits.high_open else 0),
            "default": float(default),
            "access": pm.ACCESS_BITS["read"] | pm.ACCESS_BITS["write"],
            "persisted": persisted}


def actuation_of(frame: pm.ActuationFrame) -> Actuation:
    """The emulator's decisions as the plant takes them (state, SoC, voltage limits and
    levels ride along; a 1.0 frame has no voltage limits and asks for no open-wire test)."""
    cvl, dvl = float(frame.charge_voltage_limit_v), float(frame.discharge_voltage_limit_v)
    return Actuation(
        state_name(frame.state), contactors_of(frame.contactors),
        np.asarray(frame.balance_mask, bool), float(frame.charge_limit_a),
        float(frame.discharge_limit_a), frame.fault_bitmap, frame.soc_pct / 100.0,
        charge_voltage_limit_v=None if math.isnan(cvl) else cvl,
        discharge_voltage_limit_v=None if math.isnan(dvl) else dvl,
        open_wire_test=bool(frame.rig_requests & pm.RIG_REQUEST_BITS["open_wire_test"]),
        level_bitmaps=(frame.warning_bitmap, frame.alarm_bitmap, frame.fault_level_bitmap))
