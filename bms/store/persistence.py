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
from bms.store.nvm import ConfigLogEntry, NvmError, NvmStore, Stored
from bms.store.retained import restore, retain

log = logging.getLogger(__name__)

DEFAULT_SAVE_PERIOD_S = 10.0


class SaveFailed(Exception):
    """A save that did not reach the store, in words: the store and the error."""


class Keeper:
    """Saves one firmware's state to its store. Whatever the store does, the step goes on:
    a failed save is counted and the next save point tries again; a run of failures is
    logged once as it starts and once as it ends, with its count."""

    def __init__(self, store: NvmStore, fw: Firmware, period_s: float = DEFAULT_SAVE_PERIOD_S):
        self.store = store
        self.fw = fw
        self.period_s = period_s
        self.saved_at_s: float | None = None  # the last save that reached the store
        self._tried_at_s: float | None = None  # the last attempt: the period counts from it
        self._state = fw.state
        self._held_empty = fw.empty_charge_as is not None
        self.saves = 0
        self.failures = 0  # failed saves since start, configuration writes included
        self.last_error: str | None = None
        self.failing_since_s: float | None = None  # the present run of failures began
        self._failures_before = 0  # failures before the present run

    @property
    def failing(self) -> bool:
        """The last save failed: the store does not hold the pack as it is now."""
        return self.failing_since_s is not None

    def after_step(self, now_s: float, act: Actuation) -> None:
        if act.events:
            reason = "fault"
        elif act.state != self._state:
            reason = "state"
        elif (self.fw.empty_charge_as is not None) != self._held_empty:
            reason = "empty hold"  # engaged or released: a power-down must not lose it
        elif self._tried_at_s is None or now_s - self._tried_at_s >= self.period_s:
            reason = "period"
        else:
            return
        self._state = act.state
        self._held_empty = self.fw.empty_charge_as is not None
        self.save(now_s, reason)

    def save(self, now_s: float, reason: str) -> bool:
        """False when the save failed (what it would have saved goes with the next one)."""
        fw = self.fw
        self._tried_at_s = now_s
        try:
            self.store.save(retain(fw), fw.soc if fw.estimate is not None else None, now_s,
                            reason)
        except Exception as exc:  # noqa: BLE001 - a failing store never stops the step
            self._failed(f"the {reason} save at {now_s:.1f} s", now_s, exc)
            return False
        if self.failing_since_s is not None:
            log.warning("saving to %s works again at %.1f s, after %d failed saves since "
                        "%.1f s", self.store.path, now_s,
                        self.failures - self._failures_before, self.failing_since_s)
            self.failing_since_s = None
        self.saved_at_s = now_s
        self.saves += 1
        return True

    def config_written(self, who: str, changes: list[ConfigChange], overrides: dict,
                       now_s: float) -> None:
        """Device.on_config_change: the write and its log line, saved before the write is
        put in effect. SaveFailed when it could not be: the device then refuses the write."""
        try:
            self.store.save_config(overrides, changes, who, now_s)
        except Exception as exc:  # noqa: BLE001 - refused, whatever the store did
            self._failed(f"a configuration write by {who} at {now_s:.1f} s", now_s, exc)
            raise SaveFailed(f"saving to the store {self.store.path} failed: "
                             f"{self.last_error}") from None

    # --- what the device reads and writes of the store (bms.host.device.Store) ----------

    @property
    def boot(self) -> int:
        return self.store.boot

    def time_set(self, offset_s: float, now_s: float) -> None:
        """A host's SetTime: this boot's wall clock offset, kept for the entries of this
        boot after a restart. A failure is counted as a failed save, not refused: the
        offset holds in memory for as long as the boot lasts."""
        try:
            self.store.set_utc_offset(offset_s)
        except Exception as exc:  # noqa: BLE001 - whatever the store did
            self._failed(f"the wall clock set at {now_s:.1f} s", now_s, exc)

    def utc_offsets(self) -> dict[int, float]:
        return self.store.utc_offsets()

    def config_log_total(self) -> int:
        return self.store.config_log_total()

    def config_log(self, start: int, count: int) -> list[ConfigLogEntry]:
        return self.store.config_log(start, count)

    def restarted(self, fw: Firmware, now_s: float) -> None:
        """The firmware restarted inside this process (a host's Reset) as `fw`: a new boot
        in the store, whose saves are `fw`'s. The caller saved the old firmware first."""
        self.fw = fw
        self._state = fw.state
        try:
            self.store.new_boot()
        except Exception as exc:  # noqa: BLE001 - the entries go on under the old boot
            self._failed(f"the new boot at {now_s:.1f} s", now_s, exc)

    def _failed(self, what: str, now_s: float, exc: Exception) -> None:
        self.failures += 1
        self.last_error = (str(exc) if isinstance(exc, sqlite3.Error | OSError)
                           else f"{type(exc).__name__}: {exc}")
        if self.failing_since_s is None:
            self.failing_since_s = now_s
            self._failures_before = self.failures - 1
            # A traceback only for what is not the disk's doing (that would be a bug).
            log.error("saving to %s failed (%s): %s; the firmware carries on, each save "
                      "point tries again, and this log says when saving works again",
                      self.store.path, what, self.last_error,
                      exc_info=not isinstance(exc, sqlite3.Error | OSError))

    def figures(self) -> dict:
        """The store's figures for `serve --stats` and `run`'s summary."""
        return {"path": str(self.store.path), "saves": self.saves, "failures": self.failures,
                "failing": self.failing, "last_error": self.last_error}

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
           given: tuple[FirmwareConfig, dict, str] | None, autostart: bool = True) -> Resumed:
    """A firmware resumed from `store` (`autostart`: see Firmware): its configuration (the
    one `given` at start as (config, overrides, source) when there is one, logged as a
    write by that source, else the stored one), SoC, state of health, counters, latched
    faults and fault log. How long the pack was off comes from the wall-clock times of the
    last save and now."""
    overrides = store.overrides() or {}
    config = None
    if overrides:
        config = parse_config(overrides, f"{store.path} (its stored configuration)", chem,
                              n_series, capacity_ah)
    written = None
    if given is not None:
        new_config, new_overrides, source = given
        before = config or default_config(chem, n_series, capacity_ah)
        written = (new_overrides, changes_between(before, new_config), source)
        config, overrides = new_config, new_overrides
    fw = Firmware(chem, n_series, capacity_ah, config, autostart=autostart)
    stored = store.load(fw.cfg.fault_log_size)  # the store may keep more: the pack's history
    if written is not None:
        try:
            store.save_config(*written, 0.0)
        except sqlite3.Error as exc:
            raise NvmError(store.path, f"cannot take the configuration given at start ({exc})"
                           ": free space on its disk, or give another store") from None
    lost: list[str] = []
    if stored is not None and stored.retained is not None:
        off_s = max(store.unix_s() - stored.saved_unix_s, 0.0)
        lost = restore(fw, stored.retained, off_s)
    return Resumed(fw, overrides, stored, lost)
