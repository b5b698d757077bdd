"""When a running pack saves to its store, and how it resumes from it at start.

Why and how: docs/internals.md, bms/store/persistence.py.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from bms.core.firmware import Firmware
from bms.core.signals import Actuation
from bms.data.chemistry import Chemistry
from bms.data.config import FirmwareConfig, default_config
from bms.data.config_toml import parse_config
from bms.data.parameters import ConfigChange, changes_between
from bms.store.nvm import NvmStore, Stored
from bms.store.retained import restore, retain

log = logging.getLogger(__name__)

DEFAULT_SAVE_PERIOD_S = 10.0


class Keeper:
    """Saves one firmware's state to its store."""

    def __init__(self, store: NvmStore, fw: Firmware, period_s: float = DEFAULT_SAVE_PERIOD_S):
        self.store = store
        self.fw = fw
        self.period_s = period_s
        self.saved_at_s: float | None = None
        self._state = fw.state
        self.saves = 0
        self.failures = 0

    def after_step(self, now_s: float, act: Actuation) -> None:
        if act.events:
            reason = "fault"
        elif act.state != self._state:
            reason = "state"
        elif self.saved_at_s is None or now_s - self.saved_at_s >= self.period_s:
            reason = "period"
        else:
            return
        self._state = act.state
        self.save(now_s, reason)

    def save(self, now_s: float, reason: str) -> None:
        fw = self.fw
        try:
            self.store.save(retain(fw), fw.soc if fw.estimate is not None else None, now_s,
                            reason, fw.cfg.fault_log_size)
        except sqlite3.Error:
            self.failures += 1
            log.exception("saving to %s failed (%s save at %.1f s); trying again at the next",
                          self.store.path, reason, now_s)
            return
        self.saved_at_s = now_s
        self.saves += 1

    def config_written(self, who: str, changes: list[ConfigChange], overrides: dict,
                       now_s: float) -> None:
        """Device.on_config_change: the write and its log line, saved before the answer."""
        try:
            self.store.save_config(overrides, changes, who, now_s)
        except sqlite3.Error:
            self.failures += 1
            log.exception("saving a configuration write to %s failed", self.store.path)

    def close(self, now_s: float) -> None:
        """The last save, then the store is released."""
        try:
            self.save(now_s, "shutdown")
        finally:
            self.store.close()


@dataclass(frozen=True, eq=False)
class Resumed:
    firmware: Firmware
    overrides: dict  # the configuration in effect, as TOML-shaped overrides
    stored: Stored | None  # what the store held (None: a new store)
    lost: list[str]  # what could not be restored, in words


def resume(store: NvmStore, chem: Chemistry, n_series: int, capacity_ah: float,
           given: tuple[FirmwareConfig, dict, str] | None) -> Resumed:
    """A firmware resumed from `store`: its configuration (the one `given` at start as
    (config, overrides, source) when there is one, logged as a write by that source, else
    the stored one), SoC, state of health, counters, latched faults and fault log. How
    long the pack was off comes from the wall-clock times of the last save and now."""
    stored = store.load()
    overrides = {} if stored is None else stored.overrides
    config = None
    if overrides:
        config = parse_config(overrides, f"{store.path} (its stored configuration)", chem,
                              n_series, capacity_ah)
    if given is not None:
        new_config, new_overrides, source = given
        before = config or default_config(chem, n_series, capacity_ah)
        store.save_config(new_overrides, changes_between(before, new_config), source, 0.0)
        config, overrides = new_config, new_overrides
    fw = Firmware(chem, n_series, capacity_ah, config)
    lost: list[str] = []
    if stored is not None and stored.retained is not None:
        off_s = max(store.unix_s() - stored.saved_unix_s, 0.0)
        lost = restore(fw, stored.retained, off_s)
    return Resumed(fw, overrides, stored, lost)
