"""`bms-emu serve --sim --mqtt` end to end, against a real Mosquitto: what a monitoring
system sees (state, cells, temperatures, balancing, fault events, retained availability
and its will, Home Assistant discovery) and what a controller may do (commands, held to
the command policy and to the broker's ACL).

The emulator runs as a subprocess, `--duration` as a safety limit, and is ended in a
`finally`; every wait has a deadline. Subscribers are aiomqtt clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from bms.core.signals import State
from bms.data.faults import FAULT_CODES, Level, names_in
from bms.links.mqtt.discovery import discovery_messages
from tests.support.mqtt_broker import Broker

REPO = Path(__file__).resolve().parents[2]
PACK = "p1"
BASE = f"bms/{PACK}"
SAFETY_S = 30.0  # --duration: the emulator ends by itself if a test forgets it
STARTUP_S = 20.0  # the first wait of a test: Python starting on a busy machine
DEADLINE_S = 5.0  # the usual wait for something that should come within a second or two
QUIET_S = 1.0  # how long "nothing comes" is watched
LEVELS = [level.value for level in Level]
# views.status_dict, which every interface gives, plus what the bridge adds.
STATUS_KEYS = {
    "time_s", "state", "contactors", "contactors_closed", "faults", "fault_bitmap",
    "charge_limit_a", "discharge_limit_a", "pack_voltage_v", "current_a", "soc_pct",
    "soh_pct", "remaining_wh", "runtime_s", "cell_v_min", "cell_v_min_cell", "cell_v_max",
    "cell_v_max_cell", "temp_c_min", "temp_c_min_sensor", "temp_c_max", "temp_c_max_sensor",
    "balancing_count", "store", "save_failures"}
BRIDGE_KEYS = {"power_w", "levels", "seq", "pack_id", "unix_time_s"}
POLICY = "state,clear-faults,config=limits.*"
CLIENT_ID = f"bms-emu-{PACK}"  # the emulator's MQTT client id, as the broker logs it

USERS = {"bms": "bms-secret", "operator": "op-secret", "viewer": "view-secret"}
ACL = """\
user bms
topic write bms/#
topic write homeassistant/#
topic read bms/+/cmd/#
topic read homeassistant/status

user operator
topic write bms/+/cmd/#
topic read bms/#

user viewer
topic read bms/#
"""


# --- the emulator -----------------------------------------------------------------------

class Serve:
    """One `bms-emu serve --sim` process; its output goes to a file shown on failure."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path):
        self.process = process
        self.output = output

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not end within 5 s; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


@contextlib.contextmanager
def serve(url: str, tmp_path: Path, *options: str, series: int = 8,
          env: dict[str, str] | None = None, watch: tuple[Seen, ...] = (),
          pack_id: str = PACK, preexec: Callable[[], None] | None = None) -> Iterator[Serve]:
    """`watch`: subscribers whose failed waits show this emulator's output. `preexec`: run
    in the child before it starts (resource limits)."""
    argv = [sys.executable, "-m", "bms_emu.main", "serve", "--sim", "--mqtt", url,
            "--pack-id", pack_id, "--series", str(series), "--duration", str(SAFETY_S),
            "--autostart", *options]
    output = tmp_path / f"serve-{time.monotonic_ns()}.out"
    environment = {k: v for k, v in os.environ.items() if k != "BMS_MQTT_PASSWORD"}
    environment.update(env or {})
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, env=environment,
                                   preexec_fn=preexec)
    emulator = Serve(process, output)
    for seen in watch:
        seen.emulator = emulator
    try:
        yield emulator
    finally:
        emulator.stop()


# --- subscribers ------------------------------------------------------------------------

