"""The simulated DC connection between the simulated inverter and the simulated pack: what
the inverter's power stage does to the battery's terminals, sent on the CAN bus because a
simulation has no copper (`dbc/dc_bus.dbc`, one frame, `dc_setpoint`). The inverter sends
it every 100 ms; the pack (`hil.inverter_load`) draws what it says. No real device sends or
takes it: a real BMS on the bus counts it as an unknown identifier.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from bms.links.can.bus_spec import python_can

if TYPE_CHECKING:
    import can
    from cantools.database.can import Database, Message

SETPOINT = "dc_setpoint"


@dataclass(frozen=True)
class DcSetpoint:
    """A current source limited by a voltage, as a charger's and an inverter's power stage
    are: `current_a` at most (positive: into the battery), holding the terminals at most
    (charging) or at least (discharging) at `voltage_limit_v`. 0 A: the stage is off."""

    current_a: float
    voltage_limit_v: float


OFF = DcSetpoint(0.0, 0.0)


def dbc_text() -> str:
    return resources.files(__package__).joinpath("dbc", "dc_bus.dbc").read_text()


@functools.cache
def _database() -> Database:
    import cantools  # here, not at the top: `run` and `serve` import this module (start-up time)

    return cantools.database.load_string(dbc_text(), "dbc", strict=True)


def setpoint_message() -> Message:
    return _database().get_message_by_name(SETPOINT)


def bitrate() -> int:
    """The bus's bitrate where an interface takes one (the DBC's Baudrate: the frame sets')."""
    return int(_database().dbc.attributes["Baudrate"].value)


def period_s() -> float:
    """How often the inverter sends its setpoint (the DBC's GenMsgCycleTime)."""
    return setpoint_message().cycle_time / 1000.0


def encode_setpoint(setpoint: DcSetpoint) -> can.Message:
    message = setpoint_message()
    return python_can().Message(arbitration_id=message.frame_id, is_extended_id=True,
                                data=message.encode({"current_setpoint": setpoint.current_a,
                                                     "voltage_limit": setpoint.voltage_limit_v}))


def is_setpoint(frame: can.Message) -> bool:
    message = setpoint_message()
    return (frame.arbitration_id == message.frame_id and frame.is_extended_id
            and not frame.is_remote_frame and not frame.is_error_frame)


def decode_setpoint(frame: can.Message) -> DcSetpoint | None:
    """The setpoint a frame carries; None for a frame of another identifier or a setpoint
    of the wrong length."""
    if not is_setpoint(frame) or len(frame.data) != setpoint_message().length:
        return None
    values = setpoint_message().decode(bytes(frame.data))
    return DcSetpoint(float(values["current_setpoint"]), float(values["voltage_limit"]))
