"""Sodium-ion BMS firmware emulator: the firmware library.

The public API is below: the firmware, what crosses its boundary and the data it is made
from. The host side, the store, the links and the runtime are imported from their rooms
(`bms.host`, `bms.store`, `bms.links`, `bms.runtime`)."""

__version__ = "0.1.0"

from bms.core.firmware import Firmware  # noqa: E402 - the version first: the links read it
from bms.core.signals import (  # noqa: E402
    Actuation,
    Contactors,
    Estimate,
    FaultEvent,
    Measurement,
    State,
)
from bms.data.chemistry import Chemistry  # noqa: E402
from bms.data.config import BalancingMode, FirmwareConfig, default_config  # noqa: E402
from bms.data.faults import FAULT_CODES, Level  # noqa: E402
from bms.data.presets import PRESETS, resolve_chemistry  # noqa: E402
from bms.data.quantities import QUANTITIES, Quantity  # noqa: E402
from bms.data.validation import InputError  # noqa: E402

__all__ = [
    "FAULT_CODES", "PRESETS", "QUANTITIES", "Actuation", "BalancingMode", "Chemistry",
    "Contactors", "Estimate", "FaultEvent", "Firmware", "FirmwareConfig", "InputError",
    "Level", "Measurement", "Quantity", "State", "default_config", "resolve_chemistry",
]
