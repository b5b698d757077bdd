"""The CAN link of `bms-emu serve --sim`: the frame periods it holds, how fast it answers a
pylon-hv request, and the CPU it costs. Prints one JSON line.

    .venv/bin/python benchmarks/can_link.py [--duration 30] [--quick]

Three `serve --sim` children on a pseudo-terminal (nobody at the other end), each for
`--duration` s: without `--can`, with `--can udp_multicast:GROUP` (pylon-lv) and with
`--can-protocol pylon-hv`. This process is the inverter on the multicast group: it sends the
keep-alive each second (pylon-hv: the 0x4200 request, which is the keep-alive there) and
times what comes back on its monotonic clock. Per pylon-lv frame: how many came and the
spread of the intervals between them (the goal: the DBC's period, 1 s or 5 s, held within
50 ms). Per pylon-hv request: the time to the last frame of its answer (0x4280). CPU:
each child's user + system time over its wall time, so the link's cost is the difference
between the runs with and without it (the same machine, one after the other; a shared
machine makes it noisy, so read it as a ratio, not an absolute).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import can
import numpy as np

from bms.links.can.frame_sets import frame_set

BMS_EMU = (sys.executable, "-m", "bms_emu.main")
GOAL_JITTER_S = 0.05


def serve(duration_s: float, extra: list[str]) -> subprocess.Popen:
    master, slave = os.openpty()
    child = subprocess.Popen([*BMS_EMU, "serve", "--sim", "--autostart", "--no-nvm",
                              "--serial", os.ttyname(slave), "--duration", str(duration_s),
                              *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, pass_fds=())
    child.pty = (master, slave)  # kept open while the child runs
    return child


def finish(child: subprocess.Popen, started_cpu_s: float, started_wall_s: float) -> dict:
    _, err = child.communicate(timeout=120)
    wall_s = time.monotonic() - started_wall_s
    for fd in child.pty:
        os.close(fd)
    if child.returncode != 0:
        raise SystemExit(f"serve failed: {err[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = usage.ru_utime + usage.ru_stime - started_cpu_s
    return {"wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3),
            "cpu_pct": round(100.0 * cpu_s / wall_s, 2)}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(duration_s: float, protocol: str | None) -> dict:
    """One serve child; with a protocol, this process is its inverter."""
    channel = f"239.74.{random.randrange(256)}.{random.randrange(1, 255)}"
    extra = [] if protocol is None else ["--can", f"udp_multicast:{channel}",
                                         "--can-protocol", protocol]
    cpu0, wall0 = children_cpu_s(), time.monotonic()
    child = serve(duration_s, extra)
    arrivals: dict[int, list[float]] = defaultdict(list)
    answers_ms: list[float] = []
    if protocol is not None:
        bus = can.Bus(interface="udp_multicast", channel=channel)
        hv = protocol == "pylon-hv"
        keepalive = (can.Message(arbitration_id=0x4200, data=bytes(8), is_extended_id=True)
                     if hv else can.Message(arbitration_id=0x305, data=bytes(8),
                                            is_extended_id=False))
        next_keepalive = asked = time.monotonic()
        while child.poll() is None:
            now = time.monotonic()
            if now >= next_keepalive:
                bus.send(keepalive)
                asked, next_keepalive = now, next_keepalive + 1.0
            frame = bus.recv(timeout=0.01)
            if frame is None or frame.arbitration_id in (0x305, 0x4200):
                continue
            arrivals[frame.arbitration_id].append(frame.timestamp)
            if hv and frame.arbitration_id == 0x4280:
                answers_ms.append(1000.0 * (time.monotonic() - asked))
        bus.shutdown()
    out = {"child": finish(child, cpu0, wall0)}
    if protocol == "pylon-lv":
        periods = {m.frame_id: p for m, p in frame_set("pylon-lv").periodic}
        frames = {}
        for fid, times in sorted(arrivals.items()):
            gaps = np.diff(times[1:])  # the first frame waits for the first step
            frames[f"0x{fid:03X}"] = {
                "frames": len(times), "period_s": periods.get(fid),
                "gap_mean_s": round(float(gaps.mean()), 4) if gaps.size else None,
                "gap_min_s": round(float(gaps.min()), 4) if gaps.size else None,
                "gap_max_s": round(float(gaps.max()), 4) if gaps.size else None}
        worst = max((abs(f[k] - f["period_s"]) for f in frames.values() if f["period_s"]
                     for k in ("gap_min_s", "gap_max_s") if f[k] is not None), default=None)
        out.update(frames=frames, frames_per_s=round(
            sum(len(t) for t in arrivals.values()) / out["child"]["wall_s"], 2),
            worst_jitter_s=None if worst is None else round(worst, 4),
            goal_met=worst is not None and worst <= GOAL_JITTER_S)
    elif protocol == "pylon-hv":
        a = np.array(answers_ms)
        out.update(answers=len(a),
                   answer_ms_p50=round(float(np.median(a)), 2) if a.size else None,
                   answer_ms_max=round(float(a.max()), 2) if a.size else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="s of each serve run")
    parser.add_argument("--quick", action="store_true", help="5 s runs (the tests' check)")
    args = parser.parse_args()
    duration_s = 5.0 if args.quick else args.duration
    os.chdir(tempfile.mkdtemp(prefix="bms-can-bench-"))  # nothing left in the caller's cwd
    without = run(duration_s, None)
    lv = run(duration_s, "pylon-lv")
    hv = run(duration_s, "pylon-hv")
    print(json.dumps({
        "benchmark": "can_link", "duration_s": duration_s,
        "cpu_pct_without_can": without["child"]["cpu_pct"],
        "cpu_pct_pylon_lv": lv["child"]["cpu_pct"], "cpu_pct_pylon_hv": hv["child"]["cpu_pct"],
        "can_cpu_pct": round(lv["child"]["cpu_pct"] - without["child"]["cpu_pct"], 2),
        "pylon_lv": {k: v for k, v in lv.items() if k != "child"},
        "pylon_hv": {k: v for k, v in hv.items() if k != "child"},
        "note": "cpu_pct: a serve child's user + system time over its wall time; the link's "
                "cost is the difference with and without --can (one after the other)",
        "repo": str(Path(__file__).resolve().parents[1]),
    }))


if __name__ == "__main__":
    main()
