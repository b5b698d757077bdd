"""Protocol messages as plain dicts with names: what `query --json` prints and what
`monitor` renders.

States, faults, levels and contactors appear by name (the names of `bms.core.signals`,
`bms.data.faults` and `protocol.messages`), SoC in percent as `soc_pct`, current positive when
charging, cell and sensor indices 0-based (`index`), arrays as lists, and NaN or an
infinite value ("no reading", "not discharging") as None so that the output is strict JSON.
"""

from __future__ import annotations

import math

import numpy as np

from bms.data.faults import FAULT_NAMES, Level, names_in
from bms.host.frames import BALANCING_MODES, state_name
from protocol import messages as pm

VALUE_KIND_NAMES = {int(k): k.name.lower() for k in pm.ValueKind}


SIGNIFICANT_DIGITS = 7  # what a float32 on the wire carries; 25.200000000000003 reads 25.2


def _num(x: float | None) -> float | None:
    """A float for strict JSON: None for no number (None, NaN, infinite: an unreadable
    reading), rounded to what the readings carry."""
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(x) else None


def _floats(a: np.ndarray) -> list[float | None]:
    return [_num(x) for x in np.asarray(a, dtype=np.float64)]


def _code_name(names: dict[int, str] | tuple[str, ...], code: int) -> str:
    """The name for a code; an unknown code (a newer device) as `code N`, not a crash."""
    try:
        return names[code]
    except (KeyError, IndexError):
        return f"code {code}"


def fault_name(code: int) -> str:
    return _code_name(FAULT_NAMES, code)


def level_name(code: int) -> str:
    try:
        return Level.from_code(code).value
    except ValueError:
        return f"level {code}"


def closed_contactors(bits: int) -> list[str]:
    """The names of the closed contactors, in CONTACTOR_BITS order."""
    return [name for name, bit in pm.CONTACTOR_BITS.items() if bits & bit]


def main_contactors(bits: int) -> str:
    """"closed" when both main contactors are, as `run --json` reports it; else "open"."""
    b = pm.CONTACTOR_BITS
    return "closed" if bits & b["negative"] and bits & b["positive"] else "open"


def status_dict(s: pm.Status) -> dict:
    return {
        "time_s": s.time_s,
        "state": state_name(s.state),
        "contactors": main_contactors(s.contactors),
        "contactors_closed": closed_contactors(s.contactors),
        "faults": names_in(s.fault_bitmap),
        "fault_bitmap": s.fault_bitmap,
        "charge_limit_a": _num(s.charge_limit_a),
        "discharge_limit_a": _num(s.discharge_limit_a),
        "pack_voltage_v": _num(s.pack_voltage_v),
        "current_a": _num(s.current_a),
        "soc_pct": _num(s.soc_pct),
        "soh_pct": _num(s.soh_pct),
        "remaining_wh": _num(s.remaining_wh),
        "runtime_s": _num(s.runtime_s),
        "cell_v_min": _num(s.cell_v_min),
        "cell_v_min_index": s.cell_v_min_index,
        "cell_v_max": _num(s.cell_v_max),
        "cell_v_max_index": s.cell_v_max_index,
        "temp_c_min": _num(s.temp_c_min),
        "temp_c_min_index": s.temp_c_min_index,
        "temp_c_max": _num(s.temp_c_max),
        "temp_c_max_index": s.temp_c_max_index,
        "balancing_count": s.balancing_count,
        "store": store_state(s.store),
        "save_failures": s.save_failures,
        "charge_voltage_limit_v": _num(s.charge_voltage_limit_v),
        "discharge_voltage_limit_v": _num(s.discharge_voltage_limit_v),
    }


def store_state(bits: int) -> str:
    """The persistent store in a word: "none" (not kept), "ok", or "failing" (its last
    save failed)."""
    if not bits & pm.STORE_BITS["kept"]:
        return "none"
    return "failing" if bits & pm.STORE_BITS["failing"] else "ok"


def info_dict(i: pm.DeviceInfo) -> dict:
    try:
        mode = pm.Mode(i.mode).name
    except ValueError:
        mode = f"mode {i.mode}"
    return {
        "protocol_version": i.protocol_version,
        "firmware_version": i.firmware_version,
        "chemistry": i.chemistry,
        "mode": mode,
        "n_series": i.n_series,
        "n_parallel": i.n_parallel,
        "n_temp_sensors": i.n_temp_sensors,
        "capacity_ah": _num(i.capacity_ah),
        "capabilities": [c.name for c in pm.Capability if i.capabilities & c],
    }


def cells_dict(m: pm.CellVoltages) -> dict:
    return {"cell_voltage_v": _floats(m.cell_voltage_v)}


def temps_dict(m: pm.Temperatures) -> dict:
    return {"temperature_c": _floats(m.temperature_c)}


def cell_soc_dict(m: pm.CellSoc) -> dict:
    return {"soc_pct": _floats(m.soc_pct)}


