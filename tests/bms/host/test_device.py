"""The Device as the protocol sees it: every request answered from the firmware's state,
every refusal a Nack with a code and a reason, and a refused change changing nothing.

Pure: no port, no clock. Each request goes through the codec both ways (as it would on the
wire) and so does each answer, so what is asserted is what a host would receive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bms import __version__
from bms.core.firmware import Firmware
from bms.core.signals import OPEN, FaultEvent, Measurement, State
from bms.data.faults import FAULT_CODES, Level
from bms.data.parameters import catalogue, value_of
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from bms.host.device import MAX_PAGE, Device, Identity
from bms.host.frames import contactor_bits
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.framing import LATEST_REVISION, Flags

CHEM = PRESETS["na-nfm"]
N_SERIES = 4
CAPACITY_AH = 2 * CHEM.capacity_ah  # two cells in parallel
TICK_S = 0.1
# Distinct readings, so that the extremes and their indices are unambiguous.
CELLS_V = np.array([3.50, 3.48, 3.53, 3.51])  # min at 1, max at 2
TEMPS_C = np.array([24.0, 27.5, 22.0])  # min at 2, max at 1
TYPE = {cls: mt.type_id for cls, mt in pm.BY_CLASS.items()}
PARAMS = catalogue(Firmware(CHEM, N_SERIES, CAPACITY_AH).cfg)
PARAM = {p.name: p for p in PARAMS}
OVERVOLTAGE = {"cells": [3.5, 3.5, 4.09, 3.5]}  # cell 2 past the fault threshold (4.08 V)


def measurement(cells=CELLS_V, temps=TEMPS_C, current_a=0.0, contactors=OPEN) -> Measurement:
    """Readings at rest; the bus is up when the contactors (the feedback) connect it. The
    readings carry no bleed's drop in the sense wires, so they say no bleed switch was on
    (else the firmware would take the drop of the bleed it commanded off them)."""
    v = np.asarray(cells, float)
    bus_up = contactors.negative and (contactors.positive or contactors.precharge)
    return Measurement(v, np.asarray(temps, float), current_a,
                       float(v.sum()) if bus_up else 0.0, contactors,
                       balancing=np.zeros(v.shape, dtype=bool))


class Bench:
    """A Device on a firmware stepped by hand, as the runtime steps it."""

    def __init__(self, mode=pm.Mode.SIM, inject=None, overrides=None):
        self.fw = Firmware(CHEM, N_SERIES, CAPACITY_AH)
        self.device = Device(self.fw, CHEM, Identity(CHEM.name, mode, 2, CAPACITY_AH, len(TEMPS_C)),
                             overrides, inject=inject)
        self.k = 0
        self.act = None
        self.m = None

    @property
    def now_s(self) -> float:
        return self.k * TICK_S

    def step(self, m: Measurement | None | dict = "default"):
        """One step on `m`, or on CELLS_V (or the readings a dict gives) with the contactor
        feedback and the bus following the last command."""
        if m == "default" or isinstance(m, dict):
            closed = OPEN if self.act is None else self.act.contactors
            readings = {"cells": CELLS_V, **({} if m == "default" else m)}
            # 0.1 mV of dither: readings that never change are a stuck sensor
            readings["cells"] = np.asarray(readings["cells"]) + 1e-4 * (self.k % 2)
            m = measurement(contactors=closed, **readings)
        self.m = m
        self.act = self.fw.step(self.m, self.now_s)
        self.device.observe(self.m, self.act)
        self.k += 1
        return self.act

    def run(self, seconds: float, m: Measurement | None | dict = "default"):
        for _ in range(round(seconds / TICK_S)):
            self.step(m)
        return self.act

    def ask(self, msg: object, now_s: float | None = None,
            revision: int = LATEST_REVISION) -> object:
        return ask(self.device, msg, self.now_s if now_s is None else now_s, revision)


def wire(msg: object, seq: int = 1, flags: Flags | None = None,
         revision: int = LATEST_REVISION) -> object:
    """The message as the other end decodes it."""
    items = Decoder().feed(encode(msg, seq, flags, revision))
    assert len(items) == 1 and isinstance(items[0], Frame), items
    return items[0].message


def ask(device: Device, msg: object, now_s: float, revision: int = LATEST_REVISION) -> object:
    """A request over the codec in `revision`, its answer back over the codec in the same
    revision (as the runtime sends it); every Nack checked."""
    reply = device.handle(wire(msg, flags=Flags.REQUEST, revision=revision), now_s,
                          revision=revision)
    flags = Flags.RESPONSE | (Flags.ERROR if isinstance(reply, pm.Nack) else 0)
    back = wire(reply, seq=9, flags=flags, revision=revision)
    # float32 on the wire: what arrives encodes to the same bytes as what was sent
    assert encode(back, 9, flags, revision) == encode(reply, 9, flags, revision), (reply, back)
    if isinstance(reply, pm.Nack):
        assert pm.same(back, reply)
        assert reply.detail.strip(), reply
        assert reply.request_type == TYPE[type(msg)]
        assert reply.error in set(pm.ErrorCode)
    return back


def nack(reply: object, code: pm.ErrorCode) -> str:
    assert isinstance(reply, pm.Nack), reply
    assert reply.error == code, (pm.ErrorCode(reply.error).name, reply.detail)
    return reply.detail


def value(pid: int, kind: pm.ValueKind, v: object) -> dict:
    return {"param_id": pid, "kind": int(kind), "value": v}


@pytest.fixture
def bench() -> Bench:
    b = Bench()
    b.run(1.0)
    assert b.fw.state == "RUN"  # a pack at rest with the bus up: closed in a few steps
    return b


# --- every request has its answer -----------------------------------------------------------

REQUESTS = {
    pm.GetInfo: (pm.GetInfo(), pm.DeviceInfo),
    pm.GetStatus: (pm.GetStatus(), pm.Status),
    pm.GetCellVoltages: (pm.GetCellVoltages(), pm.CellVoltages),
    pm.GetTemperatures: (pm.GetTemperatures(), pm.Temperatures),
    pm.GetCellSoc: (pm.GetCellSoc(), pm.CellSoc),
    pm.GetBalancing: (pm.GetBalancing(), pm.BalancingState),
    pm.GetFaultLog: (pm.GetFaultLog(0, 10), pm.FaultLogPage),
    pm.GetParameterList: (pm.GetParameterList(0, 10), pm.ParameterList),
    pm.GetConfig: (pm.GetConfig((1, 2)), pm.ConfigValues),
    pm.SetConfig: (pm.SetConfig((value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT,
                                       1.0),)), pm.ConfigValues),
    pm.CommandRequest: (pm.CommandRequest(pm.Command.STANDBY, 0), pm.Ack),
    pm.Subscribe: (pm.Subscribe(({"msg_type": TYPE[pm.Status], "period_ms": 100},)), pm.Ack),
    pm.TimeSync: (pm.TimeSync(12.5), pm.TimeInfo),
    pm.Inject: (pm.Inject("1:open-wire:cell=1"), pm.Ack),
    pm.SetTime: (pm.SetTime(1.7e9), pm.Ack),
    pm.GetCounters: (pm.GetCounters(0, 10), pm.CounterPage),
    pm.GetCellHealth: (pm.GetCellHealth(0, 10), pm.CellHealthPage),
    pm.GetConfigLog: (pm.GetConfigLog(0, 10), pm.ConfigLogPage),
}


def test_every_request_type_in_the_catalogue_has_an_answer_of_its_type(bench):
    requests = {mt.cls for mt in pm.REGISTRY.values() if mt.flags == Flags.REQUEST}
    assert requests == set(REQUESTS)  # a new request type needs its line here
    bench.device.inject = lambda spec, now_s: None
    for cls, (msg, answer) in REQUESTS.items():
        reply = bench.ask(msg)
        assert isinstance(reply, answer), (cls.__name__, reply)
        assert pm.BY_CLASS[type(reply)].flags == Flags.RESPONSE


def test_requests_before_the_first_step_are_answered():
    b = Bench()
    status = b.ask(pm.GetStatus(), now_s=0.0)
    assert State.from_code(status.state) == "INIT" and status.contactors == 0
    assert status.fault_bitmap == 0 and math.isnan(status.pack_voltage_v)
    assert math.isnan(status.soc_pct)
    assert len(b.ask(pm.GetCellVoltages()).cell_voltage_v) == 0
    assert len(b.ask(pm.GetCellSoc()).soc_pct) == 0
    assert not b.ask(pm.GetBalancing()).mask.any()
    assert b.ask(pm.GetFaultLog(0, 10)).entries == ()


def test_device_info_describes_the_pack_and_its_capabilities():
    caps = pm.Capability
    sim = Bench(inject=lambda spec, now_s: None)
    sim.step()
    info = sim.ask(pm.GetInfo())
    assert (info.protocol_version, info.firmware_version) == (LATEST_REVISION, __version__)
    assert (info.chemistry, info.mode, info.n_series, info.n_parallel) == (
        CHEM.name, pm.Mode.SIM, N_SERIES, 2)
    assert info.n_temp_sensors == len(TEMPS_C)
    assert info.capacity_ah == pytest.approx(CAPACITY_AH)
    assert info.capabilities == caps.INJECT | caps.CONFIG_SET | caps.TELEMETRY

    hil = Bench(mode=pm.Mode.HIL)
    hil.step()
    info = hil.ask(pm.GetInfo())
    assert info.mode == pm.Mode.HIL
    assert info.capabilities == caps.HIL | caps.CONFIG_SET | caps.TELEMETRY  # no INJECT


def test_status_reports_the_last_step(bench):
    bench.step({"current_a": -0.2})
    act, m = bench.act, bench.m
    s = bench.ask(pm.GetStatus(), now_s=123.25)
    assert s.time_s == 123.25
    assert State.from_code(s.state) == act.state == "RUN"
    assert s.contactors == contactor_bits(act.contactors) == (
        pm.CONTACTOR_BITS["negative"] | pm.CONTACTOR_BITS["positive"])
    assert s.fault_bitmap == act.fault_bitmap
    assert s.pack_voltage_v == pytest.approx(m.cell_voltage_v.sum(), abs=1e-5)
    assert s.current_a == pytest.approx(-0.2)
    assert (s.cell_v_min_index, s.cell_v_max_index) == (1, 2)
    assert (s.cell_v_min, s.cell_v_max) == pytest.approx(
        (m.cell_voltage_v[1], m.cell_voltage_v[2]), abs=1e-6)
    assert (s.temp_c_min_index, s.temp_c_max_index) == (2, 1)
    assert (s.temp_c_min, s.temp_c_max) == pytest.approx((22.0, 27.5))
    assert s.soc_pct == pytest.approx(act.soc * 100.0, abs=1e-4)
    assert s.soh_pct == pytest.approx(act.estimate.soh_pct, abs=1e-4)
    assert s.charge_limit_a == pytest.approx(act.charge_limit_a, abs=1e-5)
    assert s.discharge_limit_a == pytest.approx(act.discharge_limit_a, abs=1e-5)
    assert s.balancing_count == np.count_nonzero(act.balance_mask)
    # the pack voltage limits an inverter keeps to (CVL / DVL), as the step published them
    assert (s.charge_voltage_limit_v, s.discharge_voltage_limit_v) == pytest.approx(
        (act.charge_voltage_limit_v, act.discharge_voltage_limit_v), abs=1e-4)
    assert s.discharge_voltage_limit_v < s.pack_voltage_v < s.charge_voltage_limit_v
    assert m is bench.device.measurement


def test_status_before_any_step_has_no_voltage_limits():
    s = Bench().ask(pm.GetStatus())
    assert math.isnan(s.charge_voltage_limit_v) and math.isnan(s.discharge_voltage_limit_v)


def test_status_fault_bitmap_is_the_actuations(bench):
    bench.run(3.0, OVERVOLTAGE)
    assert bench.act.fault_bitmap >> FAULT_CODES["CELL_OVERVOLTAGE"] & 1
    s = bench.ask(pm.GetStatus())
    assert s.fault_bitmap == bench.act.fault_bitmap
    assert State.from_code(s.state) == "FAULT" and s.contactors == 0


def test_arrays_are_the_measurement_and_the_estimate(bench):
    cells = bench.ask(pm.GetCellVoltages()).cell_voltage_v
    assert np.allclose(cells, bench.m.cell_voltage_v, atol=1e-6) and len(cells) == N_SERIES
    temps = bench.ask(pm.GetTemperatures()).temperature_c
    assert np.allclose(temps, TEMPS_C) and len(temps) == len(TEMPS_C)
    soc = bench.ask(pm.GetCellSoc()).soc_pct
    assert np.allclose(soc, bench.act.estimate.cell_soc * 100.0, atol=1e-4)
    assert len(soc) == N_SERIES


def test_balancing_state_is_the_mode_and_the_mask(bench):
    assert bench.act.balance_mask.any()  # a 50 mV spread at rest bleeds
    state = bench.ask(pm.GetBalancing())
    assert state.mode == pm.BalancingMode.VOLTAGE
    assert np.array_equal(state.mask, bench.act.balance_mask)
    assert state.mask.dtype == bool


# --- the fault log ------------------------------------------------------------------------

@pytest.fixture
def faulted(bench) -> Bench:
    """A silent rig (timeout raised), readings back and a clear request (the timeout
    cleared: a clear is taken only when it ends the FAULT), then over-voltage on cell 2
    (warning, alarm, fault raised)."""
    bench.run(0.5)
    bench.run(1.5, None)
    bench.step()
    assert bench.fw.request("clear-faults") is None
    bench.step()
    bench.run(3.0, OVERVOLTAGE)
    names = [(e.event.name, e.event.level, e.event.action) for e in bench.fw.log.entries]
    assert names == [("MEASUREMENT_TIMEOUT", "FAULT", "raised"),
                     ("MEASUREMENT_TIMEOUT", "FAULT", "cleared"),
                     ("CELL_OVERVOLTAGE", "WARNING", "raised"),
                     ("CELL_OVERVOLTAGE", "ALARM", "raised"),
                     ("CELL_OVERVOLTAGE", "FAULT", "raised")]
    return bench


def test_fault_log_entries_carry_codes_levels_actions_and_readings(faulted):
    page = faulted.ask(pm.GetFaultLog(0, 255))
    assert (page.total, page.dropped, page.start) == (5, 0, 0)
    timeout, cleared, warn, alarm, fault = page.entries
    code = FAULT_CODES["CELL_OVERVOLTAGE"]
    assert [(e["code"], e["level"], e["action"]) for e in (warn, alarm, fault)] == [
        (code, Level.WARNING.code, 1), (code, Level.ALARM.code, 1), (code, Level.FAULT.code, 1)]
    assert all(e["index"] == 2 for e in (warn, alarm, fault))
    assert fault["value"] == pytest.approx(4.09, abs=1e-3)
    assert (timeout["code"], timeout["level"], timeout["action"]) == (
        FAULT_CODES["MEASUREMENT_TIMEOUT"], Level.FAULT.code, 1)
    assert timeout["index"] == -1 and timeout["value"] >= 1.0  # the silence, s (float32)
    assert (cleared["action"], cleared["index"]) == (0, -1) and math.isnan(cleared["value"])
    assert State.from_code(cleared["state"]) == "FAULT"  # logged before the state moves on
    for entry, kept in zip(page.entries, faulted.fw.log.entries, strict=True):
        assert entry["t_s"] == kept.event.t_s
        assert entry["soc_pct"] == pytest.approx(kept.snapshot["soc_pct"], abs=1e-4)
        assert State.from_code(entry["state"]) == kept.snapshot["state"]


def test_fault_log_pages_from_start_for_count(faulted):
    page = faulted.ask(pm.GetFaultLog(1, 3))
    assert (page.total, page.start, len(page.entries)) == (5, 1, 3)
    assert [e["level"] for e in page.entries] == [
        Level.FAULT.code, Level.WARNING.code, Level.ALARM.code]
    assert faulted.ask(pm.GetFaultLog(1, 10)).entries[0]["action"] == 0
    assert faulted.ask(pm.GetFaultLog(4, 10)).entries[0]["level"] == Level.FAULT.code
    assert faulted.ask(pm.GetFaultLog(5, 10)).entries == ()
    assert faulted.ask(pm.GetFaultLog(1000, 10)).entries == ()
    assert faulted.ask(pm.GetFaultLog(0, 0)).entries == ()


def test_fault_log_page_is_capped_and_reports_dropped_entries(bench):
    log = bench.fw.log
    for k in range(40):
        log.record(FaultEvent(float(k), "OPEN_WIRE", FAULT_CODES["OPEN_WIRE"], "FAULT",
                              "raised" if k % 2 == 0 else "cleared", k % 4, 0.1 * k),
                   {"state": "FAULT", "soc_pct": 50.0})
    page = bench.ask(pm.GetFaultLog(0, 255))
    assert page.total == 40 and len(page.entries) == MAX_PAGE == 32
    assert [e["t_s"] for e in page.entries] == list(range(32))
    rest = bench.ask(pm.GetFaultLog(32, 255))
    assert [e["t_s"] for e in rest.entries] == list(range(32, 40))
    assert [e["index"] for e in rest.entries[:4]] == [0, 1, 2, 3]

    # A smaller log keeps the newest and counts the others as dropped.
    size = PARAM["fault_log_size"]
    bench.ask(pm.SetConfig((value(size.id, pm.ValueKind.INT, 10),)))
    page = bench.ask(pm.GetFaultLog(0, 255))
    assert (page.total, page.dropped) == (10, 30)
    assert page.entries[0]["t_s"] == 30.0


# --- parameters ---------------------------------------------------------------------------

def test_parameter_list_pages_cover_every_parameter_once(bench):
    seen = []
    start = 0
    while True:
        page = bench.ask(pm.GetParameterList(start, 255))
        assert page.total == len(PARAMS) and page.start == start
        assert len(page.entries) <= MAX_PAGE
        if not page.entries:
            break
        seen += page.entries
        start += len(page.entries)
    assert len(PARAMS) > MAX_PAGE  # so the paging was exercised
    assert [e["param_id"] for e in seen] == [p.id for p in PARAMS]
    assert len({e["param_id"] for e in seen}) == len(PARAMS)
    kinds = {"float": pm.ValueKind.FLOAT, "int": pm.ValueKind.INT, "bool": pm.ValueKind.BOOL,
             "choice": pm.ValueKind.CHOICE}
    for entry, p in zip(seen, PARAMS, strict=True):
        assert (entry["name"], entry["unit"], entry["kind"]) == (p.name, p.unit, kinds[p.kind])
        assert entry["choices"] == p.choices
    mode = next(e for e in seen if e["name"] == "balancing.mode")
    assert mode["choices"] == ("off", "voltage", "soc")


def test_get_config_reads_every_value(bench):
    ids = tuple(p.id for p in PARAMS)
    values = bench.ask(pm.GetConfig(ids)).values
    assert [v["param_id"] for v in values] == list(ids)
    for v, p in zip(values, PARAMS, strict=True):
        expected = value_of(bench.fw.cfg, p)
        assert v["value"] == expected and type(v["value"]) is type(expected), p.name


def test_get_config_with_an_unknown_id_is_refused(bench):
    detail = nack(bench.ask(pm.GetConfig((1, 0x0999))), pm.ErrorCode.UNKNOWN_PARAM)
    assert "0x0999" in detail and "0x0001" not in detail  # as SetConfig names ids


def test_get_config_with_a_repeated_id_is_a_bad_value(bench):
    # Repeats would let a 2-byte id ask for an 11-byte value hundreds of times over: an
    # answer bigger than a frame.
    pid = PARAM["limits.max_charge_a"].id
    detail = nack(bench.ask(pm.GetConfig((1, pid, 2, pid))), pm.ErrorCode.BAD_VALUE)
    assert f"0x{pid:04X}" in detail


# --- SetConfig ----------------------------------------------------------------------------

def config(b: Bench, name: str) -> object:
    return b.ask(pm.GetConfig((PARAM[name].id,))).values[0]["value"]


def test_set_config_applies_and_reads_back(bench):
    charge, mode = PARAM["limits.max_charge_a"], PARAM["balancing.mode"]
    reply = bench.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1.25),
                                    value(mode.id, pm.ValueKind.CHOICE, "soc"))))
    assert isinstance(reply, pm.ConfigValues)
    assert [(v["param_id"], v["value"]) for v in reply.values] == [
        (charge.id, 1.25), (mode.id, "soc")]
    assert bench.fw.cfg.limits.max_charge_a == 1.25
    assert bench.fw.cfg.balancing.mode == "soc"
    assert config(bench, "limits.max_charge_a") == 1.25
    assert bench.ask(pm.GetBalancing()).mode == pm.BalancingMode.SOC
    # The next change is applied over this one, not over the defaults.
    bench.ask(pm.SetConfig((value(PARAM["rest_current_a"].id, pm.ValueKind.FLOAT, 0.04),)))
    assert bench.fw.cfg.limits.max_charge_a == 1.25 and bench.fw.cfg.rest_current_a == 0.04


def test_an_int_parameter_refuses_a_float_even_an_integral_one(bench):
    """The wire kind must be the parameter's (the spec): no conversion, 50.0 included."""
    size = PARAM["fault_log_size"]
    before = bench.fw.cfg
    detail = nack(bench.ask(pm.SetConfig((value(size.id, pm.ValueKind.FLOAT, 50.0),))),
                  pm.ErrorCode.BAD_TYPE)
    assert "sent as FLOAT; this parameter is INT" in detail
    _unchanged(bench, before)


