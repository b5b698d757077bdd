"""Protocol 1.1 over a real Mosquitto: FaultEvents pushed on `proto/out` to a client that
subscribed to them, in the step they happen, cell numbered as the payload numbers it (from
0); the new writes held to the command policy on `proto/in` like every other (SetTime
enabled here, RESET not); the new reads always answered."""

from __future__ import annotations

import asyncio
import math
import secrets
import time

import pytest

from bms.data.faults import FAULT_CODES
from bms.links.client import Client, Refused
from bms.links.mqtt.bridge import pack_topic
from bms.links.mqtt.link import mqtt_link
from bms.links.mqtt.session import MqttSession, parse_broker
from protocol import messages as pm
from protocol.framing import REVISION_1_1
from tests.support.mqtt_broker import Broker, require_mosquitto
from tests.with_broker.test_mqtt_links import serve, wait_ready

EVENTS = ({"msg_type": pm.BY_CLASS[pm.FaultEvent].type_id, "period_ms": 0},)
OVERVOLTAGE_CODES = {FAULT_CODES["CELL_OVERVOLTAGE"], FAULT_CODES["CELL_IMBALANCE"],
                     FAULT_CODES["VOLTAGE_SENSOR_FAULT"]}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker and `serve --sim` over it that lets `proto/in` inject and set the time."""
    require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    proc = serve(broker, "--sim", "--tick", "0.05", "--no-nvm",
                 "--mqtt-commands", "inject,set-time")
    try:
        wait_ready(broker, proc)
        yield broker
    finally:
        proc.stop()
        broker.stop()


def client(broker: Broker) -> Client:
    b = parse_broker(broker.url)
    session = MqttSession(b, f"test-client-{secrets.token_hex(4)}")
    return Client(mqtt_link(session, pack_topic(b.prefix, "p1"), device_side=False,
                            owns_session=True), revision=REVISION_1_1)


async def test_fault_events_arrive_on_proto_out_as_they_happen(broker):
    async with client(broker) as bms:
        pushed: list[pm.FaultEvent] = []
        bms.on(pm.FaultEvent, pushed.append)
        assert isinstance(await bms.request(pm.Subscribe(EVENTS), 5.0), pm.Ack)
        assert bms.revision == REVISION_1_1
        before = (await bms.request(pm.GetFaultLog(0, 0), 5.0))
        await bms.request(pm.Inject("0:sensor-offset:cell=3,offset_v=0.6"), 5.0)
        deadline = time.monotonic() + 20.0
        while not any(e.code in OVERVOLTAGE_CODES for e in pushed):
            assert time.monotonic() < deadline, f"no fault event in 20 s: {pushed}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # what the same steps raised arrives too
        first = before.dropped + before.total
        assert [e.log_index for e in pushed] == list(range(first, first + len(pushed)))
        cell3 = [e for e in pushed if e.code in OVERVOLTAGE_CODES and e.index == 2]
        assert cell3 and cell3[0].action == 1 and math.isnan(cell3[0].utc_s)
        # the log holds each one at the index the event named
        page = await bms.request(pm.GetFaultLog(cell3[0].log_index - before.dropped, 1), 5.0)
        (entry,) = page.entries
        assert (entry["code"], entry["t_s"], entry["index"]) == (
            cell3[0].code, cell3[0].time_s, 2)


async def test_writes_need_the_policy_and_reads_do_not(broker):
    async with client(broker) as bms:
        assert isinstance(await bms.request(pm.SetTime(1_767_225_600.0), 5.0), pm.Ack)
        with pytest.raises(Refused) as refused:
            await bms.request(pm.CommandRequest(pm.Command.RESET, 0), 5.0)
        assert refused.value.code == "NOT_ENABLED"
        assert "the reset command is not enabled here" in refused.value.nack.detail
        counters = await bms.request(pm.GetCounters(0, 255), 5.0)
        assert {e["name"] for e in counters.entries} >= {"charge_in_ah", "contactor_cycles"}
        health = await bms.request(pm.GetCellHealth(0, 255), 5.0)
        assert health.total == len(health.entries) == 8
        log = await bms.request(pm.GetConfigLog(0, 10), 5.0)
        assert log.total == 0  # --no-nvm: no store, no log
