"""Soak: `bms-emu serve --hil` for a long real-time run, driven by `bms-emu rig` over a
pseudo-terminal pair and publishing to a local Mosquitto. Prints one JSON line.

    .venv/bin/python benchmarks/soak.py [--seconds 3600] [--series 16] [--tick 0.01]
        [--profile pulses] [--warmup-s 5] [--serve-option ARG ...] [--quick]

What runs: a fresh Mosquitto on a free port (quiet), a pty pair relayed in this process
(`hil.pty_pair.PtyPair`, which counts the bytes it had to drop), and three children:

    bms-emu serve --serial A --hil --series 16 --tick 0.01 --mqtt URL --pack-id soak
        --stats FILE          (with XDG_DATA_HOME in a temporary directory: its store)
    bms-emu rig --serial B --series 16 --tick 0.01 --profile pulses --json
    soak.py --reference-loop --tick 0.01   (the machine's own jitter, see below)

plus an MQTT subscriber in this process on `bench/soak/#`. The rig sends a measurement
every tick and the firmware steps on each one (so it steps every 10 ms), answering with an
actuation frame; the emulator's own 10 ms loop runs beside it (watchdog steps when a
measurement is a tick late, telemetry, MQTT). `--seconds` counts from the rig's start; the
first `--warmup-s` of it are the warm-up. Then all are stopped with SIGTERM, the rig
first (it prints its summary), the emulator last (it writes its `--stats`).

Figures (what "jitter" means here):

- jitter: the emulator's tick loop lateness, each tick's wake time minus the time it fell
  due (k x tick after its start), p50 / p99 / max over the emulator's whole run; the
  percentiles are bin edges, at most 10 µs high (`bms.runtime.timing`). It is what a step or a
  telemetry message waits beyond its due time: the event loop's own delay (frames being
  handled, the MQTT thread holding the GIL, the OS scheduler) included.
- overruns: the emulator's ticks whose work ended after the next tick fell due, plus ticks
  skipped because the loop fell more than a second behind.
- reference: the same figures from a loop that ticks beside the emulator (same pacing
  code, same interpreter) and does nothing else: what this machine gives any 10 ms asyncio
  loop right now. asyncio's epoll waits in whole milliseconds, rounded up, so even an idle
  machine wakes a tick 0-1 ms late; `jitter_p99_over_reference` says how much the
  emulator's own work adds to the machine's noise.
- the rig's side, reported apart: its own tick loop (the same figures), its send lateness
  (the send's time minus its tick's due time: the tick's lateness plus the plant's
  advance) and the measurement -> actuation latency (send to the answer's arrival, through
  the relay and the emulator's step).
- frames lost: measurements never answered (a later answer came first) or not sent (port
  away), and frames either end could not decode; the last measurement may still be in
  flight when the rig stops (`unanswered_at_stop`, not a loss).
- MQTT: messages the subscriber received by topic, and gaps in each topic's `seq`.
- memory: the emulator's resident set (/proc/PID/status VmRSS) after the warm-up and at
  the end, and its growth; also sampled in between (about 20 samples) and its CPU share.

Goals: jitter p99 <= 2 ms, zero overruns, zero frames lost, memory growth < 5 %. Timing
on a shared machine is noisy: the 1-minute load average is reported before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from mqtt_fleet import BrokerError, QuietBroker, proc_cpu_s
from pty_roundtrip import BMS_EMU, REPO, Emulator, PtyLink, stop_process

from bms.runtime.pacing import ticks
from bms.runtime.timing import TickStats
from bms_emu.lifetime import run_until_signalled

PREFIX = "bench"
PACK_ID = "soak"
GOAL_JITTER_P99_MS = 2.0
GOAL_RSS_GROWTH_PCT = 5.0
MEMORY_SAMPLES = 20
DRAIN_S = 1.0
LOG_LINES_KEPT = 5
SEQ_TOPICS = ("state", "cells", "temperatures", "balancing", "events")


def rss_kib(pid: int) -> int | None:
    """VmRSS of a live process, KiB; None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Telemetry:
    """What a subscriber on the pack's topics receives: messages by topic, and gaps in each
    topic's seq (bounded: only the last seq of each topic is kept)."""

    def __init__(self, base: str):
        self.base = base
        self.by_topic: Counter[str] = Counter()
        self.last_seq: dict[str, int] = {}
        self.seq_gaps = 0
        self.seq_repeats = 0  # a seq not above the last one (a QoS 1 redelivery)
        self.undecodable = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        sub = topic.removeprefix(self.base + "/")
        self.by_topic[sub] += 1
        if sub not in SEQ_TOPICS:
            return
        try:
            seq = int(json.loads(payload)["seq"])
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1
            return
        last = self.last_seq.get(sub)
        if last is not None:
            if seq > last + 1:
                self.seq_gaps += seq - last - 1
            elif seq <= last:
                self.seq_repeats += 1
        self.last_seq[sub] = max(seq, last or 0)

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-soak-subscriber",
                                  max_queued_incoming_messages=0) as client:
            await client.subscribe(f"{self.base}/#", qos=1)
            ready.set()
            async for message in client.messages:
                self.on_message(message.topic.value, bytes(message.payload))

    def summary(self) -> dict:
        return {"received": sum(self.by_topic.values()),
                "by_topic": dict(sorted(self.by_topic.items())),
                "seq_gaps": self.seq_gaps, "seq_repeats": self.seq_repeats,
                "undecodable": self.undecodable}