def _unchanged(b: Bench, before) -> None:
    assert b.fw.cfg is before
    assert b.device.overrides == {}


def test_set_config_is_all_or_nothing(bench):
    before = bench.fw.cfg
    charge, timeout = PARAM["limits.max_charge_a"], PARAM["measurement_timeout_s"]
    detail = nack(bench.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1.25),
                                          value(timeout.id, pm.ValueKind.FLOAT, -1.0)))),
                  pm.ErrorCode.OUT_OF_RANGE)
    assert "measurement_timeout_s" in detail and "0x0001" in detail
    _unchanged(bench, before)
    assert config(bench, "limits.max_charge_a") == before.limits.max_charge_a


def test_a_charge_limit_above_what_the_cells_allow_is_out_of_range(bench):
    before = bench.fw.cfg
    charge = PARAM["limits.max_charge_a"]
    detail = nack(bench.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1e6),))),
                  pm.ErrorCode.OUT_OF_RANGE)
    assert "limits.max_charge_a" in detail
    _unchanged(bench, before)


@pytest.mark.parametrize(("name", "kind", "bad", "code"), [
    ("limits.max_charge_a", pm.ValueKind.CHOICE, "fast", "BAD_TYPE"),  # a text for a float
    ("fault_log_size", pm.ValueKind.FLOAT, 2.5, "BAD_TYPE"),  # a fraction for an int
    ("estimation.learn_offset_when_open", pm.ValueKind.INT, 1, "BAD_TYPE"),  # int for bool
    ("balancing.mode", pm.ValueKind.CHOICE, "always", "BAD_VALUE"),  # not one of its words
    ("limits.max_charge_a", pm.ValueKind.FLOAT, math.nan, "OUT_OF_RANGE"),
])
def test_a_value_of_the_wrong_type_is_refused(bench, name, kind, bad, code):
    before = bench.fw.cfg
    ok = value(PARAM["rest_current_a"].id, pm.ValueKind.FLOAT, 0.04)
    detail = nack(bench.ask(pm.SetConfig((ok, value(PARAM[name].id, kind, bad)))),
                  pm.ErrorCode[code])
    assert name in detail
    _unchanged(bench, before)


