"""A host's Reset: a new firmware as after a power cycle, inside the running emulator.

The new firmware takes what a store hands a firmware at power-up (`bms.store.retained`:
SoC, state of health, counters, latched faults and lockouts, the fault log, STORAGE) and
the configuration in effect; everything else starts afresh (state machine, debouncers,
timers, the measurement timeout counted from its first step); the inverter keep-alive
watch is the field link's and goes on. It is handed over in memory, with or without a
store, so that a Reset never clears what only CLEAR_FAULTS or SERVICE_RESET may, and never
loses what a failing store could not save.
"""

from __future__ import annotations

from bms.core.firmware import Firmware
from bms.store.retained import restore, retain


def restarted(old: Firmware, capacity_ah: float, boot: int) -> tuple[Firmware, list[str]]:
    """(the new firmware, what could not be handed over, in words). `capacity_ah` is the
    pack's; `boot` the boot ending: the entries the old firmware logged in it are marked
    with it, as the store marks those it hands back, so that the log still tells the boots
    apart once the next one has begun. Contactors the runtime opened for the restart, or a
    weld check under way, get the weld check an opening gets (`contactors.weld_check_s`
    after the new firmware's first step: `bms.store.retained`)."""
    for entry in old.log.entries:
        entry.snapshot.setdefault("boot", boot)
    fw = Firmware(old.chem, old.n_series, capacity_ah, old.cfg, autostart=old.autostart)
    lost = restore(fw, retain(old), off_s=0.0)
    fw.inverter_watch = old.inverter_watch  # the field link's, which feeds it, goes on
    return fw, lost