class Memory:
    """The emulator's resident set and CPU time: after the warm-up, about MEMORY_SAMPLES
    times in between, and at the end."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, int | None, float | None]] = []  # (t_s, KiB, cpu_s)

    def sample(self, t_s: float) -> None:
        self.samples.append((round(t_s, 1), rss_kib(self.pid), proc_cpu_s(self.pid)))

    async def follow(self, start_s: float, until_s: float, clock: Callable[[], float]) -> None:
        """Samples from now to `until_s` (on `clock`; times given from `start_s`), the first
        and last included."""
        every_s = max(1.0, (until_s - clock()) / MEMORY_SAMPLES)
        self.sample(clock() - start_s)
        while (left_s := until_s - clock()) > 0:
            await asyncio.sleep(min(every_s, left_s))
            self.sample(clock() - start_s)

    def summary(self) -> dict:
        (t0, kib0, cpu0), (t1, kib1, cpu1) = self.samples[0], self.samples[-1]
        sizes = [kib for _, kib, _ in self.samples if kib is not None]
        growth = (round(100.0 * (kib1 - kib0) / kib0, 2)
                  if kib0 and kib1 is not None else None)
        cpu = (round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1)
               if cpu0 is not None and cpu1 is not None and t1 > t0 else None)
        return {"start_kib": kib0, "end_kib": kib1, "max_kib": max(sizes, default=None),
                "growth_pct": growth, "cpu_core_pct": cpu,
                "samples_kib": [kib for _, kib, _ in self.samples]}


class JsonChild:
    """A child that announces itself with a first line on stderr (later lines: the last few
    kept) and prints one JSON object on stdout when it stops: `bms-emu rig --json`, or this
    script's reference loop."""

    def __init__(self, argv: list[str], banner: bytes):
        self.argv = argv
        self.banner = banner
        self.log_lines = 0
        self.log_tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        self.summary: dict | None = None
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stdout: asyncio.Task | None = None
        self._stderr: asyncio.Task | None = None

    async def __aenter__(self) -> JsonChild:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._stdout = asyncio.create_task(self._proc.stdout.read())
        try:
            first = await asyncio.wait_for(self._proc.stderr.readline(), 60.0)
            if not first.startswith(self.banner) or b": error:" in first:
                rest = (first + await asyncio.wait_for(self._proc.stderr.read(), 10.0))
                raise RuntimeError(f"{' '.join(self.argv[1:4])} did not start: "
                                   f"{rest.decode(errors='replace')[-2000:]}")
        except BaseException:
            with contextlib.suppress(TimeoutError):  # it may be on its way out: let it
                await asyncio.wait_for(self._proc.wait(), 2.0)
            await stop_process(self._proc, sig=signal.SIGTERM)
            raise
        self._stderr = asyncio.create_task(self._keep_log())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _keep_log(self) -> None:
        async for line in self._proc.stderr:
            self.log_lines += 1
            self.log_tail.append(line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        """SIGTERM (once); then `summary` (None if it printed none) and `returncode`."""
        if self.returncode is not None:
            return
        await stop_process(self._proc, sig=signal.SIGTERM)
        out = (await self._stdout).decode(errors="replace").strip().splitlines()
        await self._stderr
        self.returncode = self._proc.returncode
        with contextlib.suppress(IndexError, ValueError):
            self.summary = json.loads(out[-1])

    def log(self) -> dict:
        return {"count": self.log_lines, "last": list(self.log_tail)}


def emulator_command(a, broker_url: str, stats: Path) -> list[str]:
    return ["--hil", "--autostart", *pack_options(a), "--tick", f"{a.tick:g}", "--mqtt",
            f"{broker_url}/{PREFIX}", "--pack-id", PACK_ID, "--stats", str(stats),
            *a.serve_option]


def rig_command(port: str, a, safety_s: float) -> list[str]:
    return [*BMS_EMU, "rig", "--serial", port, *pack_options(a), "--tick", f"{a.tick:g}",
            "--profile", a.profile, "--json", "--duration", f"{safety_s:g}"]


def reference_command(a, safety_s: float) -> list[str]:
    return [sys.executable, __file__, "--reference-loop", "--tick", f"{a.tick:g}",
            "--seconds", f"{safety_s:g}"]


def pack_options(a) -> list[str]:
    return ["--series", str(a.series), "--cells-per-temp-sensor", "4"]


def reference_loop(a) -> None:
    """A loop that ticks like the emulator's (same pacing, same interpreter, same start-up
    heap handling) and does nothing else, until SIGTERM or --seconds: the lateness this
    machine gives any such loop right now. Prints its TickStats summary."""
    stats = TickStats(a.tick)

    async def tick(duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async for now_s in ticks(a.tick, lambda: loop.time() - t0, "reference", stats):
            if now_s >= duration_s:
                return

    print(f"reference loop: tick {a.tick:g} s", file=sys.stderr, flush=True)
    run_until_signalled(tick(a.seconds))
    print(json.dumps(stats.summary()), flush=True)


@dataclass
class Run:
    """What one soak gathered, for the report."""

    ran_s: float
    emulator: Emulator
    stats: dict | None  # what `serve --stats` wrote
    rig: JsonChild
    reference: JsonChild
    telemetry: Telemetry
    memory: Memory
    relay: dict
    load_before: float


async def soak(a) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        broker = QuietBroker(Path(tmp) / "mosquitto").start()
        try:
            return report(a, await _soak(a, broker, Path(tmp)))
        finally:
            broker.stop()


async def _soak(a, broker: QuietBroker, tmp: Path) -> Run:
    telemetry = Telemetry(f"{PREFIX}/{PACK_ID}")
    ready = asyncio.Event()
    receiving = asyncio.create_task(telemetry.run(broker.port, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10.0)
        run = await _run(a, broker, tmp / "serve-stats.json", telemetry)
        await asyncio.sleep(DRAIN_S)  # the emulator's last messages reach the subscriber
        return run
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await receiving


async def _run(a, broker: QuietBroker, stats_path: Path, telemetry: Telemetry) -> Run:
    loop = asyncio.get_running_loop()
    safety_s = a.seconds + 300.0  # children end themselves should this process die
    load_before = os.getloadavg()[0]
    async with PtyLink("inprocess") as link:
        serve_args = emulator_command(a, broker.url, stats_path)
        # Left in reverse: the rig first (it prints its summary), then the reference loop,
        # then the emulator (it writes its --stats).
        async with (Emulator(link.paths[0], serve_args, safety_s, signal.SIGTERM) as emu,
                    JsonChild(reference_command(a, safety_s), b"reference loop:") as reference,
                    JsonChild(rig_command(link.paths[1], a, safety_s), b"bms-emu rig:") as rig):
            started_s = loop.time()
            await asyncio.sleep(a.warmup_s)
            memory = Memory(emu.pid)
            await memory.follow(started_s, started_s + a.seconds, loop.time)
            ran_s = loop.time() - started_s
        relay = link.stats()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    return Run(ran_s, emu, stats, rig, reference, telemetry, memory, relay, load_before)


def report(a, run: Run) -> dict:
    stats, rig_summary = run.stats, run.rig.summary
    tick = stats["tick"] if stats else None
    late = tick["lateness"] if tick else {}
    overruns = tick["overruns"] + tick["skipped"] if tick else None
    frames = rig_summary["frames"] if rig_summary else None
    if frames is not None:
        decode_errors = (sum(frames["decode_errors"].values())
                         + sum(stats["decode_errors"].values() if stats else ()))
        lost = frames["lost"] + frames["not_sent"] + decode_errors
        unanswered = frames["sent"] - frames["answered"] - frames["lost"]
    else:
        decode_errors = lost = unanswered = None
    mem = run.memory.summary()
    reference = run.reference.summary
    ref_late = reference["lateness"] if reference else {}
    ratio = (round(late["p99_ms"] / ref_late["p99_ms"], 2)
             if late.get("p99_ms") and ref_late.get("p99_ms") else None)
    goals = {
        "jitter_p99_ms": _goal(late.get("p99_ms"), "<=", GOAL_JITTER_P99_MS),
        "overruns": _goal(overruns, "==", 0),
        "frames_lost": _goal(lost, "==", 0),
        "rss_growth_pct": _goal(mem["growth_pct"], "<", GOAL_RSS_GROWTH_PCT),
    }
    mqtt_stats = (stats or {}).get("mqtt", {})
    return {
        "benchmark": "soak",
        "seconds": a.seconds, "warmup_s": a.warmup_s, "ran_s": round(run.ran_s, 2),
        "tick_s": a.tick, "series": a.series, "profile": a.profile,
        "serve_options": a.serve_option,
        "jitter_ms": {k: late.get(k) for k in ("p50_ms", "p99_ms", "max_ms", "mean_ms")},
        "overruns": overruns,
        "reference_jitter_ms": {k: ref_late.get(k) for k in ("p50_ms", "p99_ms", "max_ms")},
        "reference_overruns": (reference["overruns"] + reference["skipped"] if reference
                               else None),
        "jitter_p99_over_reference": ratio,
        "frames": None if frames is None else {
            "sent": frames["sent"], "answered": frames["answered"], "lost": lost,
            "unanswered_at_stop": unanswered, "not_sent": frames["not_sent"],
            "nacks": frames["nacks"], "decode_errors": decode_errors,
            "actuations": frames["actuations"], "interlock_trips": frames["interlock_trips"]},
        "mqtt": {**run.telemetry.summary(), "published": mqtt_stats.get("published"),
                 "dropped": mqtt_stats.get("dropped")},
        "rss_kib": mem,
        "emulator": stats,
        "emulator_exit": run.emulator.returncode,
        "emulator_log": run.emulator.warnings(),
        "rig": None if rig_summary is None else {
            **rig_summary["timing"], "final": rig_summary["final"],
            "events": len(rig_summary["events"]), "first_events": rig_summary["events"][:3]},
        "rig_exit": run.rig.returncode,
        "rig_log": run.rig.log(),
        "reference": reference,
        "relay_bytes": run.relay,
        "goals": goals,
        "goal_met": all(g["met"] for g in goals.values()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1m_before": round(run.load_before, 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
    }


def _goal(value: float | None, op: str, target: float) -> dict:
    met = value is not None and {"<=": value <= target, "<": value < target,
                                 "==": value == target}[op]
    return {"value": value, "goal": f"{op} {target:g}", "met": bool(met)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3600.0,
                   help="length of the run from the rig's start, warm-up included")
    p.add_argument("--warmup-s", type=float, default=5.0,
                   help="seconds before the first memory sample")
    p.add_argument("--series", type=int, default=16, help="cells in series")
    p.add_argument("--tick", type=float, default=0.01,
                   help="the emulator's tick and the rig's measurement period, seconds")
    p.add_argument("--profile", default="pulses", help="the rig's load profile")
    p.add_argument("--serve-option", action="append", default=[], metavar="ARG",
                   help="one more argument for `bms-emu serve` (repeatable), e.g. "
                   "--serve-option=--no-nvm")
    p.add_argument("--quick", action="store_true",
                   help="the CI run: 6 s, the first 2 of them the warm-up")
    p.add_argument("--reference-loop", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.reference_loop:
        return a
    if a.quick:
        a.seconds, a.warmup_s = 6.0, 2.0
    if not 0 <= a.warmup_s < a.seconds:
        p.error(f"--warmup-s {a.warmup_s:g}: from 0 to below --seconds ({a.seconds:g})")
    return a


def main() -> None:
    a = parse_args()
    if a.reference_loop:  # the child that measures the machine, not the emulator
        reference_loop(a)
        return
    try:
        out = asyncio.run(soak(a))
    except BrokerError as exc:
        out = {"benchmark": "soak", "error": str(exc), "goal_met": False}
    print(json.dumps(out))
    sys.exit(0 if "error" not in out else 1)


if __name__ == "__main__":
    main()
