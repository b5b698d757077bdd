"""The Modbus server as clients nobody here wrote see it: pysunspec2 (the SunSpec Alliance's
own client) discovers the models and reads what `query status` says; pymodbus's client
writes, and is refused per the Modbus standard unless the command policy allows; the alarm
bitfields carry a WARNING and an ALARM on their own bits. Real TCP on a free localhost
port; the firmware is stepped by hand in simulated time."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest
import sunspec2.modbus.client as sunspec_client
from pymodbus.client import AsyncModbusTcpClient

from bms.core.signals import State
from bms.data.faults import FAULT_CODES
from bms.host.policy import parse_policy
from bms.links.modbus.server import ModbusLink
from bms.links.modbus.sunspec_points import point
from tests.bms.links.modbus.pack_bench import CELLS_V, PACK_ID, Bench, serving

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


def scan(port: int) -> dict:
    """What pysunspec2 finds: {model id: model}."""
    device = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1",
                                                         ipport=port, timeout=5)
    try:
        device.scan()
        return {mid: models[0] for mid, models in device.models.items() if isinstance(mid, int)}
    finally:
        device.close()


def address_of(link: ModbusLink, key: str) -> int:
    return next(s.address for s in link.map.layout.slots() if s.point.key == key)


def close_to(read: float, expected: float, sf: int) -> bool:
    """Equal to within half a step of the scale factor."""
    return abs(read - expected) <= 0.5 * 10.0 ** sf + 1e-9


async def client_for(link: ModbusLink) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=link.port, timeout=5, retries=0)
    assert await client.connect()
    return client


async def test_pysunspec2_discovers_the_models_and_reads_what_query_status_says():
    bench = Bench()
    bench.run()
    bench.step(current_a=-1.2, n=20)  # a discharge: limits, current and power not zero
    status = bench.status()
    async with serving(bench) as link:
        models = await asyncio.to_thread(scan, link.port)
    assert sorted(models) == [1, 802, 803, 804, 805]
    common, battery, cells = models[1], models[802], models[805]
    assert (common.Mn.cvalue, common.SN.cvalue) == ("bms-emu", PACK_ID)
    exponents = link.map.exponents
    for name, expected, sf in (
            ("SoC", status.soc_pct, "SoC_SF"), ("SoH", status.soh_pct, "SoH_SF"),
            ("AChaMax", status.charge_limit_a, "AMax_SF"),
            ("ADisChaMax", status.discharge_limit_a, "AMax_SF"),
            ("VMax", status.charge_voltage_limit_v, "V_SF"),
            ("VMin", status.discharge_voltage_limit_v, "V_SF"),
            ("V", status.pack_voltage_v, "V_SF"), ("A", status.current_a, "A_SF"),
            ("CellVMax", status.cell_v_max, "CellV_SF")):
        assert math.isfinite(expected) and close_to(getattr(battery, name).cvalue, expected,
                                                    exponents[sf]), name
    assert status.discharge_limit_a > 0 and battery.A.cvalue < 0  # positive = charging
    assert battery.State.value == point("802.State").symbols["CONNECTED"]
    assert battery.StateVnd.value == State.RUN.code == status.state
    assert battery.ChaSt.value == point("802.ChaSt").symbols["DISCHARGING"]
    cell_group = cells.groups["lithium-ion-module-cell"]
    assert [round(c.CellV.cvalue, 2) for c in cell_group] == list(CELLS_V)
    assert (cells.CellVMaxCell.value, cells.CellVMinCell.value) == (3, 2)  # from 1


async def test_reads_outside_the_map_get_illegal_data_address():
    bench = Bench()
    bench.step()
    async with serving(bench) as link:
        client = await client_for(link)
        inside = await client.read_holding_registers(link.map.base, count=4, device_id=1)
        end = link.map.layout.end_address
        outside = [await client.read_holding_registers(a, count=n, device_id=1)
                   for a, n in ((0, 2), (50000, 2), (link.map.base - 1, 2), (end, 1),
                                (end - 1, 2))]
        client.close()
    assert inside.registers == [0x5375, 0x6E53, 1, 66]  # SunS, then model 1 and its length
    assert [r.exception_code for r in outside] == [ILLEGAL_ADDRESS] * 5


async def test_writes_are_refused_by_default_with_illegal_function_and_counted():
    bench = Bench()
    bench.step()
    async with serving(bench) as link:
        client = await client_for(link)
        reply = await client.write_register(address_of(link, "802.SetOp"), 1, device_id=1)
        client.close()
    bench.step(n=10)
    assert reply.exception_code == ILLEGAL_FUNCTION
    assert bench.device.not_enabled["CommandRequest"] == 1  # the policy's refusal, counted
    assert bench.fw.state == State.STANDBY  # nothing asked of the firmware
    assert link.stats()["exception_ILLEGAL_FUNCTION"] == 1


async def test_enabled_writes_reach_the_firmware_through_the_policy():
    bench = Bench()
    bench.step()
    policy = parse_policy("state=run,clear-faults", "--modbus-commands")
    async with serving(bench, policy) as link:
        client = await client_for(link)
        set_op = address_of(link, "802.SetOp")
        connect = await client.write_register(set_op, 1, device_id=1)
        for _ in range(100):
            if bench.step().state == State.RUN:
                break
        read_back = await client.read_holding_registers(set_op, count=1, device_id=1)
        disconnect = await client.write_register(set_op, 2, device_id=1)  # not `run`
        client.close()
    assert not connect.isError() and bench.fw.state == State.RUN
    assert read_back.registers == [1]  # CONNECT: what the firmware does
    assert disconnect.exception_code == ILLEGAL_FUNCTION
    assert bench.device.not_enabled["CommandRequest"] == 1
    assert link.stats()["writes"] == 1


async def test_bad_writes_name_the_address_or_the_value_and_change_nothing():
    bench = Bench()
    bench.step()
    policy = parse_policy("state,clear-faults", "--modbus-commands")
    async with serving(bench, policy) as link:
        client = await client_for(link)
        set_op = address_of(link, "802.SetOp")
        replies = {
            "read-only SoC": await client.write_register(address_of(link, "802.SoC"), 50,
                                                         device_id=1),
            "SetOp = 7": await client.write_register(set_op, 7, device_id=1),
            "SetOp and the unimplemented SetInvState": await client.write_registers(
                set_op, [1, 1], device_id=1),
            "the SunS marker": await client.write_register(link.map.base, 0, device_id=1),
            "AlmRst = 2": await client.write_register(address_of(link, "802.AlmRst"), 2,
                                                      device_id=1),
            "input registers": await client.read_input_registers(set_op, count=1,
                                                                 device_id=1),
        }
        client.close()
    bench.step(n=10)
    assert {what: r.exception_code for what, r in replies.items()} == {
        "read-only SoC": ILLEGAL_ADDRESS, "SetOp = 7": ILLEGAL_VALUE,
        "SetOp and the unimplemented SetInvState": ILLEGAL_ADDRESS,
        "the SunS marker": ILLEGAL_ADDRESS, "AlmRst = 2": ILLEGAL_VALUE,
        "input registers": ILLEGAL_FUNCTION}
    assert bench.fw.state == State.STANDBY and not bench.device.not_enabled


@pytest.mark.parametrize("key", ["802.Evt1", "803.StrEvt1", "804.Evt1"])
async def test_a_warning_and_an_alarm_show_on_their_own_bits(key):
    bench = Bench()
    symbols = point(key).symbols
    warning = 1 << symbols["OVER_TEMP_WARNING"]
    alarm = 1 << symbols["OVER_TEMP_ALARM"]
    vendor = 1 << FAULT_CODES["DISCHARGE_OVERTEMP"]

    async def read(link, client, what):
        regs = (await client.read_holding_registers(address_of(link, what), count=2,
                                                    device_id=1)).registers
        return regs[0] << 16 | regs[1]

    async with serving(bench) as link:
        client = await client_for(link)
        vendor_key = key.replace("Evt1", "EvtVnd1")
        bench.step(temps=[25.0, 25.0], n=10)
        quiet = await read(link, client, key)
        bench.step(temps=[55.0, 55.0], n=60)  # DISCHARGE_OVERTEMP WARNING: 54 °C for 5 s
        at_warning = await read(link, client, key), await read(link, client, vendor_key)
        bench.step(temps=[58.0, 58.0], n=60)  # its ALARM: 57 °C for 5 s
        at_alarm = await read(link, client, key)
        client.close()
    assert quiet == 0
    assert at_warning == (warning, vendor)
    assert at_alarm == warning | alarm  # the WARNING row still stands above 54 °C


async def test_a_client_sending_bad_headers_costs_one_log_line_a_minute_not_a_flood(caplog):
    """A frame with a protocol id other than 0 (not Modbus) is skipped by its length and
    the next frame is read; said once a minute, counted each time."""
    bench = Bench()
    async with serving(bench) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        for tid in range(5):  # protocol ids 7, 8, ...: not Modbus
            writer.write(tid.to_bytes(2, "big") + bytes([0, 7 + tid])
                         + b"\x00\x06\x01\x03\x9c\x40\x00\x01")
        writer.write(frame(9, b"\x03\x9c\x40\x00\x01"))
        await writer.drain()
        tid, pdu = await answer(reader)
        writer.close()
        assert (tid, pdu[:2]) == (9, b"\x03\x02")  # the good one after them: answered
        assert link.stats()["not_modbus"] == 5
    said = [r.getMessage() for r in caplog.records if "Modbus:" in r.getMessage()]
    assert len(said) == 1 and "protocol id 7 is not 0 (Modbus): frame skipped" in said[0]


def frame(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    """A Modbus TCP frame (MBAP header and PDU)."""
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes(
        [unit]) + pdu


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next answer's transaction id and PDU."""
    header = await asyncio.wait_for(reader.readexactly(7), 5)
    return int.from_bytes(header[:2]), await asyncio.wait_for(
        reader.readexactly(int.from_bytes(header[4:6]) - 1), 5)


