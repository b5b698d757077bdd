"""Two sessions with one client id on one broker (two emulators given the same pack id, two
fleets given the same --shard): the broker hands the id to the newer connection and closes
the older, and each takes it back in turn. Against a real Mosquitto (which closes the old
connection without saying why): the session says what it looks like, naming its client id,
counts the connections so ended, and backs off instead of fighting twice a second."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time

import aiomqtt

from bms.links.mqtt.session import SHORT_LIVED_WARN, MqttSession, parse_broker

FIGHT_S = 8.0


def test_a_session_whose_client_id_is_taken_in_turn_says_so_and_backs_off(mqtt_broker,
                                                                           caplog):
    caplog.set_level(logging.WARNING, logger="bms.links.mqtt.session")
    sessions = [MqttSession(parse_broker(f"{mqtt_broker.url}/t"), "bms-emu-twin")
                for _ in range(2)]
    for s in sessions:
        s.start()
        assert s.connected.wait(30)
    try:
        time.sleep(FIGHT_S)
    finally:
        for s in sessions:
            s.stop()
    assert sum(s.short_lived for s in sessions) >= SHORT_LIVED_WARN
    said = [r.getMessage() for r in caplog.records if "another client" in r.getMessage()]
    assert said and "'bms-emu-twin'" in said[0] and "same pack id" in said[0], said
    # A retry at the first backoff after each loss made ~16 connections a session in
    # FIGHT_S; growing from 0.5 s, one takes 3.75 s for its first four.
    assert sum(s.connects for s in sessions) <= 14, [s.connects for s in sessions]


def test_two_runs_with_one_pack_id_each_count_the_connections_lost_soon(mqtt_broker):
    argv = [sys.executable, "-m", "bms_emu.main", "run", "--series", "4", "--duration", "12",
            "--speed", "1", "--pack-id", "twin", "--mqtt", mqtt_broker.url, "--json"]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    ends = [r.communicate(timeout=60) for r in runs]
    lost = [json.loads(out)["mqtt"]["short_lived"] for out, _ in ends]
    assert sum(lost) >= SHORT_LIVED_WARN, ends
    assert any("client id 'bms-emu-twin'" in err for _, err in ends), ends


def test_a_broker_restarted_soon_after_connecting_is_not_taken_for_a_twin(mqtt_broker,
                                                                         caplog):
    """A broker killed and started again a second later, three times, each within seconds
    of the session connecting: it refuses a try each time, so no connection counts as
    taken by another client, nothing warns of one, and each comes back at once."""
    caplog.set_level(logging.WARNING, logger="bms.links.mqtt.session")
    s = MqttSession(parse_broker(f"{mqtt_broker.url}/t"), "bms-emu-alone")
    s.start()
    try:
        for restart in range(1, 4):
            assert s.connected.wait(30)
            assert s.connects == restart
            mqtt_broker.kill()
            time.sleep(1.0)  # tries refused meanwhile
            mqtt_broker.start()
            deadline = time.monotonic() + 30
            while s.connects == restart and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        s.stop()
    assert (s.connects, s.short_lived) == (4, 0)
    assert not [r for r in caplog.records if "another client" in r.getMessage()]


def test_a_pack_id_run_twice_under_other_client_ids_is_told_by_its_availability(mqtt_broker):
    """A `run` and a fleet's batch with the same pack id have different client ids, so the
    broker lets both be: each hears the other's `online` or `offline` on the pack's
    availability topic (its own it never hears: no-local), counts it and warns; an `offline`
    said by the other while it runs is answered with its own `online`."""
    base = [sys.executable, "-m", "bms_emu.main"]
    alone = subprocess.Popen([*base, "run", "--series", "4", "--duration", "6", "--speed", "1",
                              "--pack-id", "dup-1", "--mqtt", mqtt_broker.url, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # connected, online said
    batch = subprocess.Popen([*base, "fleet", "--packs", "2", "--packs-per-process", "2",
                              "--series", "4", "--duration", "10", "--pack-prefix", "dup",
                              "--mqtt", mqtt_broker.url, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = alone.communicate(timeout=60)
    time.sleep(1.5)  # the batch hears the run's `offline` and answers within a tick or so
    still_running = batch.poll() is None
    said = retained_availability(mqtt_broker.port, "dup-1")
    fleet_out, fleet_err = batch.communicate(timeout=60)
    assert still_running and said == b"online"
    assert alone.returncode == 0 and batch.returncode == 0, (err, fleet_err)
    # The run heard the batch's `online` for dup-1; the batch heard the run's `offline`.
    assert json.loads(out)["mqtt"]["availability_from_others"] >= 1
    assert "another emulator or fleet with pack id 'dup-1'" in err
    ends = {e["pack_id"]: e for e in map(json.loads, fleet_out.splitlines())
            if e["event"] == "done"}
    assert ends["dup-1"]["summary"]["mqtt"]["availability_from_others"] >= 1
    assert ends["dup-2"]["summary"]["mqtt"]["availability_from_others"] == 0
    assert "another emulator or fleet with pack id 'dup-1'" in fleet_err


def retained_availability(port: int, pack_id: str) -> bytes | None:
    async def read() -> bytes | None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-availability") as c:
            await c.subscribe(f"bms/{pack_id}/availability", qos=1)
            try:
                async with asyncio.timeout(3.0):
                    async for message in c.messages:
                        return bytes(message.payload)
            except TimeoutError:
                return None
        return None

    return asyncio.run(read())