class Seen:
    """What one subscriber received: (arrival monotonic time, message), in order."""

    def __init__(self, client: aiomqtt.Client, name: str = "subscriber"):
        self.client = client
        self.name = name
        self.emulator: Serve | None = None  # its output is shown when a wait fails
        self.messages: list[tuple[float, aiomqtt.Message]] = []

    async def until(self, match: Callable[[aiomqtt.Message], bool],
                    timeout: float = DEADLINE_S, why: str = "") -> aiomqtt.Message:
        """The first message from now on that matches; fails at the deadline."""
        try:
            async with asyncio.timeout(timeout):
                async for message in self.client.messages:
                    self.messages.append((time.monotonic(), message))
                    if match(message):
                        return message
        except TimeoutError:
            pass
        output = "" if self.emulator is None else f"\nserve output:\n{self.emulator.text()}"
        pytest.fail(f"{self.name}: no {why or 'matching message'} within {timeout} s; "
                    f"saw {self.summary()}{output}")

    async def during(self, seconds: float) -> list[aiomqtt.Message]:
        """Everything that arrives within `seconds` from now."""
        got: list[aiomqtt.Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in self.client.messages:
                    self.messages.append((time.monotonic(), message))
                    got.append(message)
        return got

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for _, m in self.messages if m.topic.value == topic]

    def summary(self, last: int = 8) -> str:
        tail = [f"{m.topic.value} {bytes(m.payload)[:300]!r}" for _, m in self.messages[-last:]]
        return f"{len(self.messages)} messages, the last: " + "; ".join(tail)


def body(message: aiomqtt.Message) -> dict:
    return json.loads(bytes(message.payload))


def on_topic(topic: str, check: Callable[[dict], bool] | None = None
             ) -> Callable[[aiomqtt.Message], bool]:
    def match(message: aiomqtt.Message) -> bool:
        if message.topic.value != topic:
            return False
        return check is None or check(body(message))
    return match


def is_payload(topic: str, payload: bytes) -> Callable[[aiomqtt.Message], bool]:
    return lambda m: m.topic.value == topic and bytes(m.payload) == payload


def client(broker: Broker, user: str | None = None) -> aiomqtt.Client:
    password = broker.users[user] if user else None
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          identifier=f"test-{user or 'anon'}-{time.monotonic_ns()}")


async def subscribed(c: aiomqtt.Client, *filters: str, name: str = "subscriber") -> Seen:
    for topic_filter in filters:
        await c.subscribe(topic_filter, qos=1)
    return Seen(c, name)


async def command(c: aiomqtt.Client, name: str, payload: dict | bytes) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await c.publish(f"{BASE}/cmd/{name}", data, qos=1)


def result_with(name: str, ident: object) -> Callable[[aiomqtt.Message], bool]:
    return on_topic(f"{BASE}/cmd/{name}/result", lambda r: r.get("id") == ident)


def in_state(name: str) -> Callable[[aiomqtt.Message], bool]:
    return on_topic(f"{BASE}/state", lambda s: s["state"] == name)


def failed(emulator: Serve, seen: Seen | None = None) -> str:
    return (f"serve output:\n{emulator.text()}" +
            (f"\n{seen.summary()}" if seen is not None else ""))


