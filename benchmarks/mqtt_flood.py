"""A flood of MQTT messages at an emulator: what it does to the firmware's tick lateness.
Prints one JSON line.

    .venv/bin/python benchmarks/mqtt_flood.py [--seconds 20] [--tick 0.01] [--series 16]
        [--big-mb 40] [--big-proto-mb 2.1] [--small 50000] [--repo DIR] [--quick]

Two `bms-emu serve --sim --mqtt URL --tick 0.01 --no-nvm --stats FILE` emulators run side by
side on one fresh Mosquitto (quiet, no size limit of its own: the emulator's bounds are
what is measured), pack `target` and pack `reference`, each for `--seconds`. Twice:

- calm: nothing else. The two are the same loop on the same machine at the same time: how
  far apart their lateness figures come is the machine's own noise.
- flood: as soon as both are online, anonymous messages at the target, as fast as this
  process can publish them: one `--big-mb` MB JSON on `cmd/state`, one `--big-proto-mb` MB
  message on `proto/in`, then `--small` small ones, half `{"state": "run"}` on
  `cmd/state`, half a GetStatus request on `proto/in` (commands are off, as by default).

Figures for each emulator (from its `--stats`): the tick loop's lateness (wake time minus
due time) p50 / p99 / max, overruns (+ skipped ticks), MQTT messages published and dropped
(any ordinary message: the answers to the flood's requests too), connections made, read
windows throttled (the session's read budget spent), messages refused unread (by
subscription and reason), commands answered with an error, peak RSS; from a subscriber
in this process, its telemetry (state, cells, temperatures, balancing) received and lost
(gaps in seq); from the broker's log, messages it dropped for the emulator (bigger than the
Maximum Packet Size the emulator's MQTT 5 session announces). `p99_ratio` = target p99 /
reference p99 in each run; the flood's effect is the flood run's ratio against the calm
run's. `extra_overruns_calm` is the target's overruns less the reference's in the calm run:
what the machine alone makes of two identical loops.

Goal: the flood moves the target's p99 lateness, relative to the reference beside it, by no
more than the machine's own noise: flood p99_ratio <= calm p99_ratio + max(NOISE_FLOOR,
|calm p99_ratio - 1|); no overruns the reference did not have too; no telemetry lost; both
big messages kept from the firmware (dropped by the broker, or refused unread).

`--repo DIR` runs the emulators from another checkout (its own code, this interpreter):
the figures before a change, to set beside those after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from mqtt_fleet import BrokerError, QuietBroker

from protocol import messages as pm
from protocol.codec import encode
from protocol.framing import Flags

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench"
PACKS = ("target", "reference")
NOISE_FLOOR = 0.25  # of the p99 ratio: a 10 ms loop wakes in whole epoll milliseconds
ONLINE_WITHIN_S = 60.0
SEQ_TOPICS = ("state", "cells", "temperatures", "balancing")
STOP_WITHIN_S = 20.0


class Emulator:
    """One `bms-emu serve --sim --mqtt` child; its --stats read when it has stopped."""

    def __init__(self, a, pack_id: str, url: str, tmp: Path):
        self.pack_id = pack_id
        self.stats_path = tmp / f"{pack_id}-stats.json"
        self.argv = [sys.executable, "-m", "bms_emu.main", "serve", "--sim", "--mqtt", url,
                     "--pack-id", pack_id, "--series", str(a.series), "--tick", f"{a.tick:g}",
                     "--no-nvm", "--no-ha-discovery", "--autostart", "--stats",
                     str(self.stats_path),
                     "--duration", f"{a.seconds + 120:g}"]  # ends itself should we die
        self.cwd = a.repo
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = b""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=self.cwd, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)

    async def stop(self) -> dict | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = await asyncio.wait_for(self.proc.communicate(), STOP_WITHIN_S)
        except TimeoutError:
            self.proc.kill()
            _, self.stderr = await self.proc.communicate()
        if not self.stats_path.exists():
            return None
        return json.loads(self.stats_path.read_text())


class Flooder:
    """Publishes the flood from a thread of its own (paho, QoS 0, as fast as it goes)."""

    def __init__(self, port: int, a):
        self.port = port
        self.a = a
        self.sent = 0
        self.took_s: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        base = f"{PREFIX}/target"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-flooder")
        client.connect("127.0.0.1", self.port, keepalive=60)
        client.loop_start()
        started = time.monotonic()
        big = b'{"state": "run", "pad": "' + b"x" * int(self.a.big_mb * 1e6) + b'"}'
        infos = [client.publish(f"{base}/cmd/state", big),
                 client.publish(f"{base}/proto/in", os.urandom(int(self.a.big_proto_mb * 1e6)))]
        command = b'{"state": "run"}'
        request = encode(pm.GetStatus(), 1, Flags.REQUEST)
        for k in range(self.a.small):
            topic, payload = ((f"{base}/cmd/state", command) if k % 2 else
                              (f"{base}/proto/in", request))
            infos.append(client.publish(topic, payload))
        for info in infos:
            info.wait_for_publish(timeout=120)
        self.sent = sum(info.is_published() for info in infos)
        self.took_s = time.monotonic() - started
        client.loop_stop()
        client.disconnect()


class Telemetry:
    """Both packs' availability and telemetry as a subscriber gets them: who is online, and
    the gaps in each topic's seq (a gap is a lost message)."""

    def __init__(self) -> None:
        self.online: set[str] = set()
        self.last: dict[tuple[str, str], int] = {}
        self.received: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.subscribed = asyncio.Event()

    async def run(self, port: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-flood-watch",
                                  max_queued_incoming_messages=0) as c:
            await c.subscribe(f"{PREFIX}/+/availability", qos=1)
            for topic in SEQ_TOPICS:
                await c.subscribe(f"{PREFIX}/+/{topic}", qos=1)
            self.subscribed.set()
            async for m in c.messages:
                _, pack, topic = m.topic.value.split("/", 2)
                if topic == "availability":
                    if bytes(m.payload) == b"online":
                        self.online.add(pack)
                    continue
                seq = json.loads(m.payload)["seq"]
                last = self.last.get((pack, topic))
                self.received[pack] += 1
                if last is not None and seq > last + 1:
                    self.lost[pack] += seq - last - 1
                self.last[pack, topic] = max(seq, last or 0)

    async def wait_online(self) -> None:
        async with asyncio.timeout(ONLINE_WITHIN_S):
            while not self.online >= set(PACKS):
                await asyncio.sleep(0.05)


