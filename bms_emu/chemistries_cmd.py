"""`bms-emu chemistries`: the built-in presets and their windows."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from bms.data.chemistry import Chemistry
from bms.data.presets import PRESETS, resolve_chemistry


def add_parser(sub) -> None:
    p = sub.add_parser("chemistries",
                       description="List the built-in chemistry presets (or describe a cell "
                       "profile file) with their voltage, temperature and current windows "
                       "and their coulombic efficiency.")
    p.add_argument("profiles", nargs="*", metavar="PROFILE.toml",
                   help="also describe these user cell profiles")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=handle)


def describe(chem: Chemistry) -> dict:
    lim, thr = chem.limits, chem.thresholds
    return {
        "name": chem.name,
        "description": chem.description,
        "capacity_ah": chem.capacity_ah,
        "nominal_v": chem.nominal_v,
        "v_min": lim.v_min,
        "v_max": lim.v_max,
        "charge_v": thr.charge_v,
        "charge_temp_c": [lim.charge_temp_min_c, lim.charge_temp_max_c],
        "discharge_temp_c": [lim.discharge_temp_min_c, lim.discharge_temp_max_c],
        "max_charge_c": lim.max_charge_c,
        "max_discharge_c": lim.max_discharge_c,
        "ocv_100_pct_v": float(chem.ocv.charge_v[-1]),
        "max_hysteresis_mv": round(float((chem.ocv.charge_v - chem.ocv.discharge_v).max()) * 1e3,
                                   1),
        "coulombic_efficiency": chem.coulombic_efficiency,
    }


def handle(args) -> int:
    rows = [describe(c) for c in PRESETS.values()]
    rows += [describe(resolve_chemistry(path)) for path in args.profiles]
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title="Sodium-ion chemistries")
    for column in ("name", "cell", "nominal", "window", "charge to", "charge temp",
                   "discharge temp", "max C (chg/dis)", "hysteresis", "coulombic eff."):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"], f"{r['capacity_ah']:g} Ah", f"{r['nominal_v']:g} V",
            f"{r['v_min']:g}-{r['v_max']:g} V", f"{r['charge_v']:g} V",
            "{:g}..{:g} °C".format(*r["charge_temp_c"]),
            "{:g}..{:g} °C".format(*r["discharge_temp_c"]),
            f"{r['max_charge_c']:g} / {r['max_discharge_c']:g}",
            f"{r['max_hysteresis_mv']:g} mV", f"{r['coulombic_efficiency']:.3g}",
        )
    Console().print(table)
    for r in rows:
        print(f"{r['name']}: {r['description']}")
    return 0