def test_a_parameter_given_twice_is_a_bad_value(bench):
    before = bench.fw.cfg
    charge = PARAM["limits.max_charge_a"]
    detail = nack(bench.ask(pm.SetConfig((value(charge.id, pm.ValueKind.FLOAT, 1.0),
                                          value(charge.id, pm.ValueKind.FLOAT, 1.1)))),
                  pm.ErrorCode.BAD_VALUE)
    assert "limits.max_charge_a" in detail
    _unchanged(bench, before)


def test_an_unknown_parameter_is_refused(bench):
    before = bench.fw.cfg
    detail = nack(bench.ask(pm.SetConfig((
        value(PARAM["limits.max_charge_a"].id, pm.ValueKind.FLOAT, 1.0),
        value(0x0999, pm.ValueKind.FLOAT, 1.0)))), pm.ErrorCode.UNKNOWN_PARAM)
    assert "0x0999" in detail
    _unchanged(bench, before)


# --- commands -----------------------------------------------------------------------------

def test_commands_reach_the_firmware(bench):
    ack = pm.Ack(TYPE[pm.CommandRequest])
    assert pm.same(bench.ask(pm.CommandRequest(pm.Command.STANDBY, 0)), ack)
    assert bench.fw.requested == "standby"
    bench.run(0.5)
    assert bench.fw.state == "STANDBY" and bench.ask(pm.GetStatus()).contactors == 0

    assert pm.same(bench.ask(pm.CommandRequest(pm.Command.STORAGE, 0)), ack)
    assert bench.fw.requested == "storage"
    bench.run(0.5)
    assert State.from_code(bench.ask(pm.GetStatus()).state) == "STORAGE"

    assert pm.same(bench.ask(pm.CommandRequest(pm.Command.RUN, 0)), ack)
    assert bench.fw.requested == "run"
    bench.run(4.0)  # closing again waits for the weld check after the last opening
    assert bench.fw.state == "RUN"

    bench.run(3.0, OVERVOLTAGE)
    assert bench.fw.state == "FAULT"
    bench.run(3.0)  # the over-voltage gone; the fault stays latched
    assert bench.fw.state == "FAULT" and not bench.fw.clear_requested
    assert pm.same(bench.ask(pm.CommandRequest(pm.Command.CLEAR_FAULTS, 0)), ack)
    assert bench.fw.clear_requested and bench.fw.requested == "run"
    bench.run(1.0)
    assert bench.fw.state != "FAULT" and bench.act.fault_bitmap == 0