async def one_run(a, flood: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        # notices too: the broker's "Dropping too large outgoing PUBLISH for ..." lines
        broker = QuietBroker(Path(tmp) / "mosquitto", extra_config="log_type notice").start()
        telemetry = Telemetry()
        watching = asyncio.create_task(telemetry.run(broker.port))
        try:
            async with asyncio.timeout(ONLINE_WITHIN_S):
                await telemetry.subscribed.wait()
            url = f"{broker.url}/{PREFIX}"
            emulators = [Emulator(a, pack, url, Path(tmp)) for pack in PACKS]
            for e in emulators:
                await e.start()
            await telemetry.wait_online()
            started = time.monotonic()
            flooder = Flooder(broker.port, a) if flood else None
            if flooder is not None:
                flooder.start()
            await asyncio.sleep(a.seconds)
            stats = {e.pack_id: await e.stop() for e in emulators}
            if flooder is not None:
                flooder.thread.join(30)
            log = broker.log_path.read_text(errors="replace")
            return {"flood": flood, "ran_s": round(time.monotonic() - started, 2),
                    "flood_sent": flooder.sent if flooder else 0,
                    "flood_took_s": round(flooder.took_s, 2) if flooder and flooder.took_s
                    else None,
                    **{pack: {**figures(stats[pack], e),
                              "telemetry_received": telemetry.received[pack],
                              "telemetry_lost": telemetry.lost[pack],
                              "dropped_by_broker": log.count(
                                  f"Dropping too large outgoing PUBLISH for bms-emu-{pack} ")}
                       for pack, e in zip(PACKS, emulators, strict=True)}}
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watching
            broker.stop()


def figures(stats: dict | None, e: Emulator) -> dict:
    if stats is None:
        return {"exit": e.proc.returncode,
                "error": f"no --stats; stderr: {e.stderr.decode(errors='replace')[-1500:]}"}
    tick, mqtt = stats["tick"], stats.get("mqtt", {})
    late = tick["lateness"]
    return {"exit": e.proc.returncode,
            "p50_ms": late["p50_ms"], "p99_ms": late["p99_ms"], "max_ms": late["max_ms"],
            "overruns": tick["overruns"] + tick["skipped"], "ticks": tick["ticks"],
            "published": mqtt.get("published"), "dropped": mqtt.get("dropped"),
            "connects": mqtt.get("connects"), "throttled": mqtt.get("throttled"),
            "refused_messages": mqtt.get("refused_messages"),
            "refused_commands": mqtt.get("refused_commands"),
            "not_enabled": stats.get("not_enabled"), "tick_errors": stats.get("tick_errors"),
            "max_rss_kib": stats.get("max_rss_kib"),
            "log_lines": len([ln for ln in e.stderr.decode(errors="replace").splitlines()
                              if ln.strip()])}


def ratio(run: dict) -> float | None:
    t, r = run["target"].get("p99_ms"), run["reference"].get("p99_ms")
    return round(t / r, 3) if t and r else None


def report(a, calm: dict, flood: dict) -> dict:
    calm_ratio, flood_ratio = ratio(calm), ratio(flood)
    noise = None if calm_ratio is None else max(NOISE_FLOOR, abs(calm_ratio - 1.0))
    target = flood["target"]
    refused = target.get("refused_messages") or {}
    kept_out = (sum(r.get("too_large", 0) for r in refused.values())
                + target.get("dropped_by_broker", 0))
    goals = {
        "p99_ratio_within_noise": _goal(
            flood_ratio, "<=", None if noise is None else round(calm_ratio + noise, 3)),
        "extra_overruns": _goal(None if "overruns" not in target else
                                target["overruns"] - flood["reference"]["overruns"], "<=", 0),
        "telemetry_lost": _goal(target.get("telemetry_lost"), "==", 0),
        "big_messages_kept_out": _goal(kept_out, "==", 2),
    }
    calm_extra = (calm["target"]["overruns"] - calm["reference"]["overruns"]
                  if "overruns" in calm["target"] and "overruns" in calm["reference"] else None)
    return {"benchmark": "mqtt_flood", "seconds": a.seconds, "tick_s": a.tick,
            "series": a.series, "repo": str(a.repo),
            "flood": {"big_mb": a.big_mb, "big_proto_mb": a.big_proto_mb, "small": a.small},
            "calm": calm, "flooded": flood,
            "p99_ratio_calm": calm_ratio, "p99_ratio_flood": flood_ratio, "noise": noise,
            "extra_overruns_calm": calm_extra,
            "goals": goals, "goal_met": all(g["met"] for g in goals.values()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2)}}


