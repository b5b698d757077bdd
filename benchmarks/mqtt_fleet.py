"""A fleet of simulated packs publishing to a local Mosquitto in real time: how many packs
this machine holds. Prints one JSON line.

    .venv/bin/python benchmarks/mqtt_fleet.py [--packs 1,25,50,75,100,125,150]
        [--series 416] [--seconds 60] [--max-lag-s 0.5] [--p99-goal-ms 100]
        [--modes batch,process] [--fleet-option ARG ...] [--quick]

For each N in `--packs` and each mode, in sequence, with a fresh broker each time (quiet:
errors and warnings logged only):

    bms-emu fleet --packs N --series 416 --cells-per-temp-sensor 4 --state-period 1
        --arrays-period 1 --duration 60 --speed 1 --mqtt URL --json --packs-per-process M

where the mode `batch` gives M = auto (as many processes as cores, the packs split among
them, each process stepping its packs on one clock with one MQTT session) and `process`
gives M = 1 (each pack its own `bms-emu run` process: the fleet before batches).

and, in this process, one aiomqtt subscriber on `<prefix>/+/state` and `<prefix>/+/cells`
(QoS 1; state is published at QoS 1, cells at QoS 0) from before the fleet starts until
it has ended and a drain period has passed. Reported for each N:

- messages a second delivered (first to last received) and the expected steady rate;
- latency, receive wall time minus the payload's `unix_time_s` (when the pack queued it;
  same host, same clock): p50, p99, max — it includes the subscriber's own wait for CPU;
- lost: gaps in `seq` per pack and topic after the first message received of each, plus
  `state_tail_lost`: a fresh subscriber reads each pack's retained state after the run, and
  any seq beyond the last one delivered live was lost at the end; duplicates (a QoS 1
  redelivery, or the retained state republished on connect) are counted apart;
- real time: for each pack, the lag of its state messages behind its own start,
  (unix_time_s - time_s) minus that of its first state; a pack kept real time when its lag
  stayed under --max-lag-s and it ended with exit 0 having simulated the whole duration;
- CPU: all the fleet's processes (getrusage RUSAGE_CHILDREN after the fleet has waited for
  its packs, so startup included), the packs' steady share once all have started
  (/proc/<pid>/stat utime + stime of each fleet process, sampled every second, shared
  evenly among the packs it holds), the broker's and this process's;
  the 1-minute load average at the end; the time until every pack had published.

goal_met for N: every pack seen, zero lost, p99 < --p99-goal-ms, every pack kept real time
and exited 0. `largest_goal_met` is the largest N whose goal was met. Starting N packs is a
burst of CPU (about 50 ms a pack, while the first ones already run), so the latency is
also given for the messages queued once every pack had published, with
`goal_met_once_all_publishing` (the same goal on that latency): what the machine holds once
the fleet is up, as against what it holds through its start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.mqtt_broker
from tests.support.mqtt_broker import Broker, BrokerError  # noqa: E402

PREFIX = "bench"
PACK_PREFIX = "pack"
DRAIN_S = 2.0
SAMPLE_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOTE = ("latency = receive wall time - the payload's unix_time_s (queued by the pack), on one "
        "host; it includes the subscriber's own wait for CPU. lost = seq gaps after the first "
        "message of each pack and topic, plus retained-state seqs never delivered live. "
        "max_lag_s = how far a pack's simulated clock fell behind its wall clock start.")


class QuietBroker(Broker):
    """The test broker with errors and warnings logged only: `log_type all` would write a
    line for every message and cost the broker CPU this benchmark measures."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.conf_path.read_text()
        text = text.replace("log_type all\n", "log_type error\nlog_type warning\n")
        text = text.replace("connection_messages true", "connection_messages false")
        self.conf_path.write_text(text)


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, seconds; None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


@dataclass
class Track:
    """One pack's topic as received."""

    seqs: set[int] = field(default_factory=set)
    first: int | None = None
    duplicates: int = 0

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = seq
        if seq in self.seqs:
            self.duplicates += 1
        self.seqs.add(seq)

    @property
    def lost(self) -> int:
        """Missing seqs between the first received and the highest."""
        after = [s for s in self.seqs if s >= self.first]
        return max(after) - self.first + 1 - len(after) if after else 0


@dataclass
class PackClock:
    offset0: float | None = None  # unix_time_s - time_s of the first state
    max_lag_s: float = 0.0
    last_time_s: float = -1.0

    def add(self, time_s: float, unix_time_s: float) -> None:
        offset = unix_time_s - time_s
        if self.offset0 is None:
            self.offset0 = offset
        self.max_lag_s = max(self.max_lag_s, offset - self.offset0)
        self.last_time_s = max(self.last_time_s, time_s)