@pytest.mark.parametrize("mode", list(pm.BalancingMode))
def test_balancing_mode_command_sets_the_configuration(bench, mode):
    before = bench.fw.requested
    reply = bench.ask(pm.CommandRequest(pm.Command.BALANCING_MODE, mode))
    assert pm.same(reply, pm.Ack(TYPE[pm.CommandRequest]))
    assert bench.fw.cfg.balancing.mode == mode.name.lower()
    assert bench.ask(pm.GetBalancing()).mode == mode
    assert config(bench, "balancing.mode") == mode.name.lower()
    assert bench.fw.requested == before


@pytest.mark.parametrize(("command", "argument"), [
    (0, 0), (9, 0), (255, 0),  # no such command
    (pm.Command.BALANCING_MODE, 3), (pm.Command.BALANCING_MODE, 255),  # no such mode
])
def test_a_bad_command_or_mode_changes_nothing(bench, command, argument):
    cfg, requested = bench.fw.cfg, bench.fw.requested
    detail = nack(bench.ask(pm.CommandRequest(command, argument)), pm.ErrorCode.BAD_VALUE)
    assert "allowed" in detail
    assert bench.fw.cfg is cfg and bench.fw.requested == requested
    assert not bench.fw.clear_requested


@pytest.mark.parametrize("command", [pm.Command.RUN, pm.Command.STANDBY, pm.Command.RESET,
                                     pm.Command.FACTORY_DEFAULTS])