async def test_pipelined_requests_are_all_answered_in_order():
    """A client may send its next requests before the answers (the Modbus messaging guide):
    200 reads in one write, then a read sent a byte at a time, each answered in order
    under its own transaction id."""
    async with serving(Bench()) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        base = link.map.base
        writer.write(b"".join(frame(tid, b"\x03" + (base + tid % 60).to_bytes(2, "big")
                                    + b"\x00\x01") for tid in range(200)))
        split = frame(500, b"\x03" + base.to_bytes(2, "big") + b"\x00\x02")
        for byte in split:
            writer.write(bytes([byte]))
            await writer.drain()
        answers = [await answer(reader) for _ in range(201)]
        writer.close()
    image = link._current_image()
    assert [tid for tid, _ in answers] == [*range(200), 500]
    for tid, pdu in answers[:200]:
        assert pdu == b"\x03\x02" + image[tid % 60].to_bytes(2, "big")
    assert answers[200][1][:2] == b"\x03\x04"
    assert link.stats()["reads"] == 201


async def test_a_client_pipelining_thousands_leaves_room_for_the_others():
    """Requests are answered one at a time with the event loop's other work between them
    (the firmware's ticks, other connections): a client that sent 20,000 at once held the
    loop until all were answered. Another client's request is answered meanwhile."""
    count = 20000
    async with serving(Bench()) as link:
        read = b"\x03" + link.map.base.to_bytes(2, "big") + b"\x00\x01"
        greedy_r, greedy_w = await asyncio.open_connection("127.0.0.1", link.port)
        greedy_w.write(b"".join(frame(tid % 65536, read) for tid in range(count)))
        while not link.stats().get("reads"):  # its answers have begun
            await asyncio.sleep(0.001)
        assert (await ask_raw(link, read))[:2] == b"\x03\x02"
        answered_before_the_other = link.stats()["reads"] - 1
        answers = [await answer(greedy_r) for _ in range(count)]
        greedy_w.close()
    assert answered_before_the_other < count
    assert [tid for tid, _ in answers] == [tid % 65536 for tid in range(count)]


