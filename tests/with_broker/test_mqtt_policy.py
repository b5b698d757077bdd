"""Every way in over MQTT held to one command policy, and the broker keeping packs apart,
against a real Mosquitto:

- the protocol on `proto/in` (what `query --mqtt` speaks) obeys `--mqtt-commands` as
  `cmd/*` does: reads always, changes only where enabled, off by default;
- the README's broker setup (an account per pack, a `pattern` ACL on `%u`) lets each pack
  publish all it publishes, and stops one pack's account from commanding another or
  spoofing its retained availability and state;
- messages over the size cap, over a topic's rate or of more than one frame are dropped
  unread, counted in `--stats` and logged once, while the emulator keeps serving.

Emulators are `bms-emu serve --sim` subprocesses with a --duration safety limit, ended in a
`finally`; `query` runs in-process. Every wait has a deadline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as paho

from bms.links.mqtt.inbound import OVER_RATE, TOO_LARGE
from bms.links.mqtt.link import NOT_ONE_FRAME
from protocol import messages as pm
from protocol.codec import encode
from protocol.framing import Flags
from tests.support.mqtt_broker import Broker
from tests.with_broker.test_mqtt_links import cli, over_mqtt, serve, wait_ready
from tests.with_broker.test_mqtt_telemetry import (
    QUIET_S,
    STARTUP_S,
    body,
    client,
    failed,
    on_topic,
    subscribed,
)
from tests.with_broker.test_mqtt_telemetry import serve as serve_as

REFUSED = 3  # query's exit code for a request the device refused

# --- 1. the protocol on proto/in obeys the policy ----------------------------------------


def query(capsys, broker: Broker, *args: str) -> tuple[int, str]:
    code, out, err = cli(capsys, "query", *over_mqtt(broker), "--timeout", "3", *args)
    return code, out + err


def test_proto_in_obeys_the_command_policy_as_cmd_does(capsys, mqtt_broker):
    emulator = serve(mqtt_broker, "--sim", "--tick", "0.05",
                     "--mqtt-commands", "state=standby,config=limits.*")
    try:
        wait_ready(mqtt_broker, emulator)
        assert query(capsys, mqtt_broker, "status", "--json")[0] == 0  # reads: always
        assert query(capsys, mqtt_broker, "faults", "--json")[0] == 0
        code, said = query(capsys, mqtt_broker, "set", "limits.max_charge_a", "1.0")
        assert code == 0, said
        for args, words in [
            (("set", "balancing.mode", "soc"), ["NOT_ENABLED", "balancing.mode", "limits.*"]),
            (("command", "storage"), ["NOT_ENABLED", "'storage'", "allowed: standby"]),
            (("command", "clear-faults"), ["NOT_ENABLED", "clear-faults command"]),
            (("command", "service-reset"), ["NOT_ENABLED", "service-reset command"]),
            (("command", "balancing-off"), ["NOT_ENABLED", "balancing command"]),
            (("inject", "1:open-wire:cell=1"), ["NOT_ENABLED", "inject command"]),
        ]:
            code, said = query(capsys, mqtt_broker, *args)
            assert code == REFUSED, (args, said)
            for word in words:
                assert word in said, (args, said)
        code, out = query(capsys, mqtt_broker, "config", "--json")
        values = json.loads(out)["values"]
        assert values["limits.max_charge_a"] == 1.0 and values["balancing.mode"] != "soc"
        code, out = query(capsys, mqtt_broker, "status", "--json")
        assert json.loads(out)["faults"] == []  # no injection happened
        assert query(capsys, mqtt_broker, "command", "standby")[0] == 0
        assert emulator.popen.poll() is None, emulator.output()
    finally:
        emulator.stop()


def test_proto_in_changes_nothing_by_default(capsys, mqtt_broker):
    emulator = serve(mqtt_broker, "--sim", "--tick", "0.05")
    try:
        wait_ready(mqtt_broker, emulator)
        for args in (("set", "limits.max_charge_a", "1.0"), ("command", "standby"),
                     ("inject", "1:open-wire:cell=1")):
            code, said = query(capsys, mqtt_broker, *args)
            assert code == REFUSED and "enabled: none" in said, (args, said)
        # On its way to RUN (it may not have left STANDBY yet on a busy machine), never held
        # in STANDBY by the refused command; nothing injected.
        deadline = time.monotonic() + 20
        while True:
            code, out = query(capsys, mqtt_broker, "status", "--json")
            status = json.loads(out)
            if status["state"] in ("PRECHARGE", "RUN") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 0 and status["state"] in ("PRECHARGE", "RUN"), status
        assert status["faults"] == []
        code, out = query(capsys, mqtt_broker, "config", "--json")
        assert json.loads(out)["values"]["limits.max_charge_a"] != 1.0
    finally:
        emulator.stop()


# --- 2. the README's broker setup keeps packs apart ----------------------------------------

PACKS = {"packa": "a-secret", "packb": "b-secret"}
USERS = {**PACKS, "operator": "op-secret", "viewer": "view-secret"}
# As README.md "MQTT" sets up Mosquitto: %u is the account's name, which is its pack id.
ACL = """\
pattern write bms/%u/#
pattern read bms/%u/cmd/#
pattern read bms/%u/proto/in
pattern write homeassistant/+/bms_%u/#
pattern read homeassistant/status

