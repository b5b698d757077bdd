"""The end-of-run summary as a table a person reads at a glance."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bms.data.faults import subject_text
from bms_emu.mqtt_args import short_lived_text


def _duration(seconds: float) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}h{int(m):02d}m{s:04.1f}s"


def _estimate_rows(e: dict | None) -> list[tuple[str, str]]:
    if e is None:
        return []
    return [
        ("SoH capacity / resistance", f"{e['soh_pct']:.1f} % / {e['resistance_pct']:.1f} %"),
        ("remaining energy", f"{e['remaining_wh']:.1f} Wh; at the reference power "
         f"{_duration(e['runtime_reference_s'])}"),
        ("current sensor offset", f"{e['current_offset_a'] * 1000:+.1f} mA (estimated)"),
    ]


def _cells_row(c: dict) -> tuple[str, str]:
    age = c["started_aged"]
    return ("cells (true) capacity / resistance",
            f"{c['capacity_ah'][0]:.3f}-{c['capacity_ah'][1]:.3f} Ah / "
            f"{c['resistance_pct'][0]:.0f}-{c['resistance_pct'][1]:.0f} % of the table "
            f"(started aged {age['years']:g} years at {age['storage_soc_pct']:g} % SoC, "
            f"{age['cycles']:g} cycles)")


def _mqtt_rows(m: dict | None) -> list[tuple[str, str]]:
    if m is None:
        return []
    return [("MQTT", f"{m['connects']} connection(s); {m['published']} published, "
             f"{m['dropped']} dropped; fault events: {m['kept']} kept for the broker, "
             f"{m['kept_dropped']} lost{short_lived_text(m)}")]



def _nvm_rows(n: dict | None) -> list[tuple[str, str]]:
    if n is None:
        return []
    failed = f", {n['failures']} failed (the last: {n['last_error']})" if n["failures"] else ""
    return [("store", f"{n['path']}: {n['saves']} saves{failed}")]


def print_summary(d: dict) -> None:
    f, x = d["final"], d["extremes_true"]
    table = Table(title=f"bms-emu run: {d['series']}S{d['parallel']}P {d['chemistry']}",
                  show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("simulated time", _duration(d["sim_s"])
         + (f" (interrupted by {d['interrupted']})" if d.get("interrupted") else "")),
        ("wall time", f"{d['wall_s']:.2f} s"),
        ("real-time factor", f"{d['rtf']:,.0f}x"),
        ("final state", f"{f['state']}, contactors {f['contactors']}"),
        ("SoC estimated / true", f"{f['soc_pct']:.1f} % / {f['soc_true_pct']:.1f} %"),
        _cells_row(d["cells_true"]),
        *_estimate_rows(f["estimate"]),
        ("pack", f"{f['pack_v']:.2f} V, {f['current_a']:+.2f} A"),
        ("cell voltage min / max", f"{f['cell_v_min']:.3f} / {f['cell_v_max']:.3f} V "
         f"(over the run: {x['cell_v_min']:.3f} / {x['cell_v_max']:.3f} V)"),
        ("temperature min / max", f"{f['temp_c_min']:.1f} / {f['temp_c_max']:.1f} °C "
         f"(hottest cell over the run: {x['temp_c_max']:.1f} °C)"),
        ("energy in / out", f"{d['energy_in_wh']:.1f} / {d['energy_out_wh']:.1f} Wh"),
        ("balancing energy", f"{d['balancing_wh']:.3f} Wh"),
        ("fault events", str(len(d["events"]))),
        *_mqtt_rows(d.get("mqtt")),
        *_nvm_rows(d.get("nvm")),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for e in d["events"]:
        where = subject_text(e)
        where = (f" at {where}" if where else "") + ("" if e["value"] is None
                                                     else f" ({e['value']})")
        console.print(f"  t={e['t_s']:.1f} s  {e['name']} {e['level']} {e['action']}{where}")