def test_an_argument_for_a_command_that_takes_none_is_refused(bench, command):
    """The spec: BALANCING_MODE takes an argument, the others 0. A stray one is refused
    (a host sending one means something the device would not do) and nothing happens."""
    resets = []
    bench.device.on_reset = lambda: resets.append(1)
    cfg, requested = bench.fw.cfg, bench.fw.requested
    detail = nack(bench.ask(pm.CommandRequest(command, 1)), pm.ErrorCode.BAD_VALUE)
    assert detail == (f"`argument` 1 for {command.name}: it takes none (0); only "
                      "BALANCING_MODE takes one")
    assert bench.fw.cfg is cfg and bench.fw.requested == requested and resets == []


# --- telemetry ----------------------------------------------------------------------------

def subscribe(*subs: tuple[type, int]) -> pm.Subscribe:
    return pm.Subscribe(tuple({"msg_type": TYPE[cls], "period_ms": ms} for cls, ms in subs))


def telemetry(b: Bench, t0_s: float, t1_s: float, step_s: float = 0.01) -> list:
    """Everything sent from t0 to t1 (excluded), polled every step_s."""
    out = []
    for k in range(round((t1_s - t0_s) / step_s)):
        out += b.device.telemetry_due(t0_s + k * step_s)
    return out


