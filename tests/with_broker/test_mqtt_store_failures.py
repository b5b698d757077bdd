"""`serve --sim --mqtt` on a store whose disk is full (the file-size limit of the process,
SIGXFSZ ignored), against a real Mosquitto: the retained state says the saves are failing
and how many did, a configuration command is refused with SAVE_FAILED and is not in
effect, and `--stats` carries the store's figures. The emulator serves on throughout."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

from tests.support.mqtt_broker import Broker
from tests.with_broker.test_mqtt_telemetry import (
    BASE,
    STARTUP_S,
    body,
    client,
    command,
    failed,
    on_topic,
    result_with,
    serve,
    subscribed,
)


def full_disk_at(max_file_bytes: int):
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, no kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return limit


async def test_failing_saves_are_published_and_refuse_config_writes(
        mqtt_broker: Broker, tmp_path: Path) -> None:
    store, stats = tmp_path / "pack.sqlite", tmp_path / "stats.json"
    options = ("--nvm", str(store), "--nvm-period", "0.2", "--state-period", "0.2")
    async with client(mqtt_broker) as c:
        seen = await subscribed(c, f"{BASE}/#")
        with serve(mqtt_broker.url, tmp_path, *options, watch=(seen,)):
            await seen.until(on_topic(f"{BASE}/state", lambda s: s["store"] == "ok"),
                             timeout=STARTUP_S, why="state with a store that saves")
        # The store may not grow past what it is now: its write-ahead log fills in a few
        # saves, as a disk would.
        with serve(mqtt_broker.url, tmp_path, *options, "--mqtt-commands", "config",
                   "--stats", str(stats), watch=(seen,),
                   preexec=full_disk_at(store.stat().st_size)) as emulator:
            failing = await seen.until(
                on_topic(f"{BASE}/state", lambda s: s["store"] == "failing"),
                timeout=STARTUP_S, why="state with the saves failing")
            assert body(failing)["save_failures"] >= 1
            await command(c, "config", {"id": 1, "set": {"limits.max_charge_a": 0.5}})
            result = body(await seen.until(result_with("config", 1), why="config result"))
            assert not result["ok"] and result["error"]["code"] == "SAVE_FAILED", result
            await command(c, "config", {"id": 2, "get": ["limits.max_charge_a"]})
            values = body(await seen.until(result_with("config", 2), why="config get"))
            assert values["values"]["limits.max_charge_a"] != 0.5  # not in effect
            later = await seen.until(
                on_topic(f"{BASE}/state", lambda s: s["save_failures"]
                         > body(failing)["save_failures"] + 1),
                why="the emulator serving on, failing saves counted")
            assert body(later)["store"] == "failing"
            code = emulator.stop()
            output = failed(emulator, seen)
    assert code == 0, output
    figures = json.loads(stats.read_text())["nvm"]
    assert figures["path"] == str(store) and figures["failing"], figures
    assert figures["failures"] >= body(later)["save_failures"]
    # logged as the failures started, not once a save
    assert output.count("ERROR saving to") == 1, output
