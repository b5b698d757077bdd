"""Sustained hardware-in-the-loop streaming over a real pseudo-terminal pair:
`bms-emu serve --hil` in a child process, a rig in this process sending MeasurementFrames
at a fixed rate and matching every ActuationFrame to its measurement by `rig_seq`.
Prints one JSON line.

    .venv/bin/python benchmarks/hil_streaming.py [--seconds 60] [--packs 16@100,416@10]
        [--relay inprocess|process] [--quick]

Each pack (cells@Hz) gets a fresh pty pair and emulator (`--cells-per-temp-sensor 4` on
both sides). The rig paces its sends on absolute times (k / rate after the start, so a
late send does not delay the next ones) for `--seconds`, then waits `--drain-s` for the
answers still in flight. Its readings are a pack at rest near 50 % SoC (na-nfm ~3.06 V a
cell, 1 mV noise and quantisation; 25 °C; 0 A); the contactor feedback and the balancing
switches echo the last ActuationFrame's commands, and the bus voltage is the pack voltage
while the precharge or positive contactor is commanded closed, so the firmware runs its
normal sequence to RUN instead of flagging welds or a failed precharge.

Counted: measurements sent; ActuationFrames received and matched by rig_seq (each
measurement must be answered exactly once: lost = sent - answered after the drain);
actuations that repeat an answered rig_seq (the emulator's watchdog steps when the rig is
silent for a tick, `--tick`); NACKs received (the emulator's own decoding errors are not
visible from here: a measurement it could not decode is simply lost, one it refused is
NACKed); the client's decoding errors; achieved rate; bytes a second each way and their
share of the 8N1 line rate (10 bits a byte); measurement -> actuation latency.
Goal: no lost or corrupted frame.

A pty does not pace bytes at the baud rate: the line share is computed from the byte
counts, not imposed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections import Counter

import numpy as np
from pty_roundtrip import BITS_PER_BYTE, Emulator, PtyLink, connect, percentile_ms

from bms.data.faults import names_in
from bms.data.presets import PRESETS
from bms.host.views import state_name
from bms.links.client import Refused
from bms.links.serial_link import DEFAULT_BAUD
from protocol import messages as pm

CELLS_PER_TEMP_SENSOR = 4
CHEMISTRY = "na-nfm"
MID_SOC = 0.5
STREAM_NOTE = ("a pty does not pace bytes at the baud rate: the line shares are computed from "
               "the bytes carried (10 bits a byte for 8N1), not imposed; latency is from the "
               "rig's send to its ActuationFrame arriving, through the pty pair and relay")
CLOSED_BUS = pm.CONTACTOR_BITS["precharge"] | pm.CONTACTOR_BITS["positive"]


def mid_soc_cell_v(chemistry: str) -> float:
    """The open-circuit voltage halfway between the charge and discharge branches at 50 %."""
    ocv = PRESETS[chemistry].ocv
    return float(np.interp(MID_SOC, ocv.soc, (ocv.charge_v + ocv.discharge_v) / 2.0))


class Sender:
    """The sending side: readings, the echo of the commands, and the bookkeeping.

    Not `hil.rig.Rig`, which simulates a pack every tick and counts answers in order: here
    the readings are drawn up beforehand, so the rig side costs next to nothing, and each
    measurement is timed to the ActuationFrame answering it."""

    def __init__(self, n_cells: int, seed: int):
        rng = np.random.default_rng(seed)
        self.n_cells = n_cells
        self.n_temp = -(-n_cells // CELLS_PER_TEMP_SENSOR)
        base = mid_soc_cell_v(CHEMISTRY) + rng.normal(0.0, 0.003, n_cells)  # cell spread
        noise = rng.uniform(-1e-3, 1e-3, (256, n_cells)) + rng.uniform(-1e-3, 1e-3,
                                                                      (256, n_cells))
        self.cells = np.round(base + noise / 2.0, 3).astype(np.float32)  # 1 mV steps
        self.temps = np.round(25.0 + rng.normal(0.0, 0.1, (256, self.n_temp)),
                              1).astype(np.float32)
        self.contactors = 0  # the last commanded, echoed as auxiliary-contact feedback
        self.mask: np.ndarray | None = None  # the last commanded bleed switches
        self.sent_at: dict[int, float] = {}  # rig_seq -> perf_counter after the send
        self.answered: set[int] = set()
        self.latencies_s: list[float] = []
        self.repeated = 0  # actuations for an rig_seq already answered
        self.repeated_after_last_send = 0
        self.unsolicited = 0  # rig_seq 0: the watchdog steps before the first measurement
        self.unknown = 0  # an rig_seq never sent
        self.wrong_size = 0  # a balance mask not of n_cells
        self.nacks: Counter[str] = Counter()
        self.nack_details: list[str] = []
        self.last: pm.ActuationFrame | None = None
        self.sending = True

    def measurement(self, rig_seq: int, rig_time_s: float) -> pm.MeasurementFrame:
        row = rig_seq % len(self.cells)
        cells = self.cells[row]
        bus_v = float(cells.sum()) if self.contactors & CLOSED_BUS else 0.0
        return pm.MeasurementFrame(rig_seq, rig_time_s, 0.0, bus_v, self.contactors, cells,
                                   self.temps[row], self.mask)

    def on_actuation(self, msg: pm.ActuationFrame) -> None:
        now = time.perf_counter()
        self.last = msg
        self.contactors = msg.contactors
        if len(msg.balance_mask) == self.n_cells:
            self.mask = msg.balance_mask
        else:
            self.wrong_size += 1
        sent = self.sent_at.get(msg.rig_seq)
        if msg.rig_seq == 0:
            self.unsolicited += 1
        elif sent is None:
            self.unknown += 1
        elif msg.rig_seq in self.answered:
            self.repeated += 1
            if not self.sending:
                self.repeated_after_last_send += 1
        else:
            self.answered.add(msg.rig_seq)
            self.latencies_s.append(now - sent)

    def on_nack(self, msg: pm.Nack) -> None:
        """A refused measurement (the client hands a Nack no request waits for here)."""
        self.nacks[Refused(msg).code] += 1
        if len(self.nack_details) < 3:
            self.nack_details.append(msg.detail)


async def stream(n_cells: int, rate_hz: float, args) -> dict:
    # The emulator's watchdog: 2.5 periods, at least 0.1 s (at 10 Hz the default 0.1 s is
    # the period itself: a measurement a little late could let it step in between).
    tick_s = args.tick if args.tick is not None else max(0.1, 2.5 / rate_hz)
    serve_args = ["--hil", "--series", str(n_cells), "--cells-per-temp-sensor",
                  str(CELLS_PER_TEMP_SENSOR), "--chemistry", CHEMISTRY, "--tick", f"{tick_s:g}",
                  "--baud", str(args.baud), "--autostart"]
    sender = Sender(n_cells, args.seed)
    period_s = 1.0 / rate_hz
    n_frames = max(1, round(args.seconds * rate_hz))
    loop = asyncio.get_running_loop()
    lateness_s: list[float] = []
    async with PtyLink(args.relay) as link:
        async with Emulator(link.paths[0], serve_args, args.seconds + 120.0) as emu:
            client, info = await connect(link.paths[1])
            try:
                if (info.n_series, info.n_temp_sensors) != (n_cells, sender.n_temp):
                    raise RuntimeError(f"emulator has {info.n_series} cells and "
                                       f"{info.n_temp_sensors} sensors, not {n_cells} and "
                                       f"{sender.n_temp}")
                client.on(pm.ActuationFrame, sender.on_actuation)
                client.on(pm.Nack, sender.on_nack)
                ep = client.endpoint
                out0, in0 = ep.bytes_out, ep.bytes_in
                t0 = loop.time() + 0.05
                first_send = last_send = 0.0
                for k in range(n_frames):
                    due = t0 + k * period_s
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    lateness_s.append(loop.time() - due)
                    rig_seq = k + 1
                    client.send_event(sender.measurement(rig_seq, k * period_s))
                    last_send = time.perf_counter()
                    sender.sent_at[rig_seq] = last_send
                    if k == 0:
                        first_send = last_send
                sender.sending = False
                await asyncio.sleep(args.drain_s)
                bytes_out, bytes_in = ep.bytes_out - out0, ep.bytes_in - in0
                errors = dict(ep.errors)
            finally:
                await client.close()
        relay = link.stats()
    sent = len(sender.sent_at)
    span_s = (last_send - first_send) + period_s  # sent frames x period, as measured
    lost = sent - len(sender.answered)
    last = sender.last
    result = {
        "series": n_cells,
        "temp_sensors": sender.n_temp,
        "rate_hz": rate_hz,
        "seconds": args.seconds,
        "emulator_tick_s": tick_s,
        "measurement_bytes": round(bytes_out / sent, 1) if sent else None,
        "sent": sent,
        "answered": len(sender.answered),
        "lost": lost,
        "repeated_rig_seq": sender.repeated,
        "repeated_rig_seq_after_last_send": sender.repeated_after_last_send,
        "unknown_rig_seq": sender.unknown,
        "watchdog_actuations_before_first": sender.unsolicited,
        "wrong_size_actuations": sender.wrong_size,
        "nacks": dict(sender.nacks),
        "nack_details": sender.nack_details,
        "client_decode_errors": errors,
        "achieved_hz": round((sent - 1) / (last_send - first_send), 3) if sent > 1 else None,
        "send_lateness_p99_ms": percentile_ms(lateness_s, 99),
        "send_lateness_max_ms": round(max(lateness_s) * 1e3, 3),
        "bytes_per_s_to_emulator": round(bytes_out / span_s, 1),
        "bytes_per_s_from_emulator": round(bytes_in / span_s, 1),
        "line_share_to_emulator": round(bytes_out / span_s * BITS_PER_BYTE / args.baud, 5),
        "line_share_from_emulator": round(bytes_in / span_s * BITS_PER_BYTE / args.baud, 5),
        "latency_p50_ms": percentile_ms(sender.latencies_s, 50),
        "latency_p99_ms": percentile_ms(sender.latencies_s, 99),
        "latency_max_ms": (round(max(sender.latencies_s) * 1e3, 3) if sender.latencies_s
                           else None),
        "final_state": state_name(last.state) if last is not None else None,
        "final_contactors": last.contactors if last is not None else None,
        "final_faults": names_in(last.fault_bitmap) if last is not None else None,
        "emulator_log": emu.warnings(),
    }
    result["goal_met"] = (lost == 0 and not sender.nacks and not errors and sender.unknown == 0
                          and sender.wrong_size == 0)
    if relay is not None:
        result["relay_bytes"] = relay
    return result


def pack_list(text: str) -> list[tuple[int, float]]:
    """`16@100,416@10` -> [(16, 100.0), (416, 10.0)]"""
    out = []
    for item in text.split(","):
        cells, _, rate = item.partition("@")
        out.append((int(cells), float(rate)))
    return out


async def run(args) -> dict:
    packs = {}
    for n_cells, rate_hz in args.packs:
        packs[f"{n_cells}@{rate_hz:g}Hz"] = await stream(n_cells, rate_hz, args)
    return {
        "benchmark": "hil_streaming",
        "baud": args.baud,
        "relay": args.relay,
        "chemistry": CHEMISTRY,
        "cell_v": round(mid_soc_cell_v(CHEMISTRY), 4),
        "drain_s": args.drain_s,
        "packs": packs,
        "goal": "no lost or corrupted frame",
        "goal_met": all(p["goal_met"] for p in packs.values()),
        "note": STREAM_NOTE,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),  # a shared machine
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time per pack")
    parser.add_argument("--packs", type=pack_list, default=[(16, 100.0), (416, 10.0)],
                        metavar="CELLS@HZ[,...]", help="pack sizes and measurement rates")
    parser.add_argument("--drain-s", type=float, default=0.5,
                        help="wait after the last send for the answers in flight")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    parser.add_argument("--relay", choices=("inprocess", "process"), default="inprocess",
                        help="who carries bytes between the two ptys")
    parser.add_argument("--tick", type=float, default=None, metavar="S",
                        help="the emulator's --tick (watchdog); default 2.5 periods, >= 0.1 s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s per pack")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