class Subscriber:
    def __init__(self) -> None:
        self.tracks: dict[tuple[str, str], Track] = {}
        self.clocks: dict[str, PackClock] = {}
        self.sent_s: list[float] = []  # unix_time_s of each message
        self.latencies_s: list[float] = []
        self.first_at: dict[str, float] = {}  # pack -> wall time of its first message
        self.received = 0
        self.first_recv = self.last_recv = None
        self.bad = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        now = time.time()
        try:
            body = json.loads(payload)
            pack, kind = body["pack_id"], topic.rsplit("/", 1)[1]
            seq, sent = int(body["seq"]), float(body["unix_time_s"])
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        self.received += 1
        self.first_recv = self.first_recv or now
        self.last_recv = now
        self.sent_s.append(sent)
        self.latencies_s.append(now - sent)
        self.first_at.setdefault(pack, now)
        self.tracks.setdefault((pack, kind), Track()).add(seq)
        if kind == "state":
            self.clocks.setdefault(pack, PackClock()).add(float(body["time_s"]), sent)

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-fleet-subscriber",
                                  max_queued_incoming_messages=0) as client:
            for kind in ("state", "cells"):
                await client.subscribe(f"{PREFIX}/+/{kind}", qos=1)
            ready.set()
            async for message in client.messages:
                self.on_message(message.topic.value, bytes(message.payload))