async def broker_logged(broker: Broker, text: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not in the broker log\n{broker.log_tail()}"
        await asyncio.sleep(0.05)


# --- 1. telemetry contents --------------------------------------------------------------

async def test_state_cells_and_temperatures_carry_sane_consistent_values(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    series, per_sensor, state_period, arrays_period = 10, 3, 0.3, 0.5
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, f"{BASE}/#")
        with serve(mqtt_broker.url, tmp_path, "--cells-per-temp-sensor", str(per_sensor),
                   "--state-period", str(state_period), "--arrays-period", str(arrays_period),
                   series=series, watch=(seen,)) as emulator:
            await seen.until(in_state("RUN"), timeout=STARTUP_S, why="state RUN")
            await seen.during(3.2)
            output = failed(emulator, seen)

    states = [body(m) for m in seen.on(f"{BASE}/state")]
    cells = [body(m) for m in seen.on(f"{BASE}/cells")]
    temps = [body(m) for m in seen.on(f"{BASE}/temperatures")]
    balancing = [body(m) for m in seen.on(f"{BASE}/balancing")]
    assert states and cells and temps and balancing, output

    for s in states:
        assert s.keys() >= STATUS_KEYS | BRIDGE_KEYS, sorted(STATUS_KEYS | BRIDGE_KEYS - s.keys())
        assert s["state"] in list(State)
        assert s["pack_id"] == PACK
        assert abs(s["unix_time_s"] - time.time()) < 60
        assert 0.0 <= s["soc_pct"] <= 100.0
        assert 0.0 < s["soh_pct"] <= 100.0
        assert isinstance(s["faults"], list)
        assert all(name in FAULT_CODES for name in s["faults"]), s["faults"]
        assert s["faults"] == names_in(s["fault_bitmap"])
        assert set(s["levels"]) == set(LEVELS)
        assert all(isinstance(s["levels"][level], bool) for level in LEVELS), s["levels"]
        if not s["faults"]:
            assert not any(s["levels"].values()), s
        # Rounded to 7 significant digits, as every figure of the state.
        assert s["power_w"] == pytest.approx(s["pack_voltage_v"] * s["current_a"], rel=1e-6,
                                             abs=1e-12)
        for key in ("power_w", "charge_voltage_limit_v", "discharge_voltage_limit_v"):
            assert s[key] is None or float(f"{s[key]:.7g}") == s[key], (key, s)
        assert 1 <= s["cell_v_min_cell"] <= series and 1 <= s["cell_v_max_cell"] <= series
        assert not any(key.endswith("_index") for key in s), s  # 0-based: payloads only
        assert s["cell_v_min"] <= s["cell_v_max"]
    assert states[-1]["state"] == "RUN" and states[-1]["contactors"] == "closed", states[-1]

    for c_msg in cells:
        assert len(c_msg["cell_voltage_v"]) == series
        assert all(1.0 < v < 4.5 for v in c_msg["cell_voltage_v"]), c_msg
    for t_msg in temps:
        assert len(t_msg["temperature_c"]) == math.ceil(series / per_sensor)  # 4, not 3
        assert all(-40.0 < t < 80.0 for t in t_msg["temperature_c"]), t_msg
    for b_msg in balancing:
        assert len(b_msg["mask"]) == series
        assert b_msg["bleeding_cells"] == [i + 1 for i, on in enumerate(b_msg["mask"]) if on]

    # The pack voltage is the sum of the cells: to the rounding when both come from the
    # same step (the first step sends both), within a few steps' drift otherwise.
    same_step = 0
    for s in states:
        nearest = min(cells, key=lambda c_msg: abs(c_msg["unix_time_s"] - s["unix_time_s"]))
        volts = nearest["cell_voltage_v"]
        if abs(nearest["unix_time_s"] - s["unix_time_s"]) < 0.05:
            same_step += 1
            assert s["pack_voltage_v"] == pytest.approx(sum(volts), abs=0.01), (s, nearest)
            assert s["cell_v_min"] == pytest.approx(min(volts), abs=1e-6), (s, nearest)
            assert s["cell_v_max"] == pytest.approx(max(volts), abs=1e-6), (s, nearest)
        else:
            assert s["pack_voltage_v"] == pytest.approx(sum(volts), abs=0.2), (s, nearest)
    assert same_step >= 1, output

    # A gap in seq is a lost message: each topic counts 1, 2, 3, ... from the first.
    for name, messages in (("state", states), ("cells", cells), ("temperatures", temps),
                           ("balancing", balancing)):
        seqs = [m["seq"] for m in messages]
        assert seqs == list(range(1, len(seqs) + 1)), (name, seqs)

    # Periods: a state message that changes nothing comes a period after the one before,
    # give or take a tick (0.1 s) either way, a change at once; on average exactly a period
    # apart (not a period after a late tick, which made 0.3 s into 0.4 s).
    tick = 0.1
    for before, after in zip(states, states[1:], strict=False):
        gap = after["time_s"] - before["time_s"]
        if (before["state"], before["fault_bitmap"]) != (after["state"], after["fault_bitmap"]):
            assert gap <= state_period + 2 * tick, (gap, before, after)
        else:
            assert state_period - tick - 0.05 <= gap <= state_period + 2 * tick, (gap, before,
                                                                                  after)
    running = [s for s in states if s["state"] == "RUN"]  # the first one: the change
    assert {s["fault_bitmap"] for s in running} == {0}, running
    for name, times, period in (
            ("state", [s["time_s"] for s in running], state_period),
            ("cells", [c_msg["unix_time_s"] for c_msg in cells], arrays_period)):
        assert len(times) >= 6, (name, times)
        mean = (times[-1] - times[0]) / (len(times) - 1)
        assert mean == pytest.approx(period, abs=tick / (len(times) - 1) + 0.01), (
            name, [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)])


