"""Protocol codec throughput on one core: whole frames encoded with `protocol.codec.encode`
and decoded with `Decoder.feed` (COBS framing and CRC-32 included). Prints one JSON line.

    .venv/bin/python benchmarks/protocol_codec.py [--repeat 7] [--min-time-s 0.2] [--quick]

Frames: MeasurementFrame for a 16-cell and a 416-cell pack (one temperature sensor per 4
cells, realistic float32 readings; balancing not reported, and reported as a mask) and a
Status response. Each figure is the best (minimum time) of `--repeat` runs of a loop that
lasts at least `--min-time-s`, the loops taking turns (a noisy spell on a shared machine
hits them all); the median is given beside it. The decoder is fed one whole frame per call
(the worst case: a serial read that brings exactly one frame) and, for comparison, 64
frames per call.

Goals (from the issue): >= 50,000 decoded 16-cell and >= 20,000 decoded 416-cell
measurement frames per second.

For comparison in the same run, the 416-cell payload is also parsed and built by a
compiled construct Struct that reads the arrays element by element (`c.Array(n,
c.Float32l)`) instead of the `numpy.frombuffer` adapter of `protocol.fields`; the ratio
is what the adapter buys (payload only: no framing, no CRC, no message object).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import timeit

import construct as c
import numpy as np

from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.fields import F32, F64, U8, U16, U32
from protocol.framing import REVISION_1_0

GOAL_DECODE_FPS = {16: 50_000, 416: 20_000}
CELLS_PER_TEMP_SENSOR = 4
BATCH = 64

# MeasurementFrame's layout with construct's own element-by-element arrays.
CONSTRUCT_ARRAY_MEASUREMENT = c.Struct(
    "rig_seq" / U32, "rig_time_s" / F64, "current_a" / F32, "bus_voltage_v" / F32,
    "contactors" / U8, "n_cells" / U16, "cell_voltage_v" / c.Array(c.this.n_cells, F32),
    "n_sensors" / U16, "temperature_c" / c.Array(c.this.n_sensors, F32),
    "n_balancing" / U16, "balancing" / c.Bytes((c.this.n_balancing + 7) // 8),
).compile()


def f32(x: float) -> float:
    """A value as it comes back from a float32 field, so a round trip compares equal."""
    return float(np.float32(x))


def measurement(n_cells: int, mask: bool, rng: np.random.Generator) -> pm.MeasurementFrame:
    """Readings as a rig sends them: ~3.06 V cells (na-nfm near 50 % SoC) to the millivolt,
    temperatures to 0.1 °C, float32 on the wire."""
    cells = np.round(3.06 + rng.normal(0.0, 0.005, n_cells), 3).astype(np.float32)
    n_temp = -(-n_cells // CELLS_PER_TEMP_SENSOR)
    temps = np.round(25.0 + rng.normal(0.0, 1.0, n_temp), 1).astype(np.float32)
    balancing = rng.random(n_cells) < 0.2 if mask else None
    return pm.MeasurementFrame(rig_seq=123_456, rig_time_s=3601.25, current_a=f32(-12.345),
                               bus_voltage_v=f32(cells.sum()), contactors=0x05,
                               cell_voltage_v=cells, temperature_c=temps, balancing=balancing)


def status() -> pm.Status:
    return pm.Status(
        time_s=3601.25, state=3, contactors=0x05, fault_bitmap=0, charge_limit_a=f32(1.5),
        discharge_limit_a=f32(4.5), pack_voltage_v=f32(48.96), current_a=f32(-12.345),
        soc_pct=f32(51.2), soh_pct=f32(99.8), remaining_wh=f32(36.9), runtime_s=f32(2890.0),
        cell_v_min=f32(3.051), cell_v_min_index=7, cell_v_max=f32(3.068), cell_v_max_index=12,
        temp_c_min=f32(24.1), temp_c_min_index=2, temp_c_max=f32(26.3), temp_c_max_index=0,
        balancing_count=2)


class Bench:
    """Timed loops, run in turn: repeat 1 of every loop, then repeat 2, ... so that a noisy
    spell on a shared machine falls on all of them rather than on one. The garbage collector
    is off while a loop runs (timeit's way)."""

    def __init__(self, min_time_s: float):
        self.min_time_s = min_time_s
        self.loops: dict[str, tuple[timeit.Timer, int, int]] = {}  # timer, number, per call
        self.times: dict[str, list[float]] = {}

    def add(self, key: str, fn, per_call: int = 1) -> None:
        timer = timeit.Timer(fn)
        number = 1
        while timer.timeit(number) < self.min_time_s:
            number *= 2
        self.loops[key] = (timer, number, per_call)
        self.times[key] = []

    def run(self, repeat: int) -> None:
        for _ in range(repeat):
            for key, (timer, number, _) in self.loops.items():
                self.times[key].append(timer.timeit(number))

    def best(self, key: str) -> float:
        """Items a second in the fastest repeat."""
        _, number, per_call = self.loops[key]
        return per_call * number / min(self.times[key])

    def median(self, key: str) -> float:
        _, number, per_call = self.loops[key]
        return per_call * number / statistics.median(self.times[key])


def add_codec_case(bench: Bench, name: str, msg: object) -> dict:
    """Checks the round trip, adds the timed loops; returns the sizes."""
    frame = encode(msg, seq=4242)
    decoder = Decoder()
    (item,) = decoder.feed(frame)
    if not (isinstance(item, Frame) and pm.same(item.message, msg)):
        raise SystemExit(f"{type(msg).__name__} does not survive a round trip: {item}")
    batch = frame * BATCH
    if len(decoder.feed(batch)) != BATCH:
        raise SystemExit("a batch of frames did not decode to as many frames")
    bench.add(f"{name}.encode", lambda: encode(msg, 4242))
    bench.add(f"{name}.decode", lambda: decoder.feed(frame))
    bench.add(f"{name}.decode_batched", lambda: decoder.feed(batch), BATCH)
    return {
        "frame_bytes": len(frame),  # on the wire: COBS, delimiters, header and CRC included
        "payload_bytes": len(pm.encode_payload(msg)[1]),
    }


def codec_figures(bench: Bench, name: str, case: dict, goal: int | None) -> dict:
    decode_fps = bench.best(f"{name}.decode")
    case = dict(case,
                encode_fps=round(bench.best(f"{name}.encode")),
                encode_fps_median=round(bench.median(f"{name}.encode")),
                decode_fps=round(decode_fps),
                decode_fps_median=round(bench.median(f"{name}.decode")),
                decode_us=round(1e6 / decode_fps, 2))
    case[f"decode_fps_batched_{BATCH}"] = round(bench.best(f"{name}.decode_batched"))
    if goal is not None:
        case["goal_decode_fps"] = goal
        case["goal_met"] = decode_fps >= goal
    return case


def add_construct_comparison(bench: Bench, msg: pm.MeasurementFrame) -> dict:
    """Payload parse and build, numpy.frombuffer adapter against construct's Array."""
    ours = pm.CODECS[pm.BY_CLASS[pm.MeasurementFrame].type_id, REVISION_1_0].compiled
    _, payload = pm.encode_payload(msg)
    fields = {f: getattr(msg, f) for f in ("rig_seq", "rig_time_s", "current_a",
                                           "bus_voltage_v", "contactors", "cell_voltage_v",
                                           "temperature_c")}
    fields.update(n_cells=len(msg.cell_voltage_v), n_sensors=len(msg.temperature_c),
                  n_balancing=0, balancing=b"")
    if msg.balancing is not None:
        fields.update(n_balancing=len(msg.balancing),
                      balancing=np.packbits(msg.balancing, bitorder="little").tobytes())
    if CONSTRUCT_ARRAY_MEASUREMENT.build(fields) != payload:
        raise SystemExit("the construct-array struct does not build the same payload")
    parsed = CONSTRUCT_ARRAY_MEASUREMENT.parse(payload)
    if not np.array_equal(np.asarray(parsed.cell_voltage_v, np.float32), msg.cell_voltage_v):
        raise SystemExit("the construct-array struct does not parse the same cells")
    ours_fields = dict(fields, balancing=msg.balancing)
    bench.add("frombuffer.parse", lambda: ours.parse(payload))
    bench.add("construct_array.parse", lambda: CONSTRUCT_ARRAY_MEASUREMENT.parse(payload))
    bench.add("frombuffer.build", lambda: ours.build(ours_fields))
    bench.add("construct_array.build", lambda: CONSTRUCT_ARRAY_MEASUREMENT.build(fields))
    return {"n_cells": len(msg.cell_voltage_v), "payload_bytes": len(payload)}


def comparison_figures(bench: Bench, sizes: dict) -> dict:
    out = dict(sizes)
    for op in ("parse", "build"):
        ours, theirs = bench.best(f"frombuffer.{op}"), bench.best(f"construct_array.{op}")
        out[f"{op}_fps_frombuffer"] = round(ours)
        out[f"{op}_fps_construct_array"] = round(theirs)
        out[f"{op}_ratio"] = round(ours / theirs, 2)
    out["note"] = ("payload only, both compiled; construct's Array gives a list of Python "
                   "floats, which the firmware would still have to turn into an array")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7,
                        help="timed runs per figure; the best (and the median) are given")
    parser.add_argument("--min-time-s", type=float, default=0.2,
                        help="each timed run loops at least this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 repeats of at least 10 ms each")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.min_time_s = 2, 0.01
    rng = np.random.default_rng(args.seed)
    bench = Bench(args.min_time_s)
    sizes, goals = {}, {}
    for n in (16, 416):
        for suffix, mask in (("", False), ("_mask", True)):
            name = f"measurement_{n}{suffix}"
            sizes[name] = add_codec_case(bench, name, measurement(n, mask, rng))
            goals[name] = GOAL_DECODE_FPS[n]
    sizes["status"] = add_codec_case(bench, "status", status())
    goals["status"] = None
    comparison = add_construct_comparison(bench, measurement(416, False, rng))
    bench.run(args.repeat)
    cases = {name: codec_figures(bench, name, sizes[name], goals[name]) for name in sizes}
    print(json.dumps({
        "benchmark": "protocol_codec",
        "repeats": args.repeat,
        "min_time_s": args.min_time_s,
        "cells_per_temp_sensor": CELLS_PER_TEMP_SENSOR,
        "cases": cases,
        "goal_met": all(case.get("goal_met", True) for case in cases.values()),
        "construct_array_416": comparison_figures(bench, comparison),
        "python": platform.python_version(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),  # a shared machine
        "numpy": np.__version__,
        "construct": c.version_string,
    }))


if __name__ == "__main__":
    main()