async def retained_states(port: int, n: int, wait_s: float = 3.0) -> dict[str, int]:
    """Each pack's retained state seq, read by a fresh subscriber."""
    seqs: dict[str, int] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-fleet-retained") as client:
        await client.subscribe(f"{PREFIX}/+/state", qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    body = json.loads(bytes(message.payload))
                    seqs[body["pack_id"]] = int(body["seq"])
                    if len(seqs) >= n:
                        break
        except TimeoutError:
            pass
    return seqs


class CpuSampler:
    """Each pack's CPU seconds, sampled every SAMPLE_S while it lives."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.load_max = 0.0

    async def run(self) -> None:
        while True:
            now = time.time()
            sampled = {}
            for pack, pid in list(self.pids.items()):
                if pid in sampled:  # a batch: its process is sampled once
                    continue
                sampled[pid] = pack
                cpu = proc_cpu_s(pid)
                if cpu is not None:
                    self.samples.setdefault(pack, []).append((now, cpu))
            self.load_max = max(self.load_max, os.getloadavg()[0])
            await asyncio.sleep(SAMPLE_S)

    def steady(self, since: float) -> dict:
        """CPU a pack used once every pack had started, as a share of one core: its
        process's, shared evenly among the packs the process holds."""
        packs_of = Counter(self.pids.values())
        first_pack = {pid: pack for pack, pid in reversed(self.pids.items())}
        shares = []
        for pack, points in self.samples.items():
            window = [(t, c) for t, c in points if t >= since]
            pid = self.pids[pack]
            if first_pack[pid] == pack and len(window) >= 2 and window[-1][0] > window[0][0]:
                share = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                shares += [share / packs_of[pid]] * packs_of[pid]
        if not shares:
            return {"packs_sampled": 0}
        total = float(np.sum(shares))
        return {"packs_sampled": len(shares), "processes": len(packs_of),
                "per_pack_core_pct_mean": round(100 * float(np.mean(shares)), 2),
                "per_pack_core_pct_max": round(100 * float(np.max(shares)), 2),
                "all_packs_cores": round(total, 3),
                "all_packs_machine_pct": round(100 * total / os.cpu_count(), 1)}


MODES = {"batch": "auto", "process": "1"}  # mode: --packs-per-process


def fleet_command(n: int, url: str, a, mode: str) -> list[str]:
    return [sys.executable, "-m", "bms_emu.main", "fleet", "--packs", str(n),
            "--series", str(a.series), "--cells-per-temp-sensor", "4",
            "--state-period", "1", "--arrays-period", "1", "--duration", str(a.seconds),
            "--speed", "1", "--mqtt", url, "--pack-prefix", PACK_PREFIX, "--json",
            f"--packs-per-process={MODES[mode]}", *a.fleet_option]


async def read_fleet(stream: asyncio.StreamReader, sampler: CpuSampler, events: dict) -> None:
    async for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "started":
            sampler.pids[event["pack_id"]] = event["pid"]
        else:
            events[event["pack_id"]] = event


async def one_fleet(n: int, a, mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as tmp:
        broker = QuietBroker(tmp).start()
        try:
            return {"mode": mode, **await _measure(n, a, broker, mode)}
        finally:
            broker.stop()


async def _measure(n: int, a, broker: Broker, mode: str) -> dict:
    sub, sampler, ended = Subscriber(), CpuSampler(), {}
    load_before = os.getloadavg()[0]  # others' work on a shared machine shows here
    broker_cpu0 = proc_cpu_s(broker.process.pid) or 0.0
    ready = asyncio.Event()
    receiving = asyncio.create_task(sub.run(broker.port, ready))
    await asyncio.wait_for(ready.wait(), 10)
    sampling = asyncio.create_task(sampler.run())
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    fleet = await asyncio.create_subprocess_exec(
        *fleet_command(n, f"{broker.url}/{PREFIX}", a, mode), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    reading = asyncio.create_task(read_fleet(fleet.stdout, sampler, ended))
    stderr = await fleet.stderr.read()
    await fleet.wait()
    await reading
    fleet_wall_s = time.time() - started
    load_end = os.getloadavg()[0]
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    await asyncio.sleep(DRAIN_S)
    receiving.cancel()
    sampling.cancel()
    await asyncio.gather(receiving, sampling, return_exceptions=True)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    broker_cpu_s = (proc_cpu_s(broker.process.pid) or 0.0) - broker_cpu0
    retained = await retained_states(broker.port, n)
    return report(n, a, sub, sampler, ended, retained, started, fleet_wall_s, fleet.returncode,
                  stderr.decode(errors="replace"),
                  cpu={"fleet_s": _cpu(children1) - _cpu(children0),
                       "broker_s": broker_cpu_s,
                       "subscriber_s": _cpu(self1) - _cpu(self0),
                       "load_before": load_before, "load_end": load_end})


def _cpu(r) -> float:
    return r.ru_utime + r.ru_stime


def report(n, a, sub: Subscriber, sampler: CpuSampler, ended: dict, retained: dict,
           started: float, fleet_wall_s: float, returncode: int, stderr: str,
           cpu: dict) -> dict:
    packs = [f"{PACK_PREFIX}-{k}" for k in range(1, n + 1)]
    seen = [p for p in packs if p in sub.first_at]
    all_started = max(sub.first_at.values()) if len(seen) == n else None
    lost = sum(t.lost for t in sub.tracks.values())
    duplicates = sum(t.duplicates for t in sub.tracks.values())
    tail_lost = 0
    for pack in packs:
        track = sub.tracks.get((pack, "state"))
        if pack in retained and track is not None:
            tail_lost += max(0, retained[pack] - max(track.seqs))
    lat_ms = np.asarray(sub.latencies_s) * 1e3
    steady_ms = (lat_ms[np.asarray(sub.sent_s) >= all_started]
                 if all_started is not None else np.zeros(0))
    lags = {p: sub.clocks[p].max_lag_s for p in packs if p in sub.clocks}
    last_state_s = a.seconds - 1.0 - 1e-6  # a state every simulated second from 0
    realtime = {p: (lags.get(p, float("inf")) <= a.max_lag_s
                    and sub.clocks[p].last_time_s >= last_state_s
                    and ended.get(p, {}).get("returncode") == 0)
                for p in packs if p in sub.clocks}
    exits_ok = returncode == 0 and all(ended.get(p, {}).get("returncode") == 0 for p in packs)
    span_s = (sub.last_recv - sub.first_recv) if sub.received > 1 else 0.0
    rtfs = [e["summary"]["rtf"] for e in ended.values() if e.get("summary")]
    p99 = float(np.percentile(lat_ms, 99)) if lat_ms.size else float("inf")
    kept = sum(realtime.values())
    out = {
        "packs": n,
        "packs_seen": len(seen),
        "fleet_exit": returncode,
        "packs_exit_0": sum(ended.get(p, {}).get("returncode") == 0 for p in packs),
        "fleet_wall_s": round(fleet_wall_s, 2),
        "all_publishing_after_s": (round(all_started - started, 2)
                                   if all_started is not None else None),
        "received": sub.received,
        "msgs_per_s": round(sub.received / span_s, 1) if span_s > 0 else 0.0,
        "expected_msgs_per_s": 2 * n,
        "latency_ms": _percentiles(lat_ms),
        "latency_ms_once_all_publishing": _percentiles(steady_ms),
        "lost": lost,
        "state_tail_lost": tail_lost,
        "duplicates": duplicates,
        "undecodable": sub.bad,
        "realtime": {
            "packs_kept": kept,
            "max_lag_s": round(max(lags.values()), 3) if lags else None,
            "median_pack_max_lag_s": round(float(np.median(list(lags.values()))), 3)
            if lags else None,
            "rtf_min": min(rtfs) if rtfs else None,
        },
        "cpu": {
            "fleet_cpu_s": round(cpu["fleet_s"], 2),
            "fleet_machine_pct": round(100 * cpu["fleet_s"] / fleet_wall_s / os.cpu_count(),
                                       1),
            "steady": sampler.steady(all_started) if all_started is not None else None,
            "broker_cpu_s": round(cpu["broker_s"], 2),
            "subscriber_cpu_s": round(cpu["subscriber_s"], 2),
            "loadavg_1m_before": round(cpu["load_before"], 2),
            "loadavg_1m_end": round(cpu["load_end"], 2),
            "loadavg_1m_max": round(sampler.load_max, 2),
        },
    }
    rest_met = len(seen) == n and exits_ok and lost == 0 and tail_lost == 0 and kept == n
    out["goal_met"] = bool(rest_met and p99 < a.p99_goal_ms)
    steady_p99 = float(np.percentile(steady_ms, 99)) if steady_ms.size else float("inf")
    out["goal_met_once_all_publishing"] = bool(rest_met and steady_p99 < a.p99_goal_ms)
    if not exits_ok:
        out["fleet_stderr_tail"] = stderr.strip()[-1500:]
    return out


def _percentiles(ms: np.ndarray) -> dict | None:
    if not ms.size:
        return None
    return {"n": int(ms.size), "p50": round(float(np.percentile(ms, 50)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2), "max": round(float(ms.max()), 2)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packs", default="1,25,50,75,100,125,150",
                   help="fleet sizes to run in sequence, comma-separated")
    p.add_argument("--series", type=int, default=416, help="cells in series per pack")
    p.add_argument("--seconds", type=int, default=60, help="duration of each fleet run")
    p.add_argument("--max-lag-s", type=float, default=0.5,
                   help="a pack keeps real time while its clock lags less than this")
    p.add_argument("--p99-goal-ms", type=float, default=100.0)
    p.add_argument("--fleet-option", action="append", default=[], metavar="ARG",
                   help="one more argument for `bms-emu fleet` (repeatable), e.g. "
                   "--fleet-option=--no-ha-discovery")
    p.add_argument("--modes", default="batch",
                   help=f"comma-separated, each N run in each: {', '.join(MODES)}")
    p.add_argument("--quick", action="store_true", help="2 packs of 16 cells for 5 s")
    a = p.parse_args()
    if a.quick:
        a.packs, a.series, a.seconds = "2", 16, 5
    try:
        a.sizes = [int(x) for x in a.packs.split(",") if x.strip()]
    except ValueError:
        p.error(f"--packs {a.packs!r}: comma-separated integers")
    if not a.sizes or any(not 1 <= n <= 1000 for n in a.sizes):
        p.error(f"--packs {a.packs!r}: each 1..1000")
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not a.mode_list or any(m not in MODES for m in a.mode_list):
        p.error(f"--modes {a.modes!r}: comma-separated, each one of {', '.join(MODES)}")
    return a


async def main() -> None:
    a = parse_args()
    runs = []
    for n in a.sizes:
        for mode in a.mode_list:
            try:
                runs.append(await one_fleet(n, a, mode))
            except BrokerError as exc:
                runs.append({"mode": mode, "packs": n, "error": str(exc), "goal_met": False})
    held = {m: [r["packs"] for r in runs if r["mode"] == m and r["goal_met"]]
            for m in a.mode_list}
    held_steady = {m: [r["packs"] for r in runs
                       if r["mode"] == m and r.get("goal_met_once_all_publishing")]
                   for m in a.mode_list}
    print(json.dumps({
        "benchmark": "mqtt_fleet",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "system": platform.system()},
        "series": a.series, "seconds": a.seconds, "state_period_s": 1, "arrays_period_s": 1,
        "speed": 1, "fleet_options": a.fleet_option,
        "goals": {"lost": 0, "p99_ms_below": a.p99_goal_ms, "max_lag_s": a.max_lag_s},
        "runs": runs,
        "largest_goal_met": {m: max(v) if v else None for m, v in held.items()},
        "largest_goal_met_once_all_publishing": {m: max(v) if v else None
                                                 for m, v in held_steady.items()},
        "note": NOTE,
    }))


if __name__ == "__main__":
    asyncio.run(main())