# --- 2. retained state and availability -------------------------------------------------

async def test_a_late_subscriber_gets_the_last_state_and_online_at_once(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    async with client(mqtt_broker) as early:
        first = await subscribed(early, f"{BASE}/state", name="early")
        # A long period: whatever the late subscriber gets at once is the retained copy.
        with serve(mqtt_broker.url, tmp_path, "--state-period", "60",
                   watch=(first,)) as emulator:
            last = body(await first.until(in_state("RUN"), timeout=STARTUP_S, why="state RUN"))
            await asyncio.sleep(0.3)
            async with client(mqtt_broker) as late:
                seen = await subscribed(late, f"{BASE}/state", f"{BASE}/availability",
                                        name="late")
                state = await seen.until(on_topic(f"{BASE}/state"), timeout=2.0)
                online = await seen.until(on_topic(f"{BASE}/availability"), timeout=2.0)
            assert emulator.process.poll() is None, failed(emulator)
    assert state.retain and online.retain
    assert body(state) == last  # the newest state, byte for byte what was sent last
    assert body(state)["state"] == "RUN"
    assert bytes(online.payload) == b"online"


# --- 3. the will, and a clean stop ------------------------------------------------------

async def test_a_killed_emulator_is_reported_offline_by_its_will(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    availability = f"{BASE}/availability"
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, availability)
        with serve(mqtt_broker.url, tmp_path, watch=(seen,)) as emulator:
            await seen.until(is_payload(availability, b"online"), timeout=STARTUP_S, why="online")
            killed = time.monotonic()
            emulator.process.send_signal(signal.SIGKILL)
            emulator.process.wait(timeout=5)
            # The kernel closes the socket at once, so the broker need not wait out the
            # keepalive (MqttSession.KEEPALIVE_S = 10 s, x1.5 = 15 s on a lost network).
            offline = await seen.until(is_payload(availability, b"offline"), timeout=16.0,
                                       why="the will (offline)")
            took = time.monotonic() - killed
    assert offline.qos == 1
    assert took < 16.0
    await broker_logged(mqtt_broker, f"Client {CLIENT_ID} closed its connection.")  # no DISCONNECT
    async with client(mqtt_broker) as late:  # the will is retained
        seen = await subscribed(late, availability, name="late")
        retained = await seen.until(on_topic(availability), timeout=2.0)
    assert retained.retain and bytes(retained.payload) == b"offline"


async def test_a_terminated_emulator_says_offline_at_once(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    availability = f"{BASE}/availability"
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, availability, f"{BASE}/state")
        with serve(mqtt_broker.url, tmp_path, watch=(seen,)) as emulator:
            await seen.until(is_payload(availability, b"online"), timeout=STARTUP_S, why="online")
            # `online` may come before serve's signal handlers are in place (its session
            # starts before its event loop): the first state comes from inside the loop.
            await seen.until(on_topic(f"{BASE}/state"), why="a state")
            asked = time.monotonic()
            emulator.process.send_signal(signal.SIGTERM)
            await seen.until(is_payload(availability, b"offline"), timeout=3.0, why="offline")
            took = time.monotonic() - asked
            code = emulator.process.wait(timeout=5)
            assert code == 0, failed(emulator)
    assert took < 3.0, took
    # It said goodbye (DISCONNECT: the broker drops the will), having said offline itself.
    await broker_logged(mqtt_broker, f"Client {CLIENT_ID} disconnected.")
    assert f"Client {CLIENT_ID} closed its connection" not in mqtt_broker.log_path.read_text()
    async with client(mqtt_broker) as late:
        seen = await subscribed(late, availability, name="late")
        retained = await seen.until(on_topic(availability), timeout=2.0)
    assert retained.retain and bytes(retained.payload) == b"offline"


# --- 4. Home Assistant discovery --------------------------------------------------------

HA_TOPICS = {topic for topic, _ in discovery_messages("bms", PACK, "", "", "")}


def is_ha_config(message: aiomqtt.Message) -> bool:
    return message.topic.value.startswith("homeassistant/") and \
        message.topic.value.endswith("/config")


async def collect_configs(seen: Seen, retained: bool, timeout: float = DEADLINE_S
                          ) -> dict[str, aiomqtt.Message]:
    """One config message per discovery topic, with the retain flag `retained`."""
    got: dict[str, aiomqtt.Message] = {}

    def match(message: aiomqtt.Message) -> bool:
        if is_ha_config(message) and message.retain == retained:
            got[message.topic.value] = message
        return got.keys() >= HA_TOPICS

    await seen.until(match, timeout, why=f"every discovery config (retain={retained})")
    return got


async def test_home_assistant_discovery_is_retained_and_republished_when_ha_starts(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    assert len(HA_TOPICS) >= 10
    async with client(mqtt_broker) as watcher:
        status = await subscribed(watcher, f"{BASE}/#", name="watcher")
        with serve(mqtt_broker.url, tmp_path, watch=(status,)) as emulator:
            state = body(await status.until(on_topic(f"{BASE}/state"), timeout=STARTUP_S,
                                            why="a state"))
            async with client(mqtt_broker) as ha:
                seen = await subscribed(ha, "homeassistant/#", name="ha")
                retained = await collect_configs(seen, retained=True)
                await seen.during(0.3)
                published = time.monotonic()
                await ha.publish("homeassistant/status", b"online", qos=1)
                fresh = await collect_configs(seen, retained=False)
            assert emulator.process.poll() is None, failed(emulator)

    assert set(retained) == set(fresh) == HA_TOPICS
    arrivals = {id(m): t for t, m in seen.messages}
    assert all(arrivals[id(m)] >= published for m in fresh.values())
    configs = [body(m) for m in retained.values()]
    assert [body(m) for m in fresh.values()] == [body(retained[t]) for t in fresh]
    unique_ids = [c["unique_id"] for c in configs]
    assert len(set(unique_ids)) == len(unique_ids)
    identifiers = {tuple(c["device"]["identifiers"]) for c in configs}
    assert len(identifiers) == 1 and all(identifiers.pop()), configs[0]["device"]
    for config in configs:
        assert config["name"] and config["unique_id"]
        assert config["state_topic"] == f"{BASE}/state"
        assert config["availability_topic"] == f"{BASE}/availability"
        # each template reads a field the state JSON has
        path = re.fullmatch(r"\{\{ value_json\.([\w.]+) \}\}", config["value_template"])
        assert path, config["value_template"]
        value: object = state
        for part in path.group(1).split("."):
            assert isinstance(value, dict) and part in value, (config["value_template"], state)
            value = value[part]


async def test_no_ha_discovery_publishes_no_discovery(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, "homeassistant/#", f"{BASE}/state")
        with serve(mqtt_broker.url, tmp_path, "--no-ha-discovery", watch=(seen,)) as emulator:
            await seen.until(on_topic(f"{BASE}/state"), timeout=STARTUP_S, why="a state")
            await c.publish("homeassistant/status", b"online", qos=1)
            await seen.during(QUIET_S)
            assert emulator.process.poll() is None, failed(emulator)
    assert not [m.topic.value for _, m in seen.messages if is_ha_config(m)]


# --- 5. commands ------------------------------------------------------------------------

async def test_state_command_round_trip_and_refusals(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, f"{BASE}/#")
        with serve(mqtt_broker.url, tmp_path, "--mqtt-commands", POLICY,
                   "--state-period", "0.3", "--arrays-period", "0.3",
                   watch=(seen,)) as emulator:
            await seen.until(in_state("RUN"), timeout=STARTUP_S, why="state RUN")
            mode_before = body(await seen.until(on_topic(f"{BASE}/balancing")))["mode"]

            # not enabled: answered, and nothing changes
            await command(c, "balancing", {"id": "b", "mode": "off"})
            refused = body(await seen.until(result_with("balancing", "b")))
            # malformed JSON: answered all the same, without an id
            await command(c, "state", b'{"id": 2, "state": ')
            bad = body(await seen.until(on_topic(f"{BASE}/cmd/state/result"),
                                        why="a result for bad JSON"))
            await seen.during(0.7)
            recent = [body(m) for m in seen.on(f"{BASE}/balancing")[-2:]]
            still_run = body(seen.on(f"{BASE}/state")[-1])["state"]

            await command(c, "state", {"id": 1, "state": "standby"})
            done = body(await seen.until(result_with("state", 1)))
            standby = await seen.until(in_state("STANDBY"), timeout=3.0, why="STANDBY")
            settled = await seen.during(0.7)
            assert emulator.process.poll() is None, failed(emulator)

    assert refused["ok"] is False and refused["command"] == "balancing"
    assert refused["error"]["code"] == "NOT_ENABLED", refused
    assert all(b["mode"] == mode_before for b in recent), (mode_before, recent)
    assert still_run == "RUN"
    assert bad["ok"] is False and bad["id"] is None
    assert bad["error"]["code"] == "BAD_JSON", bad

    assert done == {"id": 1, "command": "state", "ok": True, "state": "standby"}
    assert not standby.retain and body(standby)["contactors"] == "open"
    later = [body(m)["state"] for m in settled if m.topic.value == f"{BASE}/state"]
    assert later and set(later) == {"STANDBY"}, later


async def test_config_command_sets_gets_and_refuses(mqtt_broker: Broker,
                                                    tmp_path: Path) -> None:
    name, other = "limits.max_charge_a", "estimation.reference_power_w"
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, f"{BASE}/cmd/+/result", f"{BASE}/availability")
        with serve(mqtt_broker.url, tmp_path, "--mqtt-commands", POLICY,
                   watch=(seen,)) as emulator:
            await seen.until(is_payload(f"{BASE}/availability", b"online"), timeout=STARTUP_S,
                             why="online")

            async def ask(ident: int, payload: dict) -> dict:
                await command(c, "config", {"id": ident, **payload})
                return body(await seen.until(result_with("config", ident)))

            before = (await ask(1, {"get": [name, other]}))["values"]
            new = before[name] * 0.5
            done = await ask(2, {"set": {name: new}})
            got = await ask(3, {"get": [name]})
            too_big = await ask(4, {"set": {name: 1000.0}})
            not_enabled = await ask(5, {"set": {other: before[other] + 1.0}})
            after = (await ask(6, {"get": [name, other]}))["values"]
            assert emulator.process.poll() is None, failed(emulator)

    assert done == {"id": 2, "command": "config", "ok": True, "values": {name: new}}
    assert got["ok"] and got["values"] == {name: new}
    assert too_big["ok"] is False and too_big["error"]["code"] == "OUT_OF_RANGE", too_big
    assert name in too_big["error"]["detail"]
    assert not_enabled["ok"] is False, not_enabled
    assert not_enabled["error"]["code"] == "NOT_ENABLED", not_enabled
    assert after == {name: new, other: before[other]}


# --- 6. authorisation -------------------------------------------------------------------

async def test_the_acl_lets_an_operator_command_and_not_a_viewer(
        mqtt_broker_factory: Callable[..., Broker], tmp_path: Path) -> None:
    broker = mqtt_broker_factory(users=USERS, acl=ACL)
    url = f"mqtt://bms@{broker.host}:{broker.port}"  # the password is not in the URL
    async with client(broker, "operator") as operator, client(broker, "viewer") as viewer:
        op_seen = await subscribed(operator, f"{BASE}/#", name="operator")
        view_seen = await subscribed(viewer, f"{BASE}/#", name="viewer")
        with serve(url, tmp_path, "--mqtt-commands", POLICY, "--state-period", "0.3",
                   env={"BMS_MQTT_PASSWORD": USERS["bms"]},
                   watch=(op_seen, view_seen)) as emulator:
            await op_seen.until(in_state("RUN"), timeout=STARTUP_S,
                                why="state RUN (the emulator got in)")
            await view_seen.until(in_state("RUN"), why="state RUN")

            await command(viewer, "state", {"id": "viewer", "state": "standby"})
            await op_seen.during(1.0)
            await command(operator, "state", {"id": "operator", "state": "standby"})
            done = body(await op_seen.until(result_with("state", "operator")))
            await op_seen.until(in_state("STANDBY"), timeout=3.0, why="STANDBY")
            assert emulator.process.poll() is None, failed(emulator)
            assert str(USERS["bms"]) not in " ".join(emulator.process.args)

    assert done["ok"] is True, done
    results = [body(m) for m in op_seen.on(f"{BASE}/cmd/state/result")]
    assert [r["id"] for r in results] == ["operator"], results
    # the viewer's command changed nothing: RUN until the operator's
    states = [body(m)["state"] for _, m in op_seen.messages
              if m.topic.value == f"{BASE}/state"]
    run = states.index("RUN")
    assert "STANDBY" in states[run:], states
    standby = states.index("STANDBY", run)
    assert set(states[run:standby]) == {"RUN"}, states
    assert "cmd/state" not in {m.topic.value.removeprefix(f"{BASE}/")
                               for _, m in view_seen.messages}, "the viewer's publish went out"


async def test_without_its_password_the_emulator_is_refused(
        mqtt_broker_factory: Callable[..., Broker], tmp_path: Path) -> None:
    broker = mqtt_broker_factory(users=USERS, acl=ACL)
    async with client(broker, "operator") as operator:
        seen = await subscribed(operator, f"{BASE}/#", name="operator")
        with serve(f"mqtt://bms@{broker.host}:{broker.port}", tmp_path,
                   env={"BMS_MQTT_PASSWORD": "wrong"}) as emulator:
            deadline = time.monotonic() + STARTUP_S
            while "Not authorized" not in emulator.text():  # it tried, and says why
                assert time.monotonic() < deadline, failed(emulator)
                assert emulator.process.poll() is None, failed(emulator)
                await asyncio.sleep(0.05)
            await seen.during(QUIET_S)
            assert emulator.process.poll() is None, failed(emulator)  # it keeps retrying
    assert seen.messages == [], seen.summary()


# --- 7. fault events --------------------------------------------------------------------

async def test_an_injected_sensor_fault_raises_an_event(mqtt_broker: Broker,
                                                        tmp_path: Path) -> None:
    events = f"{BASE}/events"
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, events, f"{BASE}/state")
        # sensor=2 counts from 1, as the event's `sensor` does
        with serve(mqtt_broker.url, tmp_path, "--inject", "1:temp-sensor-open:sensor=2",
                   watch=(seen,)) as emulator:
            raised = await seen.until(
                on_topic(events, lambda e: e["name"] == "TEMP_SENSOR_FAULT"), timeout=STARTUP_S,
                why="TEMP_SENSOR_FAULT raised")
            state = await seen.until(
                on_topic(f"{BASE}/state", lambda s: "TEMP_SENSOR_FAULT" in s["faults"]),
                timeout=3.0, why="the fault in the state")
            assert emulator.process.poll() is None, failed(emulator)
    event = body(raised)
    assert raised.qos == 1 and not raised.retain
    assert event["action"] == "raised"
    assert event["code"] == FAULT_CODES["TEMP_SENSOR_FAULT"]
    assert event["level"] in LEVELS
    assert (event["sensor"], event["cell"]) == (2, None) and "index" not in event
    assert event["pack_id"] == PACK
    s = body(state)
    assert s["levels"][event["level"]] is True, s["levels"]
    assert s["fault_bitmap"] >> FAULT_CODES["TEMP_SENSOR_FAULT"] & 1
    async with client(mqtt_broker) as late:  # events are not retained
        seen = await subscribed(late, events, name="late")
        assert await seen.during(0.5) == []
