"""What the simulated inverter does with what the battery said, as a UPS inverter/charger
keeps to a BMS on CAN (Victron's DVCC and SMA's external-BMS mode work so: README,
"Connect an inverter"). Pure: the view, the mains and the load in, a mode and a DC
setpoint out.

- No limits or pack voltage from the battery yet, or no limits for BMS_LOST_S: the power
  stage is off.
- Mains up: charge, if the battery allows it, as a current source of the CCL held to the
  CVL - constant current, then constant voltage with the current tapering as the cells
  fill. CV from when the pack stands at the CVL until the charge stops, as a charger's
  absorption stage. Force charge is shown (the inverter charges whenever the mains is
  up anyway).
- Mains down: the battery carries the load - its power over the pack voltage, at most the
  DCL, drawing the terminals down to the DVL at most. The inverter drops the load
  (cut-off, held until the mains returns, as a UPS does) when the battery forbids
  discharge (its enable off or a DCL of 0), asks for a force charge, or stands at its
  DVL.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from hil.battery_view import BatteryView
from hil.dc_bus import OFF, DcSetpoint

BMS_LOST_S = 5.0  # ours: the makers do not publish theirs
VOLTAGE_BAND = 0.002  # the share of a voltage limit within which the pack stands at it


class Mode(enum.StrEnum):
    WAITING = "waiting"  # no limits from the battery yet
    BMS_LOST = "BMS lost"  # its limits stopped coming: power stage off
    CHARGE_CC = "charge CC"
    CHARGE_CV = "charge CV"
    FORCE_CHARGE = "force charge"
    IDLE = "idle"  # nothing to do, or charging not allowed
    DISCHARGE = "discharge"  # mains down: the load on the battery
    CUT_OFF = "cut-off"  # mains down: the load dropped until the mains returns


@dataclass(frozen=True)
class Decision:
    mode: Mode
    setpoint: DcSetpoint
    limited: bool = False  # discharging less than the load asks: held to the DCL
    cut_off: str | None = None  # why the load was dropped (kept until the mains returns)


def decide(view: BatteryView, now_s: float, mains_up: bool, load_w: float,
           last: Decision) -> Decision:
    """`last`: the decision before, so that a dropped load stays dropped and a charge in
    CV stays in CV."""
    cut_off = last.cut_off
    if view.limits_s is None or not math.isfinite(view.pack_v):
        return Decision(Mode.WAITING, OFF, cut_off=cut_off)
    if now_s - view.limits_s > BMS_LOST_S:
        return Decision(Mode.BMS_LOST, OFF, cut_off=cut_off)
    if mains_up:
        if not (view.charge_enable and view.ccl_a > 0.0):
            return Decision(Mode.IDLE, OFF)
        at_cvl = (last.mode == Mode.CHARGE_CV
                  or view.pack_v >= view.cvl_v * (1.0 - VOLTAGE_BAND))
        mode = (Mode.FORCE_CHARGE if view.force_charge else
                Mode.CHARGE_CV if at_cvl else Mode.CHARGE_CC)
        return Decision(mode, DcSetpoint(view.ccl_a, view.cvl_v))
    if load_w <= 0.0:
        return Decision(Mode.IDLE, OFF)
    cut_off = cut_off or _why_not_discharge(view)
    if cut_off is not None:
        return Decision(Mode.CUT_OFF, OFF, cut_off=cut_off)
    wanted_a = load_w / max(view.pack_v, 1.0)
    current_a = min(wanted_a, view.dcl_a)
    return Decision(Mode.DISCHARGE, DcSetpoint(-current_a, view.dvl_v), current_a < wanted_a)


def _why_not_discharge(view: BatteryView) -> str | None:
    if not view.discharge_enable or not view.dcl_a > 0.0:
        return "the battery forbids discharge"
    if view.force_charge:
        return "the battery asks for a force charge"
    if view.pack_v <= view.dvl_v * (1.0 + VOLTAGE_BAND):
        return f"the battery at its DVL ({view.dvl_v:.1f} V)"
    return None