def kinds(msgs: list) -> dict[type, int]:
    counts: dict[type, int] = {}
    for m in msgs:
        counts[type(m)] = counts.get(type(m), 0) + 1
    return counts


def test_telemetry_comes_at_each_subscribed_period(bench):
    assert bench.device.telemetry_due(0.0) == []  # nothing until subscribed
    reply = bench.ask(subscribe((pm.Status, 100), (pm.CellVoltages, 250),
                                (pm.BalancingState, 10)), now_s=10.0)
    assert pm.same(reply, pm.Ack(TYPE[pm.Subscribe]))
    sent = telemetry(bench, 10.0, 11.0)
    assert kinds(sent) == {pm.Status: 10, pm.CellVoltages: 4, pm.BalancingState: 100}
    for msg in sent:
        assert encode(wire(msg, flags=Flags.EVENT), 1, Flags.EVENT) == encode(msg, 1, Flags.EVENT)
    status = [m for m in sent if isinstance(m, pm.Status)]
    assert [round(s.time_s, 6) for s in status] == [
        round(10.0 + 0.1 * k, 6) for k in range(10)]


def test_every_telemetry_type_can_be_subscribed(bench):
    allowed = (pm.Status, pm.CellVoltages, pm.Temperatures, pm.CellSoc, pm.BalancingState)
    bench.ask(subscribe(*((cls, 200) for cls in allowed)), now_s=0.0)
    assert kinds(telemetry(bench, 0.0, 1.0)) == dict.fromkeys(allowed, 5)