def balancing_dict(m: pm.BalancingState) -> dict:
    mask = [bool(x) for x in np.asarray(m.mask, bool)]
    return {"mode": _code_name(BALANCING_MODES, m.mode), "mask": mask,
            "balancing": [i for i, on in enumerate(mask) if on]}


def fault_entry_dict(e: dict) -> dict:
    """A fault log entry: the names of `FaultEvent.as_dict`, plus the state and pack SoC
    when it happened; `index` 0-based (None: no cell or sensor), `value` None: no reading."""
    return {
        "t_s": e["t_s"],
        "name": fault_name(e["code"]),
        "code": e["code"],
        "level": level_name(e["level"]),
        "action": "raised" if e["action"] == 1 else "cleared",
        "index": None if e["index"] < 0 else e["index"],
        "value": _num(e["value"]),
        "state": state_name(e["state"]),
        "soc_pct": _num(e["soc_pct"]),
    }


def parameter_dict(p: dict) -> dict:
    """A ParameterList entry: id, name, kind name, unit, choices."""
    return {"id": p["param_id"], "name": p["name"],
            "kind": _code_name(VALUE_KIND_NAMES, p["kind"]), "unit": p["unit"],
            "choices": list(p["choices"])}


def config_value(v: dict) -> float | int | bool | str | None:
    """A ConfigValues entry's value, as JSON takes it: a setting is exact (float64 on the
    wire), so it is not rounded like a reading."""
    value = v["value"]
    if v["kind"] == pm.ValueKind.FLOAT and math.isnan(value):
        return None
    return value


def fault_units(params: list[dict]) -> dict[str, str]:
    """Fault name -> the unit of its readings, from the device's parameter list
    (`protection.FAULT.LEVEL[.quantity].threshold`); only faults with one unit."""
    units: dict[str, set[str]] = {}
    for p in params:
        parts = p["name"].split(".")
        if parts[0] == "protection" and parts[-1] == "threshold" and len(parts) >= 4:
            units.setdefault(parts[1], set()).add(p["unit"])
    return {name: next(iter(u)) for name, u in units.items() if len(u) == 1}


# --- text for people (tables of `query`, the `monitor` view) ------------------------------

def fmt(x: float | None, spec: str, unit: str = "") -> str:
    """A number with its unit; "-" for no reading."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{spec}} {unit}".rstrip()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "-"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fmt_current(a: float | None) -> str:
    if a is None or math.isnan(a):
        return "-"
    what = "charging" if a > 0 else "discharging" if a < 0 else "no current"
    return f"{a:+.3f} A ({what})"


def fmt_contactors(d: dict) -> str:
    closed = d["contactors_closed"]
    return f"{d['contactors']} ({'closed: ' + ', '.join(closed) if closed else 'all open'})"


def status_rows(d: dict) -> list[tuple[str, str]]:
    """A status dict (`status_dict`) as (label, text) rows; cells and sensors 1-based."""

    def where(kind: str, index: int, value: float | None) -> str:
        return "" if value is None else f" ({kind} {index + 1})"

    return [
        ("state", d["state"]),
        ("contactors", fmt_contactors(d)),
        ("faults", ", ".join(d["faults"]) or "none"),
        ("pack voltage", fmt(d["pack_voltage_v"], ".2f", "V")),
        ("current", fmt_current(d["current_a"])),
        ("SoC / SoH", f"{fmt(d['soc_pct'], '.1f', '%')} / {fmt(d['soh_pct'], '.1f', '%')}"),
        ("limits charge / discharge", f"{fmt(d['charge_limit_a'], '.2f', 'A')} / "
                                      f"{fmt(d['discharge_limit_a'], '.2f', 'A')}"),
        ("remaining energy", fmt(d["remaining_wh"], ".1f", "Wh")),
        ("runtime", "- (not discharging)" if d["runtime_s"] is None
         else fmt_duration(d["runtime_s"])),
        ("cell voltage min / max",
         f"{fmt(d['cell_v_min'], '.3f', 'V')}"
         f"{where('cell', d['cell_v_min_index'], d['cell_v_min'])} / "
         f"{fmt(d['cell_v_max'], '.3f', 'V')}"
         f"{where('cell', d['cell_v_max_index'], d['cell_v_max'])}"),
        ("temperature min / max",
         f"{fmt(d['temp_c_min'], '.1f', '°C')}"
         f"{where('sensor', d['temp_c_min_index'], d['temp_c_min'])} / "
         f"{fmt(d['temp_c_max'], '.1f', '°C')}"
         f"{where('sensor', d['temp_c_max_index'], d['temp_c_max'])}"),
        ("balancing", f"{d['balancing_count']} cell(s) bleeding"),
        ("device time", fmt(d["time_s"], ".1f", "s")),
    ]


def fmt_value(v: object) -> str:
    """A configuration value as the TOML file writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nan"
    return str(v)
