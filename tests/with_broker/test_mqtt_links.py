"""The protocol and telemetry over a real Mosquitto, and what a broker that dies, comes back
or comes late does to them: `serve --hil` driven by `rig` over MQTT, `query` and `monitor`
over MQTT, fault events kept while the broker is away, `run --mqtt` in simulated time.

Emulators and rigs are `bms-emu` subprocesses with a --duration safety limit, ended in a
`finally`; `query` and `monitor` run in-process through `bms_emu.main.main`, so their exit
codes and output are what a user gets. The test's own subscriber (`Watcher`) is paho-mqtt
in a thread; it tries to connect every 10 ms until it is in, so one started while the
broker is down is on a restarted broker before the emulator's backoff brings it back.
Every wait has a deadline.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
import pytest

from bms.core.signals import State
from bms.data.faults import subject_text
from bms.links.mqtt import session as mqtt_session
from bms.links.mqtt.session import MqttSession, parse_broker
from bms_emu.main import main
from bms_emu.monitor_cmd import BAR_WIDTH
from tests.support import processes
from tests.support.mqtt_broker import HOST, Broker, require_mosquitto
from tests.support.processes import CLI, wait_until

SERIES = 8
PACK = ["--series", str(SERIES)]
SAFETY_S = "60"  # --duration of every emulator: it ends by itself if a test hangs
BAR = re.compile(f"[█░]{{{BAR_WIDTH}}}")
# serve's log line for a fault event:
# "<time> WARNING t=3.1 s FAULT TEMP_SENSOR_FAULT raised, sensor 1" (FaultEvent.describe)
EVENT_LINE = re.compile(r"WARNING t=[\d.e+-]+ s (\w+) (\w+) (raised|cleared)(?:, (\w+ \d+))?$")


# --- helpers -------------------------------------------------------------------------------

class Proc(processes.Proc):
    """serve or rig, whose fault events a test reads back from its log."""

    def events(self) -> list[tuple[str, str, str, str]]:
        """(level, name, action, "cell N" / "sensor N" / "") of every fault event it
        logged, in order."""
        return [(m[1], m[2], m[3], m[4] or "") for line in list(self.lines)
                if (m := EVENT_LINE.search(line)) is not None]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool  # True: the broker's retained copy, handed over on subscribing
    at: float  # time.monotonic() on arrival

    def json(self) -> dict:
        return json.loads(self.payload)


class Watcher:
    """Subscribes (QoS 1) to `filters` and keeps every message that arrives, in order."""

    def __init__(self, port: int, *filters: str, connect_within_s: float = 30.0):
        self.received: list[Received] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"test-watcher-{secrets.token_hex(4)}")
        client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = lambda _c, _u, m: self.received.append(
            Received(m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))
        client.reconnect_on_failure = False  # one broker's life: a test makes a new one
        self._client = client
        self._thread = threading.Thread(target=self._connect, args=(port, connect_within_s),
                                        daemon=True)
        self._thread.start()

    def _connect(self, port: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._client.connect(HOST, port, keepalive=30)
            except OSError:  # refused: the broker is not (yet) there
                time.sleep(0.01)
                continue
            self._client.loop_start()
            return

    def wait_subscribed(self, timeout_s: float = 10.0) -> Watcher:
        if not self.subscribed.wait(timeout_s):
            pytest.fail(f"the test's subscriber was not subscribed within {timeout_s:g} s")
        return self

    def on(self, topic: str) -> list[Received]:
        return [r for r in list(self.received) if r.topic == topic]

    def first(self, topic: str, timeout_s: float,
              where: Callable[[Received], bool] = lambda _r: True) -> Received:
        return wait_until(lambda: next((r for r in self.on(topic) if where(r)), None),
                          timeout_s, f"nothing on {topic}", self.summary)

    def events(self) -> list[dict]:
        """The fault events, each once: a QoS 1 message sent again after a lost PUBACK
        comes twice with the same payload (its unix_time_s says it is one message)."""
        distinct = dict.fromkeys(r.payload for r in self.received if r.topic.endswith("/events"))
        return [json.loads(p) for p in distinct]

    def summary(self) -> str:
        topics: dict[str, int] = {}
        for r in list(self.received):
            topics[r.topic] = topics.get(r.topic, 0) + 1
        return f"\n--- the test's subscriber received: {topics}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.disconnect()
        self._client.loop_stop()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `bms-emu ARGS...` run in this process."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def over_mqtt(broker: Broker, pack_id: str = "p1") -> list[str]:
    return ["--mqtt", broker.url, "--pack-id", pack_id]


def serve(broker: Broker, *args: str, pack_id: str = "p1") -> Proc:
    return Proc("serve", *over_mqtt(broker, pack_id), *PACK, "--duration", SAFETY_S, "-v",
                "--autostart", *args)


def wait_ready(broker: Broker, proc: Proc, pack_id: str = "p1",
               timeout_s: float = 20.0) -> None:
    """Until the emulator has said `online` on the broker (it has subscribed to its protocol
    and command topics) and published a state (it has stepped: a status has readings)."""
    base = f"bms/{pack_id}"
    watcher = Watcher(broker.port, f"{base}/availability", f"{base}/state").wait_subscribed()

    def ready() -> bool:
        online = any(r.payload == b"online" for r in watcher.on(f"{base}/availability"))
        return (online and bool(watcher.on(f"{base}/state"))) or proc.popen.poll() is not None

    try:
        wait_until(ready, timeout_s, f"the emulator never said online with a state on "
                   f"{broker.url}", proc.output)
        assert proc.popen.poll() is None, f"the emulator ended{proc.output()}"
    finally:
        watcher.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """One broker and one `serve --sim --mqtt` (pack p1, 8 cells) for the query and monitor
    tests, which only read (and set one limit: the command policy lets them)."""
    require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    proc = serve(broker, "--sim", "--tick", "0.05", "--mqtt-commands", "config=limits.*")
    try:
        wait_ready(broker, proc)
        yield broker
    finally:
        proc.stop()
        broker.stop()


# --- 1. HIL over MQTT ---------------------------------------------------------------------

def test_a_rig_drives_serve_hil_over_mqtt_from_standby_to_run(mqtt_broker):
    emulator = serve(mqtt_broker, "--hil", "--tick", "0.1")
    frames = Watcher(mqtt_broker.port, "bms/p1/proto/#").wait_subscribed()
    try:
        wait_ready(mqtt_broker, emulator)
        done = subprocess.run([*CLI, "rig", *over_mqtt(mqtt_broker), *PACK, "--tick", "0.1",
                               "--duration", "4", "--json"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        d = json.loads(done.stdout)
        f, final = d["frames"], d["final"]
        # An INIT first is a watchdog step's, taken before the rig's first measurement came
        # (the rig subscribes before it sends, so it may hear one).
        states = [e["text"] for e in d["events"] if e["kind"] == "state"]
        assert states in (["STANDBY", "PRECHARGE", "RUN"],
                          ["INIT", "STANDBY", "PRECHARGE", "RUN"]), done.stderr
        assert (final["state"], final["faults"]) == ("RUN", [])
        assert final["contactors_commanded"] == final["contactors"] == "closed"
        assert f["sent"] >= 30 and f["answered"] >= f["sent"] - 1
        assert (f["lost"], f["nacks"], f["decode_errors"], f["unusable"]) == (0, {}, {}, 0)
        assert f["interlock_trips"] == 0 and d["refused"] is None
        # The frames went over the broker, one per message, each way.
        assert len(frames.on("bms/p1/proto/in")) >= f["sent"]
        assert len(frames.on("bms/p1/proto/out")) >= f["answered"]
        assert emulator.popen.poll() is None, f"the emulator ended{emulator.output()}"
    finally:
        frames.stop()
        emulator.stop()


# --- 2. query over MQTT -------------------------------------------------------------------

def test_query_over_mqtt_reads_the_pack(capsys, sim):
    code, out, err = cli(capsys, "query", *over_mqtt(sim), "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["state"] in list(State) and status["faults"] == []
    assert status["time_s"] > 0 and status["pack_voltage_v"] > 0
    code, out, err = cli(capsys, "query", *over_mqtt(sim), "cells", "--json")
    assert code == 0, err
    cells = json.loads(out)["cell_voltage_v"]
    assert len(cells) == SERIES and all(1.0 < v < 4.5 for v in cells)
    code, out, err = cli(capsys, "query", *over_mqtt(sim), "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["n_series"] == SERIES
    # protocol 1.1 over MQTT too: the device says who it is, in the revision asked in
    assert info["protocol_version"] == 2 and info["pack_id"] and info["protocol_revisions"]
    assert set(status["faults_by_level"]) == {"WARNING", "ALARM", "FAULT"}


def test_query_over_mqtt_sets_a_limit_and_reads_it_back(capsys, sim):
    code, out, err = cli(capsys, "query", *over_mqtt(sim), "set", "limits.max_charge_a", "1.0",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["values"] == {"limits.max_charge_a": 1.0}
    code, out, err = cli(capsys, "query", *over_mqtt(sim), "config", "--json")
    assert code == 0, err
    assert json.loads(out)["values"]["limits.max_charge_a"] == 1.0

    def charge_limit() -> bool:  # the firmware applies it from its next step
        code, out, _ = cli(capsys, "query", *over_mqtt(sim), "status", "--json")
        limit = json.loads(out)["charge_limit_a"] if code == 0 else None
        return limit is not None and limit <= 1.0

    wait_until(charge_limit, 5, "the status never showed the charge limit at or below 1 A")


def test_query_for_a_pack_nobody_serves_exits_4_naming_it(capsys, sim):
    started = time.monotonic()
    code, out, err = cli(capsys, "query", *over_mqtt(sim, "nobody"), "--timeout", "1",
                         "status", "--json")
    assert code == 4 and out == ""
    assert "no answer to GetStatus within 1 s" in err and "bms/nobody" in err, err
    assert time.monotonic() - started < 5  # the timeout, not the session's backoff


def test_query_with_no_broker_exits_4_naming_the_broker_promptly(capsys):
    url = "mqtt://127.0.0.1:1"  # nothing listens on port 1
    started = time.monotonic()
    code, out, err = cli(capsys, "query", "--mqtt", url, "--pack-id", "p1", "--timeout", "1",
                         "status")
    took_s = time.monotonic() - started
    assert code == 4 and out == ""
    assert "bms-emu query: cannot connect to mqtt://127.0.0.1:1/bms:" in err, err
    # Closing does not sit out the session's wait for its next attempt.
    assert took_s < 1.5, f"query took {took_s:.1f} s with --timeout 1"


def test_stopping_a_session_that_waits_to_retry_ends_it_at_once(monkeypatch):
    monkeypatch.setattr(mqtt_session, "BACKOFF_FIRST_S", 5.0)  # a first wait of 2.5..7.5 s
    session = MqttSession(parse_broker("mqtt://127.0.0.1:1"), "test-stop")
    session.start()
    wait_until(lambda: session.last_error, 5, "the session never tried to connect")
    started = time.monotonic()
    session.stop()  # joins for up to 3 s
    took_s = time.monotonic() - started
    assert took_s < 1.0, f"stop() took {took_s:.1f} s: it sat out the backoff"
    assert not session.connected.is_set() and session.connects == 0


# --- 3. monitor over MQTT -----------------------------------------------------------------

def test_monitor_once_over_mqtt_shows_the_state_and_a_bar_per_cell(capsys, sim):
    code, out, err = cli(capsys, "monitor", *over_mqtt(sim), "--once")
    assert code == 0, err
    assert "8S1P" in out and "bms/p1" in out  # who, and over what
    state = re.search(r"│ state\s+(\w+)", out)
    assert state and state.group(1) in list(State), out
    assert re.search(r"│ faults\s+none", out), out
    bars = [line for line in out.splitlines() if BAR.search(line)]
    assert len(bars) == SERIES, out
    assert [int(re.search(r"(\d+)\s+\d\.\d{3} V", b).group(1)) for b in bars] == list(
        range(1, SERIES + 1))
    assert "link: connected" in out


# --- 4. a broker killed mid-run -----------------------------------------------------------

# Raised between 2 and 4 s of emulator time (run headless, these give VOLTAGE_SENSOR_FAULT,
# TEMP_SENSOR_FAULT, then CELL_OVERVOLTAGE and CELL_UNDERVOLTAGE at three levels each).
INJECTIONS = ("1.5:sensor-offset:cell=2,offset_v=0.7", "1.5:temp-sensor-open:sensor=1",
              "2:sensor-stuck:cell=3,value_v=1.0")
FIRST_INJECTION_S = 1.5
AWAITED = ("FAULT VOLTAGE_SENSOR_FAULT raised", "FAULT TEMP_SENSOR_FAULT raised",
           "FAULT CELL_OVERVOLTAGE raised", "FAULT CELL_UNDERVOLTAGE raised")


def test_fault_events_raised_while_the_broker_is_down_all_arrive_in_order_after_it_returns(
        capsys, mqtt_broker):
    broker = mqtt_broker
    before = Watcher(broker.port, "bms/p1/#").wait_subscribed()
    emulator = serve(broker, "--sim", "--tick", "0.1",
                     *(a for spec in INJECTIONS for a in ("--inject", spec)))
    after = None
    try:
        state = before.first("bms/p1/state", 20).json()
        broker.kill()  # a crash: connections cut, nothing retained survives
        killed_at_s = state["time_s"]
        before.stop()
        assert killed_at_s < FIRST_INJECTION_S and before.events() == []
        # The emulator raises every awaited fault with no broker to tell.
        for text in AWAITED:
            wait_until(lambda text=text: emulator.said(text) or emulator.popen.poll(), 15,
                       f"the emulator never logged {text!r}", emulator.output)
        assert emulator.popen.poll() is None, f"the emulator ended{emulator.output()}"
        # A subscriber trying every 10 ms is on the broker before the emulator's backoff
        # brings it back, and so sees what the emulator delivers on reconnecting.
        after = Watcher(broker.port, "bms/p1/#")
        broker.start()
        after.wait_subscribed()
        online = after.first("bms/p1/availability", 30, lambda r: r.payload == b"online")
        assert not online.retain, "the emulator was back before the subscriber: cannot tell"
        code, out, err = cli(capsys, "query", *over_mqtt(broker), "faults", "--json")
        assert code == 0, err
        log = json.loads(out)["entries"]
        # Every event the emulator raised is in its fault log (and was logged, in order),
        # its cell or sensor numbered from 1 in both, as the injections number them.
        assert [(e["level"], e["name"], e["action"], subject_text(e))
                for e in log] == emulator.events()
        assert {t.split()[1] for t in AWAITED} <= {e["name"] for e in log}
        assert {("TEMP_SENSOR_FAULT", "sensor 1"), ("CELL_OVERVOLTAGE", "cell 2")} <= {
            (e["name"], subject_text(e)) for e in log}
        assert all(e["t_s"] > killed_at_s for e in log)  # all raised while the broker was down
        wait_until(lambda: len(after.events()) >= len(log), 10,
                   f"only {len(after.events())} of {len(log)} fault events arrived",
                   lambda: f"\n{after.events()}\n{log}")
        events = after.events()[:len(log)]
        # Each one, once, in the order raised: no gap, nothing swapped.
        assert [(e["name"], e["level"], e["action"], e["cell"], e["sensor"]) for e in events] == [
            (e["name"], e["level"], e["action"], e["cell"], e["sensor"]) for e in log]
        assert all(abs(e["t_s"] - g["t_s"]) < 1e-3 for e, g in zip(events, log, strict=True))
        assert [e["t_s"] for e in events] == sorted(e["t_s"] for e in events)
        assert {e["pack_id"] for e in events} == {"p1"}
        # The state never goes back: what queued up while the broker was away is older than
        # the retained state republished on reconnecting, and is not sent after it.
        seqs = [r.json()["seq"] for r in after.on("bms/p1/state")]
        assert seqs and seqs == sorted(set(seqs)), f"state seq after the restart: {seqs}"
        # The restarted broker holds the state and `online` again, retained.
        last = Watcher(broker.port, "bms/p1/state", "bms/p1/availability").wait_subscribed()
        try:
            retained = last.first("bms/p1/state", 5, lambda r: r.retain).json()
            assert retained["state"] == "FAULT"
            assert {e["name"] for e in log} <= set(retained["faults"])
            assert last.first("bms/p1/availability", 5, lambda r: r.retain).payload == b"online"
        finally:
            last.stop()
        assert emulator.said("MQTT connected") == 2  # -v: once at start, once after
    finally:
        if after is not None:
            after.stop()
        emulator.stop()


# --- 5. run --mqtt in simulated time ------------------------------------------------------

def test_a_headless_run_publishes_in_simulated_time_and_leaves_offline(mqtt_broker):
    watcher = Watcher(mqtt_broker.port, "bms/r1/#").wait_subscribed()
    try:
        done = subprocess.run([*CLI, "run", *over_mqtt(mqtt_broker, "r1"), "--duration", "30s",
                               "--speed", "10", *PACK, "--json"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["sim_s"] == 30.0 and summary["wall_s"] >= 2.9  # paced: 10x real time
        said = wait_until(
            lambda: (said := [r.payload for r in watcher.on("bms/r1/availability")])
            and said[-1] == b"offline" and said, 5, "no offline after the run", watcher.summary)
        assert said == [b"online", b"offline"]
        # One state a second of simulated time, stamped with simulated time.
        states = [r.json() for r in watcher.on("bms/r1/state")]
        times = [s["time_s"] for s in states]
        assert times == sorted(times) and times[0] < 5.0 and times[-1] >= 29.0
        assert len(states) >= 25 and states[-1]["state"] == summary["final"]["state"]
        # Consecutive: nothing lost once connected (what was queued before the connection
        # is superseded by the retained state published on connecting).
        seqs = [s["seq"] for s in states]
        assert seqs == list(range(seqs[0], seqs[0] + len(states)))
        cells = [r.json() for r in watcher.on("bms/r1/cells")]
        assert len(cells) >= 25 and all(len(c["cell_voltage_v"]) == SERIES for c in cells)
    finally:
        watcher.stop()
    # A newcomer finds the last state and `offline`, retained.
    late = Watcher(mqtt_broker.port, "bms/r1/state", "bms/r1/availability").wait_subscribed()
    try:
        state = late.first("bms/r1/state", 5, lambda r: r.retain).json()
        assert state["time_s"] >= 29.0 and state["pack_id"] == "r1"
        assert late.first("bms/r1/availability", 5, lambda r: r.retain).payload == b"offline"
    finally:
        late.stop()


# --- 6. a broker absent at start ----------------------------------------------------------

def test_an_emulator_started_without_its_broker_connects_when_it_comes(mqtt_broker):
    broker = mqtt_broker
    broker.stop()  # the port is known; nothing listens on it
    emulator = serve(broker, "--sim", "--tick", "0.1")
    watcher = None
    try:
        wait_until(lambda: emulator.said("Connection refused") or emulator.popen.poll(), 15,
                   "the emulator never tried the broker", emulator.output)
        time.sleep(2.0)
        assert emulator.popen.poll() is None, f"the emulator ended{emulator.output()}"
        watcher = Watcher(broker.port, "bms/p1/state", "bms/p1/availability")
        broker.start()
        watcher.wait_subscribed()
        # The emulator stepped without a broker: the first state it delivers is its last one
        # (published once a second), from after precharge; and it goes on stepping.
        states = wait_until(lambda: (got := watcher.on("bms/p1/state"))[1:] and got, 20,
                            "no states from the emulator", emulator.output)
        first, second = states[0].json(), states[1].json()
        assert first["time_s"] > 0.5 and first["state"] in ("PRECHARGE", "RUN"), first
        assert second["time_s"] > first["time_s"] and second["state"] == "RUN", second
        watcher.first("bms/p1/availability", 5, lambda r: r.payload == b"online")
        watcher.stop()
        # Once it has been connected, a lost connection is retried at once again: the
        # backoff that grew while the broker was absent starts over from 0.5 s.
        killed = time.monotonic()
        broker.kill()
        watcher = Watcher(broker.port, "bms/p1/availability")  # on the new broker at once
        broker.start()
        back = watcher.first("bms/p1/availability", 20, lambda r: r.payload == b"online")
        # 0.5 s +-50 % after the loss; a backoff left at 4 s or more would take 2 s or more.
        assert back.at - killed < 1.5, (f"back {back.at - killed:.1f} s after the broker "
                                        f"was killed and restarted{emulator.output()}")
        assert emulator.popen.poll() is None, f"the emulator ended{emulator.output()}"
    finally:
        if watcher is not None:
            watcher.stop()
        emulator.stop()