def test_a_new_subscription_replaces_the_old_one_and_an_empty_one_stops(bench):
    bench.ask(subscribe((pm.Status, 100)), now_s=0.0)
    assert kinds(telemetry(bench, 0.0, 1.0)) == {pm.Status: 10}
    bench.ask(subscribe((pm.Temperatures, 500)), now_s=1.0)
    assert kinds(telemetry(bench, 1.0, 2.0)) == {pm.Temperatures: 2}
    bench.ask(pm.Subscribe(()), now_s=2.0)
    assert telemetry(bench, 2.0, 3.0) == []


def test_telemetry_after_a_stall_does_not_burst(bench):
    bench.ask(subscribe((pm.Status, 100)), now_s=0.0)
    assert len(bench.device.telemetry_due(0.0)) == 1
    assert len(bench.device.telemetry_due(5.0)) == 1  # not 50 to catch up
    # and the next one a period later, not at the next poll
    assert kinds(telemetry(bench, 5.01, 6.0)) == {pm.Status: 9}


@pytest.mark.parametrize(("period_ms", "poll_s", "expected"), [
    (10, 0.1, 30),  # a period shorter than the polls: one a poll, never two
    (150, 0.1, 20),  # not a multiple of the polls: the average rate holds
    (100, 0.1, 30),  # the runtime's usual case: one a tick
])
def test_telemetry_polled_coarser_than_its_period(bench, period_ms, poll_s, expected):
    bench.ask(subscribe((pm.Status, period_ms)), now_s=0.0)
    per_poll = [len(bench.device.telemetry_due(k * poll_s)) for k in range(round(3.0 / poll_s))]
    assert sum(per_poll) == expected and max(per_poll) == 1


@pytest.mark.parametrize("cls", [pm.DeviceInfo, pm.FaultLogPage, pm.ConfigValues, pm.GetStatus,
                                 pm.ActuationFrame, pm.Nack])
def test_only_telemetry_types_can_be_subscribed(bench, cls):
    bench.ask(subscribe((pm.Status, 100)), now_s=0.0)
    detail = nack(bench.ask(subscribe((pm.CellSoc, 100), (cls, 100))), pm.ErrorCode.BAD_VALUE)
    for allowed in ("Status", "CellVoltages", "Temperatures", "CellSoc", "BalancingState"):
        assert allowed in detail
    assert kinds(telemetry(bench, 0.0, 1.0)) == {pm.Status: 10}  # the old one still holds


