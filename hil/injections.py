"""Fault injection into the simulated pack, scheduled in simulated time.

On the command line: `AT:KIND[:key=value,...]`, for example
`600:sensor-offset:cell=3,offset_v=0.5` or `1h:cooling-failure`. Cells and sensors are
numbered from 1 as on a pack label. Each kind's parameters, defaults and allowed ranges
are one row of KINDS; one parser validates them all.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bms.data.durations import parse_duration_s
from bms.data.validation import Problems
from hil.sensors import OpenWire

if TYPE_CHECKING:
    from hil.pack import SimulatedPack


@dataclass(frozen=True)
class Param:
    """One parameter: kind of value, default (None = required), allowed range or choices."""

    kind: str  # "cell", "sensor", "float" or "choice"
    default: object = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""


_CELL = Param("cell")
_SENSOR = Param("sensor")
# The pack-level readings a `reading-lost` makes unreadable, by the Measurement field each is.
LOSABLE_READINGS = {"current": "current_a", "bus": "bus_voltage_v", "pack": "pack_voltage_v"}

KINDS: dict[str, dict[str, Param]] = {
    "sense-open": {"cell": _CELL, "bias_v": Param("float", 0.5, -5.0, 5.0, unit="V"),
                   "tau_s": Param("float", 2.0, 1e-3, 1e4, unit="s")},
    "sensor-offset": {"cell": _CELL, "offset_v": Param("float", None, -5.0, 5.0, unit="V")},
    "sensor-stuck": {"cell": _CELL, "value_v": Param("float", "present voltage", 0.0, 10.0,
                                                     unit="V")},
    "temp-sensor-open": {"sensor": _SENSOR, "value_c": Param("float", -60.0, -100.0, 200.0,
                                                             unit="°C")},
    "temp-sensor-short": {"sensor": _SENSOR, "value_c": Param("float", 150.0, -100.0, 200.0,
                                                              unit="°C")},
    "temp-sensor-offset": {"sensor": _SENSOR,
                           "offset_c": Param("float", None, -100.0, 100.0, unit="°C")},
    "current-offset": {"offset_a": Param("float", None, -1e5, 1e5, unit="A")},
    "pack-sensor-offset": {"offset_v": Param("float", None, -1e4, 1e4, unit="V")},
    "reading-lost": {"reading": Param("choice", "current", choices=tuple(LOSABLE_READINGS))},
    "internal-short": {"cell": _CELL,
                       "resistance_ohm": Param("float", 100.0, 1e-3, 1e9, unit="ohm")},
    "internal-short-removed": {"cell": _CELL},  # every short across the cell taken away
    "cooling-failure": {"factor": Param("float", 10.0, 1.0, 1e4, unit="x")},
    "contactor-weld": {"contactor": Param("choice", "positive",
                                          choices=("positive", "negative", "precharge"))},
    "precharge-open": {},
}


@dataclass(frozen=True)
class Injection:
    at_s: float
    kind: str
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.at_s:g}:{self.kind}" + (f":{args}" if args else "")


def parse_injection(text: str, n_series: int, n_temp_sensors: int) -> Injection:
    """Parses `AT:KIND[:key=value,...]`; raises InputError naming what is wrong."""
    problems = Problems(f"--inject {text}")
    at_text, _, rest = text.partition(":")
    kind, _, args = rest.partition(":")
    try:
        at_s = parse_duration_s(at_text)
    except ValueError as exc:
        problems.add("AT", at_text, str(exc))
        at_s = 0.0
    if kind not in KINDS:
        problems.add("KIND", kind, f"must be one of {', '.join(KINDS)}")
        problems.raise_if_any()
    spec = KINDS[kind]
    given: dict[str, str] = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in spec:
            problems.add(item, value or None,
                         f"{kind} takes {', '.join(spec) or 'no parameters'} as key=value")
        elif key in given:
            problems.add(key, value, f"is given twice (first {given[key]!r})")
        else:
            given[key] = value
    params: dict[str, object] = {}
    for key, p in spec.items():
        if key not in given:
            if p.default is None:
                problems.add(key, None, f"is required for {kind}")
            elif not isinstance(p.default, str) or p.kind == "choice":
                params[key] = p.default
            continue
        params[key] = _convert(problems, key, given[key], p, n_series, n_temp_sensors)
    problems.raise_if_any()
    return Injection(at_s, kind, params)


def _convert(problems: Problems, key: str, text: str, p: Param, n_series: int,
             n_temp: int) -> object:
    if p.kind == "choice":
        if text not in p.choices:
            problems.add(key, text, f"must be one of {', '.join(p.choices)}")
        return text
    count = {"cell": n_series, "sensor": n_temp}.get(p.kind)
    try:
        value = int(text) if count is not None else float(text)
    except ValueError:
        problems.add(key, text, "must be a whole number" if count else "must be a number")
        return None
    if count is not None:
        problems.check_range(key, value, 1, count)
    else:
        problems.check_range(key, value, p.low, p.high)
    return value


def apply_injection(pack: SimulatedPack, inj: Injection) -> None:
    """Makes the injected fault happen in the plant, from this moment on."""
    p = inj.params
    s = pack.sensors
    cell = p["cell"] - 1 if "cell" in p else None
    sensor = p["sensor"] - 1 if "sensor" in p else None
    match inj.kind:
        case "sense-open":
            pair = cell + 1 if cell + 1 < pack.n_series else cell - 1
            s.open_wires.append(OpenWire(cell, pair, p["bias_v"], p["tau_s"]))
            s.voltage_faults = True
        case "sensor-offset":
            s.voltage_offset_v[cell] += p["offset_v"]
            s.voltage_faults = True
        case "sensor-stuck":
            s.voltage_stuck[cell] = True
            s.voltage_stuck_v[cell] = p.get("value_v", float(pack.group_v[cell]))
            s.voltage_faults = True
        case "temp-sensor-open" | "temp-sensor-short":
            s.temp_forced[sensor] = True
            s.temp_forced_c[sensor] = p["value_c"]
            s.temp_faults = True
        case "temp-sensor-offset":
            s.temp_offset_c[sensor] += p["offset_c"]
            s.temp_faults = True
        case "current-offset":
            s.extra_current_offset_a += p["offset_a"]
        case "pack-sensor-offset":
            s.pack_v_offset_v += p["offset_v"]
        case "reading-lost":
            s.lost_readings.add(LOSABLE_READINGS[p["reading"]])
        case "internal-short":
            pack.cells.short_conductance_s[cell, 0] += 1.0 / p["resistance_ohm"]
        case "internal-short-removed":
            pack.cells.short_conductance_s[cell, 0] = 0.0
        case "cooling-failure":
            pack.thermal.set_cooling_factor(p["factor"])
        case "contactor-weld":
            pack.power_path.weld(p["contactor"])
        case "precharge-open":
            pack.power_path.precharge_open = True
        case _:
            raise ValueError(f"no injection kind {inj.kind!r}")


def injection_help() -> str:
    """One line per kind with its parameters, for --help."""
    lines = []
    for kind, spec in KINDS.items():
        parts = []
        for key, p in spec.items():
            if p.kind in ("cell", "sensor"):
                parts.append(f"{key}=N")
            elif p.kind == "choice":
                parts.append(f"{key}={'|'.join(p.choices)} (default {p.default})")
            else:
                default = "required" if p.default is None else f"default {p.default}"
                parts.append(f"{key}={p.unit} ({default})")
        lines.append(f"{kind}" + (f": {', '.join(parts)}" if parts else ""))
    return "; ".join(lines)


class InjectionSchedule:
    """Injections waiting for their time and those applied so far: one schedule for every
    clock that drives the pack (the headless runner's, the plant's). Each caller decides
    where in its tick `apply_due` runs."""

    def __init__(self, injections: Iterable[Injection] = ()):
        self.pending: list[Injection] = []
        self.applied: list[Injection] = []
        for inj in injections:
            self.add(inj)

    def add(self, inj: Injection) -> None:
        """Schedules `inj` after any due at the same time (the order they were given)."""
        bisect.insort_right(self.pending, inj, key=lambda i: i.at_s)

    def apply_due(self, pack: SimulatedPack, now_s: float) -> None:
        """Applies, in order, every injection due at or before `now_s`."""
        while self.pending and self.pending[0].at_s <= now_s:
            inj = self.pending.pop(0)
            apply_injection(pack, inj)
            self.applied.append(inj)