async def test_a_client_that_does_not_read_its_answers_is_held_back_not_buffered():
    """Answers wait only while the socket takes them: a client that sends and does not read
    is held back by TCP (the server stops reading its requests) instead of the server
    buffering every answer (8 MB/s grew without bound); once it reads, it gets them all."""
    count = 30000
    async with serving(Bench()) as link:
        read = b"\x03" + link.map.base.to_bytes(2, "big") + b"\x00\x7d"  # 125 registers
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", link.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"".join(frame(tid % 65536, read) for tid in range(count)))
        await asyncio.sleep(2.0)
        held = link.stats()["reads"]
        answers = [await answer(reader) for _ in range(count)]
        writer.close()
    assert held < count  # 259 bytes an answer: the rest of the 7.8 MB was not made
    assert [tid for tid, _ in answers] == [tid % 65536 for tid in range(count)]


async def test_requests_sent_before_a_half_close_are_answered():
    async with serving(Bench()) as link:
        read = b"\x03" + link.map.base.to_bytes(2, "big") + b"\x00\x01"
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"".join(frame(tid, read) for tid in range(200)))
        await writer.drain()
        writer.write_eof()
        answers = [await answer(reader) for _ in range(200)]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
        writer.close()
    assert [tid for tid, _ in answers] == list(range(200))