user operator
topic write bms/+/cmd/#
topic write bms/+/proto/in
topic read bms/#

user viewer
topic read bms/#
"""
LIMIT = "message_size_limit 32768"


async def test_a_packs_account_cannot_command_or_spoof_another_pack(
        mqtt_broker_factory, tmp_path: Path) -> None:
    broker = mqtt_broker_factory(users=USERS, acl=ACL, extra_config=LIMIT)
    a, b = "bms/packa", "bms/packb"
    standby = encode(pm.CommandRequest(pm.Command.STANDBY, 0), 7, Flags.REQUEST)
    async with (client(broker, "operator") as operator, client(broker, "packa") as intruder):
        seen = await subscribed(operator, "bms/#", name="operator")
        stolen = await subscribed(intruder, f"{b}/#", name="pack A's account")
        with (serve_as(broker.url_as("packa"), tmp_path, "--mqtt-commands", "state",
                       "--state-period", "0.3", pack_id="packa", watch=(seen,)) as pack_a,
              serve_as(broker.url_as("packb"), tmp_path, "--mqtt-commands", "state",
                       "--state-period", "0.3", pack_id="packb", watch=(seen,)) as pack_b):
            for base in (a, b):
                await seen.until(on_topic(f"{base}/state", lambda s: s["state"] == "RUN"),
                                 timeout=STARTUP_S, why=f"{base} in RUN")
            # pack A's account at pack B: a command, a protocol request, a spoofed
            # retained availability and state; and the same command at its own pack
            await intruder.publish(f"{b}/cmd/state", json.dumps(
                {"id": "spoof", "state": "standby"}), qos=1)
            await intruder.publish(f"{b}/proto/in", standby, qos=1)
            await intruder.publish(f"{b}/availability", b"offline", qos=1, retain=True)
            await intruder.publish(f"{b}/state", json.dumps({"state": "FAULT"}), qos=1,
                                   retain=True)
            await intruder.publish(f"{a}/cmd/state", json.dumps(
                {"id": "own", "state": "standby"}), qos=1)
            own = body(await seen.until(on_topic(f"{a}/cmd/state/result",
                                                 lambda r: r["id"] == "own")))
            await seen.until(on_topic(f"{a}/state", lambda s: s["state"] == "STANDBY"),
                             why="pack A in STANDBY")
            await seen.during(QUIET_S)
            b_states = [body(m)["state"] for m in seen.on(f"{b}/state")]
            # the operator may command pack B: the command path works
            await operator.publish(f"{b}/cmd/state", json.dumps(
                {"id": "op", "state": "standby"}), qos=1)
            by_operator = body(await seen.until(on_topic(f"{b}/cmd/state/result",
                                                         lambda r: r["id"] == "op")))
            await stolen.during(0.2)
            async with client(broker, "viewer") as viewer:
                fresh = await subscribed(viewer, f"{b}/availability", f"{b}/state",
                                         name="viewer")
                retained = await fresh.during(1.0)
            alive = pack_a.process.poll() is None and pack_b.process.poll() is None
            output = failed(pack_a) + "\n" + failed(pack_b)
    assert alive, output
    assert own["ok"] is True  # its own pack: allowed
    assert by_operator["ok"] is True
    # nothing pack A's account sent reached pack B, nor anyone reading B's topics
    results = [body(m)["id"] for m in seen.on(f"{b}/cmd/state/result")]
    assert results == ["op"], results
    assert "spoof" not in {json.loads(bytes(m.payload)).get("id") for m in
                           seen.on(f"{b}/cmd/state")}
    assert seen.on(f"{b}/proto/in") == [] and seen.on(f"{b}/proto/out") == []
    # from its first RUN on, RUN throughout, until the operator's command
    assert set(b_states[b_states.index("RUN"):]) == {"RUN"}, b_states
    assert {bytes(m.payload) for m in seen.on(f"{b}/availability")} == {b"online"}
    # B's retained copies are B's own
    by_topic = {m.topic.value: m for m in retained}
    assert bytes(by_topic[f"{b}/availability"].payload) == b"online"
    assert body(by_topic[f"{b}/state"])["pack_id"] == "packb"
    # pack A's account reads none of B's topics, not even its commands
    assert stolen.messages == [], stolen.summary()
    # the broker refused A's account and nothing the packs themselves sent
    log = broker.log_path.read_text(errors="replace")
    denied = [line for line in log.splitlines() if "Denied PUBLISH" in line]
    assert len(denied) >= 4 and all("test-packa" in line for line in denied), denied


# --- 3. bounded input ----------------------------------------------------------------------

def flood(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publishes every message at QoS 1 and waits until the broker has each."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-flooder")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
        assert all(info.is_published() for info in infos)
    finally:
        c.loop_stop()
        c.disconnect()


def test_oversized_fast_and_multi_frame_messages_are_dropped_unread_and_counted(
        capsys, mqtt_broker, tmp_path):
    stats = tmp_path / "stats.json"
    emulator = serve(mqtt_broker, "--sim", "--tick", "0.05", "--mqtt-max-bytes", "8192",
                     "--mqtt-command-rate", "5", "--mqtt-frame-rate", "20",
                     "--stats", str(stats))
    base = "bms/p1"
    status = encode(pm.GetStatus(), 1, Flags.REQUEST)
    small = 300
    try:
        wait_ready(mqtt_broker, emulator)
        flood(mqtt_broker.port, [
            (f"{base}/proto/in", status + status),  # two requests in one message
            (f"{base}/proto/in", status * 400),  # over the frame cap (4126 bytes)
            (f"{base}/cmd/state", b'{"state": "run", "pad": "' + b"x" * 9000 + b'"}'),
            *[(f"{base}/cmd/state", b'{"state": "run"}')] * small,
            *[(f"{base}/proto/in", status)] * small,
        ])
        # still serving: once the topic's bucket has refilled a query is answered
        deadline = time.monotonic() + 20
        while query(capsys, mqtt_broker, "status", "--json")[0] != 0:
            assert time.monotonic() < deadline, emulator.output()
        assert emulator.popen.poll() is None, emulator.output()
    finally:
        emulator.stop()
    mqtt = json.loads(stats.read_text())["mqtt"]
    refused = mqtt["refused_messages"]
    proto, cmd = refused[f"{base}/proto/in"], refused[f"{base}/cmd/+"]
    assert proto[NOT_ONE_FRAME] == 1 and proto[TOO_LARGE] == 1 and cmd[TOO_LARGE] == 1
    assert proto[OVER_RATE] > 0 and cmd[OVER_RATE] > 0
    # every small command either refused unread or answered (NOT_ENABLED: commands are off)
    assert cmd[OVER_RATE] + mqtt["refused_commands"]["NOT_ENABLED"] == small
    assert mqtt["dropped"] == 0
    # logged once an episode: one line for each subscription and reason
    lines = [line for line in emulator.lines if "MQTT: refused a message on" in line]
    assert len(lines) == 5, lines