def test_an_unknown_type_cannot_be_subscribed(bench):
    reply = bench.ask(pm.Subscribe(({"msg_type": 0x99, "period_ms": 100},)))
    assert "0x99" in nack(reply, pm.ErrorCode.BAD_VALUE)


def test_a_period_below_10_ms_is_out_of_range(bench):
    bench.ask(subscribe((pm.Status, 100)), now_s=0.0)
    detail = nack(bench.ask(subscribe((pm.Status, 9))), pm.ErrorCode.OUT_OF_RANGE)
    assert "10" in detail
    nack(bench.ask(subscribe((pm.CellSoc, 0))), pm.ErrorCode.OUT_OF_RANGE)
    assert kinds(telemetry(bench, 0.0, 1.0)) == {pm.Status: 10}
    assert isinstance(bench.ask(subscribe((pm.Status, 10))), pm.Ack)


# --- time, injection, and what is not a request ---------------------------------------------

def test_time_sync_echoes_the_host_time_with_the_device_time(bench):
    reply = bench.ask(pm.TimeSync(1_700_000_000.125), now_s=42.5)
    assert pm.same(reply, pm.TimeInfo(1_700_000_000.125, 42.5))


def test_inject_without_a_simulated_pack_is_not_in_this_mode(bench):
    nack(bench.ask(pm.Inject("1:open-wire:cell=1")), pm.ErrorCode.NOT_IN_THIS_MODE)


def test_inject_goes_to_the_callback_with_the_time():
    calls = []
    b = Bench(inject=lambda spec, now_s: calls.append((spec, now_s)))
    reply = b.ask(pm.Inject("2:open-wire:cell=1"), now_s=7.5)
    assert pm.same(reply, pm.Ack(TYPE[pm.Inject]))
    assert calls == [("2:open-wire:cell=1", 7.5)]


def test_a_bad_injection_is_a_bad_value_naming_its_problems():
    def refuse(spec, now_s):
        raise InputError("--inject", ["kind = 'melt': must be one of open-wire, ...",
                                      "cell = 9: must be within [0, 3]"])

    b = Bench(inject=refuse)
    detail = nack(b.ask(pm.Inject("0:melt:cell=9")), pm.ErrorCode.BAD_VALUE)
    assert "kind = 'melt'" in detail and "cell = 9" in detail


NOT_REQUESTS = {
    pm.DeviceInfo: pm.DeviceInfo(1, "x", "na-nfm", 0, 4, 1, 2, 1.5, 0),
    pm.Status: pm.Status(0.0, 1, 0, 0, *[0.0] * 8, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, 0, 0),
    pm.CellVoltages: pm.CellVoltages(np.ones(4, np.float32)),
    pm.Temperatures: pm.Temperatures(np.ones(2, np.float32)),
    pm.CellSoc: pm.CellSoc(np.ones(4, np.float32)),
    pm.BalancingState: pm.BalancingState(1, np.zeros(4, bool)),
    pm.FaultLogPage: pm.FaultLogPage(0, 0, 0, ()),
    pm.ParameterList: pm.ParameterList(0, 0, ()),
    pm.ConfigValues: pm.ConfigValues(()),
    pm.TimeInfo: pm.TimeInfo(1.0, 2.0),
    pm.Ack: pm.Ack(1),
    pm.Nack: pm.Nack(1, 1, "x"),
    pm.MeasurementFrame: pm.MeasurementFrame(1, 0.0, 0.0, 14.0, 0, np.full(4, 3.5, np.float32),
                                             np.full(2, 25.0, np.float32)),
    pm.ActuationFrame: pm.ActuationFrame(1, 0.0, 1, 0, 0, 0.0, 0.0, 50.0, np.zeros(4, bool)),
    pm.CounterPage: pm.CounterPage(0, 0, ()),
    pm.CellHealthPage: pm.CellHealthPage(0, 0, ()),
    pm.ConfigLogPage: pm.ConfigLogPage(0, 0, ()),
    pm.FaultEvent: pm.FaultEvent(0, 0, 0.0, math.nan, 0, 1, 1, -1, math.nan),
}


def test_a_response_or_event_sent_as_a_request_is_not_a_request(bench):
    others = {mt.cls for mt in pm.REGISTRY.values() if mt.flags != Flags.REQUEST}
    assert others == set(NOT_REQUESTS)
    cfg, requested = bench.fw.cfg, bench.fw.requested
    last_s = bench.fw.last_s
    for cls, msg in NOT_REQUESTS.items():
        detail = nack(bench.ask(msg), pm.ErrorCode.NOT_A_REQUEST)
        assert cls.__name__ in detail
    assert bench.fw.cfg is cfg and bench.fw.requested == requested
    assert bench.fw.last_s == last_s  # a measurement handed to the Device is not a step