def _goal(value, op: str, target) -> dict:
    met = value is not None and target is not None and (
        value <= target if op == "<=" else value == target)
    return {"value": value, "goal": f"{op} {target}", "met": bool(met)}


async def bench(a) -> dict:
    calm = await one_run(a, flood=False)
    flood = await one_run(a, flood=True)
    return report(a, calm, flood)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="each run's length")
    p.add_argument("--tick", type=float, default=0.01, help="the emulators' tick, seconds")
    p.add_argument("--series", type=int, default=16, help="cells in series")
    p.add_argument("--big-mb", type=float, default=40.0, help="the big JSON on cmd/state, MB")
    p.add_argument("--big-proto-mb", type=float, default=2.1,
                   help="the big message on proto/in, MB")
    p.add_argument("--small", type=int, default=50_000, help="small messages after them")
    p.add_argument("--repo", type=Path, default=REPO,
                   help="run the emulators from this checkout (default: this one)")
    p.add_argument("--quick", action="store_true",
                   help="the CI run: 4 s runs, 4 MB + 0.5 MB + 10000 messages")
    a = p.parse_args()
    if a.quick:
        a.seconds, a.big_mb, a.big_proto_mb, a.small = 4.0, 4.0, 0.5, 10_000
    return a


def main() -> None:
    a = parse_args()
    try:
        out = asyncio.run(bench(a))
    except (BrokerError, TimeoutError) as exc:
        out = {"benchmark": "mqtt_flood", "error": f"{type(exc).__name__}: {exc}",
               "goal_met": False}
    print(json.dumps(out))
    sys.exit(0 if "error" not in out else 1)


if __name__ == "__main__":
    main()
