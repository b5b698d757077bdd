"""`query` and `monitor` with what protocol 1.1 added, against a real `serve --sim` over a
real pty pair: the counters, cell health and configuration-write log, SetTime and the UTC
and boot of log entries, FactoryDefaults, Reset, and fault events shown as they happen.
Cells and sensors are numbered from 1 in everything a person reads."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from rich.console import Console

from bms.links.client import Client
from bms_emu.monitor_cmd import Monitor, render
from bms_emu.query_cmd import NotInProtocol, ask, run_reporting
from protocol import messages as pm
from protocol.framing import REVISION_1_0, REVISION_1_1
from tests.bms_emu.test_query_monitor import SERIES, _emulator, _stop, query, query_json
from tests.support.processes import wait_until


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    """An emulator with a store of its own, kept free of faults."""
    tmp = tmp_path_factory.mktemp("healthy")
    port, procs = _emulator(tmp, "--nvm", str(tmp / "p.sqlite"))
    try:
        yield port, str(tmp / "bms")
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture
def emulator(tmp_path):
    port, procs = _emulator(tmp_path, "--nvm", str(tmp_path / "p.sqlite"))
    try:
        yield port
    finally:
        for p in reversed(procs):
            _stop(p)


def test_counters_and_cell_health(capsys, healthy):
    port, _ = healthy
    def counters() -> dict:
        return {c["name"]: c for c in query_json(capsys, port, "counters")["counters"]}

    # Time in STANDBY counts from the rig's first measurement, which a busy machine delays.
    wait_until(lambda: counters()["time_in_state_s.STANDBY"]["value"] > 0.0, 10,
               "time counted in STANDBY")
    first = counters()
    assert first["charge_in_ah"]["unit"] == "Ah"
    wait_until(lambda: counters()["time_in_state_s.STANDBY"]["value"]
               > first["time_in_state_s.STANDBY"]["value"], 10, "STANDBY time growing")
    assert first["extremes.cell_v_max"]["unit"] == "V"
    cells = query_json(capsys, port, "cell-health")["cells"]
    assert [c["cell"] for c in cells] == list(range(1, SERIES + 1))
    assert all(c["soh_pct"] == pytest.approx(100.0) and c["resistance_ohm"] > 0 for c in cells)
    code, out, _ = query(capsys, port, "cell-health")
    assert code == 0 and "mΩ" in out and f"\n│ {SERIES:>4} │" in out.replace("┃", "│")
    code, out, _ = query(capsys, port, "counters")
    assert code == 0 and "charge_in_ah" in out and " Ah" in out


def test_config_log_and_factory_defaults(capsys, healthy):
    port, link = healthy
    default = query_json(capsys, port, "config", "limits.max_charge_a")["values"][
        "limits.max_charge_a"]
    assert query(capsys, port, "set", "limits.max_charge_a", "1.0")[0] == 0
    entries = query_json(capsys, port, "config-log")["entries"]
    write = entries[-1]
    assert (write["param"], write["old"], write["new"]) == ("limits.max_charge_a", default, 1.0)
    assert write["who"] == f"protocol on {link}" and write["boot"] >= 1
    # in RUN the defaults wait: they would move the thresholds under a pack on the bus
    assert query(capsys, port, "command", "run")[0] == 0
    wait_until(lambda: query_json(capsys, port, "status")["state"] == "RUN", 10, "RUN")
    code, _, err = query(capsys, port, "factory-defaults")
    assert code == 3 and "NOT_NOW" in err and "STANDBY first" in err
    assert query(capsys, port, "command", "standby")[0] == 0
    wait_until(lambda: query_json(capsys, port, "status")["state"] == "STANDBY", 10, "STANDBY")
    assert query_json(capsys, port, "factory-defaults") == {"command": "factory-defaults",
                                                            "accepted": True}
    values = query_json(capsys, port, "config", "limits.max_charge_a")["values"]
    assert values["limits.max_charge_a"] == default
    last = query_json(capsys, port, "config-log")["entries"][-1]
    assert last["who"] == f"protocol on {link}, factory defaults"
    assert (last["old"], last["new"]) == (1.0, default)
    code, out, _ = query(capsys, port, "config-log")
    assert code == 0 and "factory defaults" in out and "limits.max_charge_a" in out


def test_set_time_gives_the_log_utc_and_a_reset_a_new_boot(capsys, emulator):
    port = emulator
    assert query(capsys, port, "set-time")[0] == 0
    set_at = time.time()
    assert query(capsys, port, "inject", "0:temp-sensor-open:sensor=2")[0] == 0
    log = wait_until(lambda: (lambda d: d if d["entries"] else None)(
        query_json(capsys, port, "faults")), 10, "a fault log entry", every_s=0.1)
    first = log["entries"][0]
    assert (first["name"], first["sensor"], first["boot"]) == ("TEMP_SENSOR_FAULT", 2, 1)
    assert first["utc_s"] == pytest.approx(set_at, abs=10.0)
    code, out, _ = query(capsys, port, "faults")
    assert code == 0 and time.strftime("%Y-%m-%d", time.gmtime(set_at)) in out
    # a reset: the latched FAULT stays, the log goes on, the next entries are boot 2
    assert query_json(capsys, port, "reset") == {"command": "reset", "accepted": True}
    wait_until(lambda: (lambda s: s["state"] == "FAULT" and s["time_s"] > 0)(
        query_json(capsys, port, "status")), 10, "FAULT after the reset")
    assert "TEMP_SENSOR_FAULT" in query_json(capsys, port, "status")["faults"]
    assert query(capsys, port, "inject", "0:sensor-offset:cell=3,offset_v=0.6")[0] == 0
    later = wait_until(lambda: (lambda d: [e for e in d["entries"] if e["cell"] == 3])(
        query_json(capsys, port, "faults")), 10, "an entry of cell 3", every_s=0.1)
    assert later[0]["boot"] == 2 and later[0]["utc_s"] is None  # no SetTime in boot 2
    kept = query_json(capsys, port, "faults")["entries"][0]
    assert (kept["boot"], kept["utc_s"]) == (1, first["utc_s"])  # boot 1 keeps its clock


async def test_monitor_shows_fault_events_as_they_happen_cells_from_1(emulator):
    client = Client(emulator, revision=REVISION_1_1)
    await client.start(connect_timeout_s=2)
    monitor = Monitor(client, period_s=0.1, timeout_s=1.0)
    loop = asyncio.get_running_loop()
    try:
        await monitor.setup()
        assert monitor.snap.events == [] and client.revision == REVISION_1_1
        # on the monitor's own link: two readers on one pty would take each other's bytes
        await client.request(pm.Inject("0:sensor-offset:cell=3,offset_v=0.6"), 2.0)
        end = loop.time() + 10.0
        while not any(e["cell"] == 3 for e in monitor.snap.events):
            assert loop.time() < end, monitor.snap.events
            await asyncio.sleep(0.05)
        event = next(e for e in monitor.snap.events if e["cell"] == 3)
        assert event["action"] == "raised" and event["boot"] == 1
        out = io.StringIO()
        Console(file=out, width=120).print(render(monitor.snap))
        assert f"{event['name']} raised, cell 3" in out.getvalue()
        assert monitor.snap.missed_events == 0
    finally:
        await client.close()


async def test_a_1_1_read_of_a_1_0_device_is_refused_in_words_not_a_traceback(capsys):
    """The client fell back to 1.0 (the device refused revision 2): a 1.1 request cannot be
    sent in it, and `query` says so with exit code 3."""
    client = Client("/dev/ttyTEST", revision=REVISION_1_0)
    with pytest.raises(NotInProtocol, match=r"GetCounters is protocol 1\.1; this device "
                                            r"speaks 1\.0"):
        await ask(client, pm.GetCounters(0, 32), pm.CounterPage, 0.1)

    async def work() -> int:
        await ask(client, pm.SetTime(1.7e9), pm.Ack, 0.1)
        return 0

    assert await asyncio.to_thread(run_reporting, "bms-emu query", work) == 3
    assert "refused: SetTime is protocol 1.1" in capsys.readouterr().err
