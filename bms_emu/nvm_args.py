"""The persistent-store options of `serve` and `run`, and the one place a pack's firmware
is resumed from its store (or made afresh without one)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bms.core.firmware import Firmware
from bms.data.validation import Problems
from bms.store.nvm import NvmStore, PackIdentity, Stored
from bms.store.persistence import DEFAULT_SAVE_PERIOD_S, Keeper, resume
from hil.pack_options import PackConfig
from protocol.messages import Mode


def data_dir() -> Path:
    """Where a user's stores live by default: $XDG_DATA_HOME/bms-emu/nvm
    (~/.local/share/bms-emu/nvm)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "bms-emu" / "nvm"


def add_nvm_arguments(p, by_default: bool) -> None:
    """`by_default`: a store unless --no-nvm (serve); else only with --nvm (run)."""
    where = (f"default: {data_dir()}/<pack-id>-<sim|hil>.sqlite" if by_default
             else "default: none, the run keeps nothing")
    p.add_argument("--nvm", metavar="PATH",
                   help="persistent store (SQLite): configuration, SoC and health, counters, "
                   f"latched faults and the fault log survive a restart ({where})")
    if by_default:
        p.add_argument("--no-nvm", action="store_true",
                       help="keep nothing: start afresh and save nothing")
    p.add_argument("--nvm-period", type=float, default=DEFAULT_SAVE_PERIOD_S, metavar="S",
                   help="seconds of emulator time between periodic saves (a save also "
                   "follows every fault event, state change and configuration write)")


def check_nvm_arguments(args, problems: Problems) -> None:
    problems.check_range("--nvm-period", args.nvm_period, 0.01, 86400.0)
    if getattr(args, "no_nvm", False) and args.nvm:
        problems.add("--no-nvm", True, "and --nvm PATH contradict each other: give one")


def nvm_path(args, mode: Mode) -> Path | None:
    """The store's path, or None for no store; the default needs `args.pack_id`, and is
    one a mode: a rig's pack (`serve --hil`) is not the simulated one (`serve --sim`)."""
    if args.nvm:
        return Path(args.nvm)
    if getattr(args, "no_nvm", True):
        return None
    return data_dir() / f"{instance_name(args.pack_id, mode)}.sqlite"


def instance_name(pack_id: str, mode: Mode) -> str:
    """One pack in one mode: its store's default name, and the emulator's serial number."""
    return f"{pack_id}-{mode.name.lower()}"


@dataclass(frozen=True, eq=False)
class Started:
    firmware: Firmware
    overrides: dict  # the configuration in effect, TOML-shaped
    keeper: Keeper | None
    stored: Stored | None  # what the store held at start
    lost: list[str]  # what could not be restored, in words


def start_firmware(args, pc: PackConfig, mode: Mode, autostart: bool = True) -> Started:
    """The pack's firmware: resumed from its store when there is one (a --config file
    given at start replaces the stored configuration, and is logged as a write), else
    made afresh from --config; `autostart`: `run` requested at boot (see Firmware). Raises
    NvmError for a store that cannot be used, or is another pack's (pack id, mode,
    chemistry, cells, capacity)."""
    path = nvm_path(args, mode)
    if path is None:
        fw = Firmware(pc.chem, pc.n_series, pc.capacity_ah, pc.config, autostart=autostart)
        return Started(fw, pc.overrides, None, None, [])
    if not args.nvm:
        path.parent.mkdir(parents=True, exist_ok=True)
    pack = PackIdentity(args.pack_id, mode.name.lower(), pc.chem.name, pc.n_series,
                        pc.capacity_ah)
    store = NvmStore(path, pack, time.time)
    try:
        given = ((pc.config, pc.overrides, f"--config {args.config}")
                 if pc.config is not None else None)
        r = resume(store, pc.chem, pc.n_series, pc.capacity_ah, given, autostart)
    except BaseException:
        store.close()
        raise
    return Started(r.firmware, r.overrides, Keeper(store, r.firmware, args.nvm_period),
                   r.stored, r.lost)


def describe_start(started: Started) -> str | None:
    """One line on what was resumed, for the start-up banner."""
    if started.keeper is None:
        return None
    where = started.keeper.store.path
    s = started.stored
    if s is None or s.retained is None:
        return f"store {where}: new"
    latched = [*(f for f, _, _ in s.retained.latched_rows), *s.retained.event_faults]
    soc = "unknown" if s.soc is None else f"{s.soc * 100.0:.1f} %"
    text = (f"store {where}: resumed boot {s.boot}'s save at {s.saved_at_s:.1f} s, SoC {soc}, "
            f"{len(s.retained.log)} fault log entries")
    if latched:
        text += f", latched: {', '.join(sorted(set(latched)))}"
    return text + "".join(f"; not restored: {item}" for item in started.lost)
