"""What the firmware and its store have recorded, as the entries of the protocol's paged
reads and pushed events: fault log entries and FaultEvents (with their boot and UTC time),
the lifetime counters, each cell's health and the configuration-write log. Sans-IO: the
device hands in what it holds.

Why and how: docs/internals.md, bms/host/records.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from bms.core.counters import Counters
from bms.core.estimator import Estimator
from bms.core.fault_log import LogEntry
from bms.core.signals import FaultEvent, State
from bms.data.faults import Level
from protocol import messages as pm

TEXT_BYTES = 255  # what a Text field holds
# A counter's unit from a token of its name (`charge_in_ah`, `extremes.cell_v_max`).
UNIT_TOKENS = {"v": "V", "a": "A", "c": "°C", "s": "s", "ah": "Ah", "wh": "Wh", "pct": "%"}
EQUIVALENT_CYCLES = "equivalent_cycles"  # the charge out over the nominal capacity


class ConfigLogRow(Protocol):
    """A configuration write as the store logged it (`bms.store.nvm.ConfigLogEntry`)."""

    boot: int
    t_s: float
    who: str
    param: str
    old_json: str | None
    new_json: str | None


def utc_of(t_s: float, boot: int, utc_offsets: Mapping[int, float]) -> float:
    """The UTC of device time `t_s` in `boot`; NaN when no host set that boot's clock."""
    offset = utc_offsets.get(boot)
    return math.nan if offset is None else t_s + offset


def log_entry(entry: LogEntry, boot_now: int, utc_offsets: Mapping[int, float]) -> dict:
    """A FaultLogPage entry. An entry restored from the store, or recorded before a Reset,
    carries its boot in its snapshot; one recorded in this boot does not."""
    e, snap = entry.event, entry.snapshot
    boot = int(snap.get("boot", boot_now))
    return {"t_s": e.t_s, "code": e.code, "level": Level(e.level).code,
            "action": 1 if e.action == "raised" else 0,
            "index": -1 if e.index is None else e.index,
            "value": math.nan if e.value is None else e.value,
            "state": State(snap.get("state", State.INIT)).code,
            "soc_pct": math.nan if snap.get("soc_pct") is None else snap["soc_pct"],
            "boot": boot, "utc_s": utc_of(e.t_s, boot, utc_offsets)}


def fault_events(events: Sequence[FaultEvent], recorded: int, boot: int,
                 utc_offsets: Mapping[int, float]) -> list[pm.FaultEvent]:
    """A step's events as FaultEvent messages, once the step has logged them: the log has
    `recorded` entries in all, the last `len(events)` of them these events, in order."""
    first = recorded - len(events)
    return [pm.FaultEvent(
        log_index=first + k, boot=boot, time_s=e.t_s, utc_s=utc_of(e.t_s, boot, utc_offsets),
        code=e.code, level=Level(e.level).code, action=1 if e.action == "raised" else 0,
        index=-1 if e.index is None else e.index,
        value=math.nan if e.value is None else e.value) for k, e in enumerate(events)]


def counter_entries(counters: Counters, capacity_ah: float) -> list[dict]:
    """The lifetime counters as (dotted name, unit, value) in a fixed order: the counters'
    own fields as `Counters.as_dict` gives them, nested ones by dotted name, then the
    equivalent full cycles. An extreme not seen yet is NaN."""
    flat: dict[str, float | None] = {}
    for name, value in counters.as_dict().items():
        if isinstance(value, dict):
            flat.update({f"{name}.{key}": v for key, v in value.items()})
        else:
            flat[name] = value
    flat[EQUIVALENT_CYCLES] = counters.cycles(capacity_ah)
    return [{"name": name, "unit": unit_of(name),
             "value": math.nan if value is None else float(value)}
            for name, value in flat.items()]


def unit_of(name: str) -> str:
    """The unit a counter's name carries (its last unit token); "" for a count."""
    tokens = [t for part in name.split(".") for t in part.split("_")]
    return next((UNIT_TOKENS[t] for t in reversed(tokens) if t in UNIT_TOKENS), "")


def cell_health_entries(est: Estimator) -> list[dict]:
    """Each cell's learnt capacity (its share of the nominal: SoH), its resistance to a
    steady current at the last estimate (NaN before the first) and the learnt resistance
    relative to the chemistry's table (100: as new)."""
    resistance_ohm = est.cell_resistance_ohm()
    resistance_ohm = np.where(resistance_ohm > 0.0, resistance_ohm, np.nan)
    soh_pct = est.capacity_ah / est.nominal_ah * 100.0
    return [{"soh_pct": float(soh), "capacity_ah": float(cap), "resistance_ohm": float(r),
             "resistance_pct": float(f * 100.0)}
            for soh, cap, r, f in zip(soh_pct, est.capacity_ah, resistance_ohm, est.r_factor,
                                      strict=True)]


def config_log_entry(row: ConfigLogRow, utc_offsets: Mapping[int, float]) -> dict:
    """A ConfigLogPage entry; texts cut to what the field holds (JSON values are short)."""
    return {"boot": row.boot, "t_s": row.t_s, "utc_s": utc_of(row.t_s, row.boot, utc_offsets),
            "who": cut(row.who), "param": cut(row.param),
            "old": cut(row.old_json or "null"), "new": cut(row.new_json or "null")}


def cut(text: str, max_bytes: int = TEXT_BYTES) -> str:
    """The longest prefix of `text` whose UTF-8 fits `max_bytes`."""
    return text.encode()[:max_bytes].decode(errors="ignore")