@pytest.mark.parametrize("length", [0, 1, 255, 0xFFFF])
async def test_a_length_no_modbus_frame_has_closes_the_connection_after_the_answers_before(
        length):
    """Where the next frame starts is then unknown: the requests before it are answered,
    the connection is closed, and the server goes on serving new ones."""
    async with serving(Bench()) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        read = b"\x03" + link.map.base.to_bytes(2, "big") + b"\x00\x01"
        writer.write(frame(1, read) + b"\x00\x02\x00\x00" + length.to_bytes(2, "big")
                     + b"\x01\x03" + frame(3, read))
        await writer.drain()
        assert (await answer(reader))[0] == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, 3 unanswered
        writer.close()
        assert link.stats()["bad_length"] == 1
        assert (await ask_raw(link, read))[:2] == b"\x03\x02"


async def ask_raw(link: ModbusLink, pdu: bytes) -> bytes:
    """The PDU of the server's answer to `pdu`, over a bare socket (unit 1)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    try:
        writer.write(b"\x00\x2a\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + b"\x01" + pdu)
        header = await asyncio.wait_for(reader.readexactly(7), 5)
        assert header[:2] == b"\x00\x2a"  # the transaction id echoed
        return await asyncio.wait_for(reader.readexactly(int.from_bytes(header[4:6]) - 1), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(("pdu", "expected"), [
    (b"\x01\x00\x00\x00\x01", b"\x81\x01"),  # coils: none here
    (b"\x04\x9c\x40\x00\x01", b"\x84\x01"),  # input registers: the map is holding ones
    (b"\x07", b"\x87\x01"), (b"\x08\x00\x00\x12\x34", b"\x88\x01"),  # diagnostics
    (b"\x11", b"\x91\x01"),  # report server id (pymodbus's said "Pymodbus")
    (b"\x2b\x0e\x01\x00", b"\xab\x01"),  # read device identification
    (b"\x41", b"\xc1\x01"),  # a code no standard assigns: its own code, not 0x80
    (b"\x81", b"\x81\x01"), (b"\xff\x00", b"\xff\x01"),  # no request has such a code
    (b"\x10\x9c\x40\x00\x02\x04\x00", b"\x90\x03"),  # 16 with fewer bytes than it says
    (b"\x03\x9c\x40\x00\x01\x00\x00", b"\x83\x03"),  # 03 longer than a 03
    (b"\x03\x9c\x40\x00\x00", b"\x83\x03"), (b"\x03\x9c\x40\x00\x7e", b"\x83\x03"),
], ids=["01", "04", "07", "08", "11", "2B", "41", "81", "FF", "16 short", "03 long", "03 count 0",
     "03 count 126"])
async def test_functions_other_than_03_06_16_are_illegal_under_their_own_code(pdu, expected):
    """Per the Modbus application protocol: the exception carries the request's function
    code with its top bit set; a read of 0 or over 125 registers is ILLEGAL_DATA_VALUE."""
    async with serving(Bench()) as link:
        assert await ask_raw(link, pdu) == expected
        assert (await ask_raw(link, b"\x03\x9c\x40\x00\x7d"))[:2] == b"\x03\xfa"  # 125: read
        name = {1: "ILLEGAL_FUNCTION", 3: "ILLEGAL_VALUE"}[expected[1]]
        assert link.stats()[f"exception_{name}"] == 1  # counted, whoever refused it
