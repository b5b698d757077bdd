"""`bms-emu monitor`: a live terminal view of a device speaking the protocol.

The view subscribes to telemetry (Status, CellVoltages, Temperatures, BalancingState every
--period; from a 1.1 device also the fault events as they happen) and subscribes again
whenever none has come for three periods: after the port came back, or after the device
restarted and forgot the subscription. Rendering is a pure function of a `Snapshot` of
plain dicts (`bms.host.views`), so it can be tested as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bms.core.signals import State
from bms.data.validation import Problems
from bms.host import views
from bms.links.client import Client, Refused
from bms_emu.mqtt_args import client_target
from bms_emu.query_cmd import (
    UnexpectedAnswer,
    add_link_arguments,
    ask,
    check_link_arguments,
    fetch_parameters,
    fetch_values,
    open_client,
    quiet_link_log,
    run_reporting,
)
from protocol import messages as pm
from protocol.framing import LATEST_REVISION, REVISION_1_1

BAR_WIDTH = 24
BAR_FULL, BAR_EMPTY, BAR_NONE = "█", "░", "·"
BALANCING_MARK = "BAL"
ROWS_PER_COLUMN = 24  # cells per column of bars; more cells go side by side
STALE_PERIODS = 3  # no telemetry for this many periods: subscribe again
EVENTS_SHOWN = 8  # the newest fault events the view lists
TELEMETRY = (pm.Status, pm.CellVoltages, pm.Temperatures, pm.BalancingState)
WINDOW_PARAMS = ("protection.CELL_UNDERVOLTAGE.FAULT.threshold",
                 "protection.CELL_OVERVOLTAGE.FAULT.threshold")
STATE_STYLES = {State.RUN: "bold green", State.FAULT: "bold red", State.PRECHARGE: "bold yellow",
                State.RECOVERY: "bold yellow"}


@dataclass
class Snapshot:
    """What the view shows, as plain data (the dicts of `bms.host.views`)."""

    port: str = ""
    link: str = "connecting"  # connected / waiting for telemetry / reconnecting / connecting
    frames: int = 0  # good frames received
    errors: int = 0  # bad frames received + requests that failed
    subscribes: int = 0  # Subscribe requests sent
    last_error: str = ""
    info: dict | None = None  # views.info_dict
    status: dict | None = None  # views.status_dict
    cells_v: list[float | None] | None = None
    temps_c: list[float | None] | None = None
    balancing: dict | None = None  # views.balancing_dict
    window_v: tuple[float, float] | None = None  # bar scale; None: lowest..highest cell
    events: list[dict] | None = None  # the newest fault events (views.fault_event_dict)
    missed_events: int = 0  # events the log has that never came (a gap in `log_index`)


# --- rendering: pure -----------------------------------------------------------------------

def bar(value: float | None, lo: float, hi: float, width: int = BAR_WIDTH) -> str:
    """A bar of `width` characters, full at `hi`, empty at `lo`."""
    if value is None or math.isnan(value):
        return BAR_NONE * width
    frac = 0.5 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    n = round(frac * width)
    return BAR_FULL * n + BAR_EMPTY * (width - n)


def bar_scale(snap: Snapshot) -> tuple[float, float, str] | None:
    """(low, high, what they are) of the bars; None without readings."""
    if snap.window_v is not None:
        return (*snap.window_v, "the cell voltage window")
    v = [x for x in snap.cells_v or () if x is not None and not math.isnan(x)]
    if not v:
        return None
    return min(v), max(v), "lowest .. highest cell"


def _header(snap: Snapshot) -> Text:
    text = Text()
    info = snap.info
    if info is not None:
        text.append(f"{info['chemistry']} {info['n_series']}S{info['n_parallel']}P "
                    f"{views.fmt(info['capacity_ah'], 'g', 'Ah')}, {info['mode']}, "
                    f"firmware {info['firmware_version']}, protocol revision "
                    f"{info['protocol_version']}\n")
        if info["pack_id"] is not None:
            text.append(f"pack {info['pack_id']}, serial {info['serial'] or '-'}, "
                        f"build {info['firmware_build'] or '-'}\n")
    style = {"connected": "green", "reconnecting": "bold red"}.get(snap.link, "yellow")
    text.append("link: ")
    text.append(snap.link, style=style)
    text.append(f", {snap.frames} frames, {snap.errors} errors")
    if snap.last_error and snap.link != "connected":
        text.append(f"\n{snap.last_error}", style="dim")
    return text


def _status_table(d: dict) -> Table:
    """`views.status_rows`, the state and the faults coloured."""
    levels = d["faults_by_level"] or {}
    styles = {"state": STATE_STYLES.get(d["state"], "bold yellow"),
              "faults": "bold red" if d["faults"] else "green",
              "fault levels": "bold red" if levels.get("FAULT") else "yellow"
              if any(levels.values()) else "green"}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, text in views.status_rows(d):
        table.add_row(label, Text(text, style=styles.get(label, "")))
    return table


def _cells(snap: Snapshot) -> RenderableType:
    cells = snap.cells_v or []
    scale = bar_scale(snap)
    mask = (snap.balancing or {}).get("mask") or []
    lo, hi, what = scale if scale is not None else (0.0, 0.0, "")
    n_cols = max(1, math.ceil(len(cells) / ROWS_PER_COLUMN))
    rows = math.ceil(len(cells) / n_cols) if cells else 0
    grid = Table.grid(padding=(0, 3))
    for _ in range(n_cols):
        grid.add_column(no_wrap=True)
    columns = []
    for c in range(n_cols):
        lines = []
        for i in range(c * rows, min(len(cells), (c + 1) * rows)):
            line = Text(f"{i + 1:>3} {views.fmt(cells[i], '.3f', 'V'):>7} ")
            line.append(bar(cells[i], lo, hi), style="cyan")
            on = i < len(mask) and mask[i]
            line.append(f" {BALANCING_MARK}" if on else " " * (len(BALANCING_MARK) + 1),
                        style="bold magenta")
            lines.append(line)
        columns.append(Text("\n").join(lines))
    if columns:
        grid.add_row(*columns)
    mode = (snap.balancing or {}).get("mode", "-")
    caption = (f"bars: {lo:.3f} .. {hi:.3f} V ({what}); {BALANCING_MARK}: bleeding "
               f"(balancing mode {mode})" if scale else "no cell voltages yet")
    return Group(grid, Text(caption, style="dim"))


def _temps(snap: Snapshot) -> Text:
    temps = snap.temps_c or []
    if not temps:
        return Text("temperatures: none yet", style="dim")
    return Text("temperatures: " + "  ".join(
        f"{i + 1}: {views.fmt(t, '.1f', '°C')}" for i, t in enumerate(temps)))


def _events(snap: Snapshot) -> Text:
    """The newest fault events, newest last; cells and sensors from 1."""
    if snap.events is None:
        return Text("fault events: none pushed here (a 1.0 device pushes none, `--once` "
                    "subscribes to none); `bms-emu query faults` reads the log", style="dim")
    text = Text(f"fault events (newest last; {snap.missed_events} missed, in the fault log):"
                if snap.missed_events else "fault events (newest last):")
    for d in snap.events or ():
        style = {"FAULT": "bold red", "ALARM": "yellow"}.get(d["level"], "")
        text.append(f"\n  {views.event_text(d)}",
                    style="green" if d["action"] == "cleared" else style)
    if not snap.events:
        text.append(" none since the view started", style="dim")
    return text


def render(snap: Snapshot) -> RenderableType:
    """The whole view for one snapshot: no I/O, no clock."""
    parts: list[RenderableType] = [_header(snap)]
    if snap.status is not None:
        parts += [Text(), _status_table(snap.status)]
    else:
        parts += [Text("no status yet", style="dim")]
    parts += [Text(), _cells(snap), _temps(snap), Text(), _events(snap)]
    return Panel(Group(*parts), title=f"bms-emu monitor {snap.port}", box=box.ROUNDED,
                 expand=False)


# --- the live part -------------------------------------------------------------------------

class Monitor:
    """Keeps a Snapshot up to date from one client's telemetry; `step()` once in a while
    (re)subscribes when telemetry stopped and refreshes the link figures."""

    def __init__(self, client: Client, period_s: float, timeout_s: float,
                 window: bool = False):
        self.client = client
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.window = window
        self.snap = Snapshot(port=client.endpoint.link.port)
        self.request_errors = 0
        self.last_telemetry: float | None = None  # loop time
        self.subscribed_at: float | None = None
        client.on(pm.Status,
                  lambda m: self._got("status", views.status_dict(m, client.revision)))
        client.on(pm.CellVoltages,
                  lambda m: self._got("cells_v", views.cells_dict(m)["cell_voltage_v"]))
        client.on(pm.Temperatures,
                  lambda m: self._got("temps_c", views.temps_dict(m)["temperature_c"]))
        client.on(pm.BalancingState, lambda m: self._got("balancing", views.balancing_dict(m)))
        client.on(pm.FaultEvent, self._event)
        self._next_log_index: int | None = None  # the event the last one says comes next

    def _got(self, what: str, value: object) -> None:
        setattr(self.snap, what, value)
        self.last_telemetry = asyncio.get_running_loop().time()

    def _event(self, ev: pm.FaultEvent) -> None:
        """One more event on the list; a gap in `log_index` counts as missed."""
        if self._next_log_index is not None and ev.log_index > self._next_log_index:
            self.snap.missed_events += ev.log_index - self._next_log_index
        self._next_log_index = ev.log_index + 1
        self.snap.events = [*(self.snap.events or ()), views.fault_event_dict(ev)][-EVENTS_SHOWN:]

    async def identify(self) -> None:
        """Who the device is, and the bar window when the bars span it."""
        c, t = self.client, self.timeout_s
        self.snap.info = views.info_dict(await ask(c, pm.GetInfo(), pm.DeviceInfo, t))
        if self.window:
            self.snap.window_v = await cell_window(c, t)

    async def setup(self) -> None:
        """Who the device is, the bar window, then the subscription."""
        c, t = self.client, self.timeout_s
        await self.identify()
        period_ms = max(10, round(self.period_s * 1000))
        pushed = (pm.FaultEvent,) if c.revision >= REVISION_1_1 else ()  # 1.1 pushes events
        await ask(c, pm.Subscribe(tuple({"msg_type": pm.BY_CLASS[m].type_id,
                                         "period_ms": period_ms} for m in TELEMETRY + pushed)),
                  pm.Ack, t)
        if pushed and self.snap.events is None:
            self.snap.events = []
        self.snap.subscribes += 1

    async def poll(self) -> None:
        """Everything once, by request: what `--once` shows."""
        c, t = self.client, self.timeout_s
        await self.identify()
        self.snap.status = views.status_dict(await ask(c, pm.GetStatus(), pm.Status, t),
                                             c.revision)
        self.snap.cells_v = views.cells_dict(
            await ask(c, pm.GetCellVoltages(), pm.CellVoltages, t))["cell_voltage_v"]
        self.snap.temps_c = views.temps_dict(
            await ask(c, pm.GetTemperatures(), pm.Temperatures, t))["temperature_c"]
        self.snap.balancing = views.balancing_dict(
            await ask(c, pm.GetBalancing(), pm.BalancingState, t))
        self._figures("connected")

    async def step(self) -> None:
        now = asyncio.get_running_loop().time()
        stale_after = STALE_PERIODS * self.period_s
        if not self.client.connected:
            self.subscribed_at = None
            self._figures("reconnecting")
            return
        fresh = self.last_telemetry is not None and now - self.last_telemetry <= stale_after
        if not fresh and (self.subscribed_at is None or now - self.subscribed_at > stale_after):
            self.subscribed_at = now
            try:
                await self.setup()
                self.snap.last_error = ""
            except (TimeoutError, UnexpectedAnswer, Refused, ValueError) as exc:
                self.request_errors += 1
                self.snap.last_error = str(exc)
        self._figures("connected" if fresh else "waiting for telemetry")

    def _figures(self, link: str) -> None:
        endpoint = self.client.endpoint
        self.snap.link = link
        self.snap.frames = endpoint.frames_in
        self.snap.errors = sum(endpoint.errors.values()) + self.request_errors
        if not self.client.connected and endpoint.link.last_error:
            self.snap.last_error = endpoint.link.last_error


async def cell_window(client: Client, timeout_s: float) -> tuple[float, float] | None:
    """The cell under- and overvoltage FAULT thresholds, as the device has them."""
    params = {p["name"]: p for p in await fetch_parameters(client, timeout_s)}
    if not all(n in params for n in WINDOW_PARAMS):
        return None
    values = await fetch_values(client, [params[n]["param_id"] for n in WINDOW_PARAMS],
                                timeout_s)
    lo, hi = (float(values[params[n]["param_id"]]["value"]) for n in WINDOW_PARAMS)
    return lo, hi


def add_parser(sub) -> None:
    p = sub.add_parser(
        "monitor",
        description="A live terminal view of a device speaking the bms-emu protocol: state, "
        "contactors, pack voltage and current (positive = charging), SoC and SoH, current "
        "limits, remaining energy and runtime, one bar per cell (balancing cells marked), "
        "temperatures, active faults, the fault events as they happen (from a protocol 1.1 "
        "device) and the link. Telemetry is subscribed to every --period "
        "and subscribed again after the link comes back. Ctrl-C leaves. Exit codes with "
        "--once: 3 refused, 4 no link or no answer.")
    add_link_arguments(p)
    p.add_argument("--period", type=float, default=0.5, metavar="S",
                   help="telemetry period, seconds (default: 0.5)")
    p.add_argument("--scale", choices=("cells", "window"), default="cells",
                   help="cell bars from the lowest to the highest cell (cells, default) or "
                   "over the device's cell under/overvoltage FAULT thresholds (window)")
    p.add_argument("--once", action="store_true",
                   help="print one frame and exit (for scripts)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    check_link_arguments(args, "bms-emu monitor")
    problems = Problems("bms-emu monitor")
    problems.check_range("--period", args.period, 0.01, 60.0)
    if args.duration is not None:
        problems.check_range("--duration", args.duration, 0.0, math.inf)
    problems.raise_if_any()
    if args.once:
        return run_reporting("bms-emu monitor", lambda: once(args))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(live(args))
    return 0


async def once(args, console: Console | None = None) -> int:
    client = await open_client(args, args.timeout)
    try:
        monitor = Monitor(client, args.period, args.timeout, window=args.scale == "window")
        await monitor.poll()
    finally:
        await client.close()
    (console or Console()).print(render(monitor.snap))
    return 0


async def live(args) -> None:
    quiet_link_log()
    client = Client(client_target(args), args.baud, LATEST_REVISION)
    monitor = Monitor(client, args.period, args.timeout, window=args.scale == "window")
    loop = asyncio.get_running_loop()
    end = None if args.duration is None else loop.time() + args.duration
    await client.endpoint.start()  # keeps (re)opening the port: the view shows the wait
    try:
        with Live(render(monitor.snap), auto_refresh=False) as view:
            while end is None or loop.time() < end:
                await monitor.step()
                view.update(render(monitor.snap), refresh=True)
                await asyncio.sleep(min(args.period, 0.25))
    finally:
        if client.connected:  # leave the device quiet: no telemetry into a closed port
            with contextlib.suppress(TimeoutError, Refused):
                await client.request(pm.Subscribe(()), 0.3)
        await client.close()
