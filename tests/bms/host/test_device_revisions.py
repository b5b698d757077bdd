"""What protocol 1.1 added to the device's answers, and that a 1.0 client still gets 1.0:
Status by fault level with the bus voltage and the contactor feedback, DeviceInfo's
identity, ParameterList's range and default (held to the catalogue's own validation), pages
that always fit a frame. Every request and answer goes over the codec (`ask`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bms.core.signals import Contactors, Measurement
from bms.data.faults import FAULT_CODES
from bms.data.parameters import CONFIG_SCHEMA_VERSION
from bms.host import device as device_module
from bms.host.device import MAX_PAGE, Device, Identity
from bms.host.frames import contactor_bits
from protocol import messages as pm
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISION_1_1, REVISIONS
from tests.bms.host.test_device import (
    CAPACITY_AH,
    CELLS_V,
    CHEM,
    PARAMS,
    TEMPS_C,
    TYPE,
    Bench,
    nack,
    value,
)

OVER = 1 << FAULT_CODES["CELL_OVERVOLTAGE"]
PARAM_IDS = {p.id: p for p in PARAMS}


@pytest.fixture
def bench() -> Bench:
    """A pack in RUN: a second of readings at rest."""
    b = Bench()
    b.run(1.0)
    return b


def levels_of(b: Bench, cells_v: list[float], seconds: float) -> pm.Status:
    b.run(seconds, {"cells": cells_v})
    return b.ask(pm.GetStatus())


@pytest.mark.parametrize(("cell_v", "levels"), [
    (4.04, (True, False, False)),  # past the WARNING (4.027 V) only
    (4.065, (True, True, False)),  # and the ALARM (4.053 V)
    (4.09, (True, True, True)),  # and the FAULT (4.08 V): latched
])
def test_status_carries_the_faults_by_level_as_the_firmware_has_them(bench, cell_v, levels):
    s = levels_of(bench, [3.5, 3.5, cell_v, 3.5], 3.0)
    act = bench.act
    assert (s.warning_bitmap, s.alarm_bitmap, s.fault_level_bitmap) == act.level_bitmaps
    assert tuple(bool(bits & OVER) for bits in act.level_bitmaps) == levels
    assert s.fault_bitmap == act.fault_bitmap and s.fault_bitmap & OVER
    # fault_bitmap is every level at once
    assert s.warning_bitmap | s.alarm_bitmap | s.fault_level_bitmap == s.fault_bitmap


def test_status_carries_the_bus_voltage_and_the_contactor_feedback_as_measured(bench):
    """The commanded contactors are the firmware's; the feedback is what the auxiliary
    contacts said, which a welded or stuck contactor makes differ."""
    stuck = Contactors(negative=True, precharge=False, positive=False)
    m = Measurement(CELLS_V, TEMPS_C, 0.0, 12.5, stuck, balancing=np.zeros(4, bool))
    bench.step(m)
    s = bench.ask(pm.GetStatus())
    assert s.bus_voltage_v == pytest.approx(12.5)
    assert s.contactor_feedback == contactor_bits(stuck) == pm.CONTACTOR_BITS["negative"]
    assert s.contactors == contactor_bits(bench.act.contactors)


def test_before_the_first_measurement_the_new_fields_say_unknown():
    s = Bench().ask(pm.GetStatus(), now_s=0.0)
    assert math.isnan(s.bus_voltage_v) and s.contactor_feedback == 0
    assert (s.warning_bitmap, s.alarm_bitmap, s.fault_level_bitmap) == (0, 0, 0)


def test_a_1_0_client_gets_the_1_0_answers(bench):
    """Asked in revision 1 the device answers in revision 1: the 1.1 fields do not travel
    (they read as unknown), and DeviceInfo says revision 1."""
    levels_of(bench, [3.5, 3.5, 4.065, 3.5], 3.0)
    s = bench.ask(pm.GetStatus(), revision=REVISION_1_0)
    assert s.fault_bitmap & OVER and s.warning_bitmap == s.alarm_bitmap == 0
    assert math.isnan(s.bus_voltage_v) and math.isnan(s.charge_voltage_limit_v)
    info = bench.ask(pm.GetInfo(), revision=REVISION_1_0)
    assert info.protocol_version == REVISION_1_0 and info.pack_id == ""
    assert info.message_types == () and info.n_series == 4
    entry = bench.ask(pm.GetParameterList(0, 1), revision=REVISION_1_0).entries[0]
    assert math.isnan(entry["max"]) and entry["access"] == 0


def test_device_info_says_who_the_device_is():
    ident = Identity(CHEM.name, pm.Mode.SIM, 2, CAPACITY_AH, len(TEMPS_C), pack_id="rack-7",
                     serial="rack-7-sim", firmware_build="v1.1-4-g0123abc")
    b = Bench()
    b.device = Device(b.fw, CHEM, ident)
    info = b.ask(pm.GetInfo())
    assert info.protocol_version == LATEST_REVISION
    assert (info.pack_id, info.serial, info.firmware_build) == (
        "rack-7", "rack-7-sim", "v1.1-4-g0123abc")
    assert info.config_schema_version == CONFIG_SCHEMA_VERSION >= 1
    assert info.max_page_entries == MAX_PAGE
    assert info.protocol_revisions == tuple(REVISIONS)
    assert set(info.message_types) == {t for t, mt in pm.REGISTRY.items()
                                       if mt.since <= LATEST_REVISION}
    assert set(info.message_types) >= {TYPE[pm.GetInfo], TYPE[pm.Status], TYPE[pm.Nack]}


def parameter_list(b: Bench) -> list[dict]:
    """Every entry, page by page, each asked for from where the last one ended."""
    entries: list[dict] = []
    total = None
    while total is None or len(entries) < total:
        page = b.ask(pm.GetParameterList(len(entries), 255))
        assert page.entries, "a page that holds nothing would never end"
        entries += page.entries
        total = page.total
    return entries


def test_parameter_list_says_range_default_access_and_persistence(bench):
    entries = parameter_list(bench)
    assert [e["param_id"] for e in entries] == [p.id for p in PARAMS]
    by_name = {e["name"]: e for e in entries}
    timeout = by_name["measurement_timeout_s"]  # (0, 10] s
    assert (timeout["min"], timeout["max"]) == (0.0, 10.0)
    assert timeout["open_ends"] == pm.OPEN_END_BITS["min"]
    mode = by_name["balancing.mode"]
    assert math.isnan(mode["min"]) and math.isnan(mode["max"])
    assert mode["choices"][int(mode["default"])] == bench.fw.cfg.balancing.mode
    flag = by_name["estimation.learn_offset_when_open"]
    assert flag["default"] in (0.0, 1.0)
    assert all(e["access"] == pm.ACCESS_BITS["read"] | pm.ACCESS_BITS["write"]
               for e in entries)
    assert not any(e["persisted"] for e in entries)  # no store keeps a write here


def test_parameters_are_persisted_when_a_store_keeps_the_writes():
    b = Bench()
    b.device.on_config_change = lambda who, changes, overrides, now_s: None
    assert all(e["persisted"] for e in b.ask(pm.GetParameterList(0, 5)).entries)


def past(bound: float, kind: int, above: bool) -> float | int:
    """The nearest value beyond `bound` that the wire carries for the kind."""
    if kind == pm.ValueKind.INT:
        return int(bound) + (1 if above else -1)
    step = max(abs(bound) * 1e-6, 1e-6)
    return bound + step if above else bound - step


def test_parameter_ranges_agree_with_what_set_config_refuses(bench):
    """Every bound the list gives is one SetConfig keeps: a value just past it (or on an
    open end) is OUT_OF_RANGE, and the default lies within the range."""
    checked = 0
    for e in parameter_list(bench):
        if e["kind"] not in (pm.ValueKind.FLOAT, pm.ValueKind.INT):
            continue
        lo, hi = e["min"], e["max"]
        open_lo = bool(e["open_ends"] & pm.OPEN_END_BITS["min"])
        open_hi = bool(e["open_ends"] & pm.OPEN_END_BITS["max"])
        assert math.isnan(lo) or e["default"] > lo or (e["default"] == lo and not open_lo)
        assert math.isnan(hi) or e["default"] < hi or (e["default"] == hi and not open_hi)
        outside = [past(hi, e["kind"], True) for _ in [0] if not math.isnan(hi)]
        outside += [past(lo, e["kind"], False) for _ in [0] if not math.isnan(lo)]
        outside += [b for b, is_open in ((lo, open_lo), (hi, open_hi)) if is_open]
        for x in outside:
            reply = bench.ask(pm.SetConfig((value(e["param_id"], e["kind"], x),)))
            detail = nack(reply, pm.ErrorCode.OUT_OF_RANGE)
            assert e["name"] in detail, detail
            checked += 1
    assert checked > 100  # the protection rows included


# How SetConfig refuses a value for how it stands to another parameter, not for its range.
RELATIONAL = re.compile(r": (must be (below|above) the (threshold|release) \(|the \w+ \(.*\) "
                        r"must trip before the|must be (above|below) balancing\.)")


def inside(bound: float, kind: int, is_open: bool, lower: bool) -> float | int:
    """The bound itself, or the nearest value inside an open one."""
    if not is_open:
        return int(bound) if kind == pm.ValueKind.INT else bound
    return past(bound, kind, above=lower)


def test_parameter_ranges_are_not_looser_than_set_config(bench):
    """A value on a bound (just inside an open one) is taken, or refused only for how it
    stands to another parameter (a release, a neighbouring level): never for a range the
    list does not show."""
    for e in parameter_list(bench):
        if e["kind"] not in (pm.ValueKind.FLOAT, pm.ValueKind.INT):
            continue
        for bound, bit, lower in ((e["min"], "min", True), (e["max"], "max", False)):
            if math.isnan(bound):
                continue
            x = inside(bound, e["kind"], bool(e["open_ends"] & pm.OPEN_END_BITS[bit]), lower)
            reply = bench.ask(pm.SetConfig((value(e["param_id"], e["kind"], x),)))
            if isinstance(reply, pm.Nack):
                detail = nack(reply, pm.ErrorCode.OUT_OF_RANGE)
                assert RELATIONAL.search(detail), (e["name"], x, detail)
            else:  # back to the default, so the next parameter is judged alone
                reset = value(e["param_id"], e["kind"], inside(e["default"], e["kind"],
                                                                False, True))
                assert isinstance(bench.ask(pm.SetConfig((reset,))), pm.ConfigValues)


def test_a_page_holds_fewer_entries_when_more_would_not_fit_a_frame(bench, monkeypatch):
    """The page limit is MAX_PAGE entries and one frame: a client asking on from the entries
    it got reads every parameter once."""
    monkeypatch.setattr(device_module, "MAX_PAYLOAD_BYTES", 600)
    full = bench.ask(pm.GetParameterList(0, MAX_PAGE))
    assert 1 <= len(full.entries) < MAX_PAGE
    assert len(pm.encode_payload(full, LATEST_REVISION)[1]) <= 600
    assert [e["param_id"] for e in parameter_list(bench)] == [p.id for p in PARAMS]


def test_telemetry_goes_in_the_revision_of_the_subscribe(bench):
    sub = pm.Subscribe(({"msg_type": TYPE[pm.Status], "period_ms": 100},))
    for revision in (REVISION_1_0, REVISION_1_1):
        assert isinstance(bench.ask(sub, revision=revision), pm.Ack)
        assert bench.device.telemetry_revision == revision


def test_the_device_answers_json_commands_with_everything_it_knows(bench):
    """A request handed in without a revision (MQTT's JSON commands) gets the newest."""
    info = bench.device.handle(pm.GetInfo(), bench.now_s)
    assert info.protocol_version == LATEST_REVISION and info.protocol_revisions


def test_set_config_of_a_parameter_at_its_default_is_taken(bench):
    entries = {e["param_id"]: e for e in parameter_list(bench)}
    p = PARAM_IDS[0x0101]  # limits.max_charge_a
    reply = bench.ask(pm.SetConfig((value(p.id, pm.ValueKind.FLOAT,
                                          entries[p.id]["default"]),)))
    assert isinstance(reply, pm.ConfigValues)
    assert reply.values[0]["value"] == pytest.approx(entries[p.id]["default"])

