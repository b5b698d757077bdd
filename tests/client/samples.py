"""A valid request of every request type in `protocol.messages.REGISTRY`, and what the
spec says its answer holds.

A request type whose fields are all in SAMPLE_FIELDS (none, or a page's `start` and
`count`) needs nothing here: a new one is sampled as it is registered. Any other needs a
case in CASES, and `test_every_request_type_has_a_sample` fails until it has one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from protocol import messages as pm
from protocol.framing import REVISIONS, Flags
from protocol.messages import REGISTRY, MessageType
from protocol.spec import ANSWERS
from tests.client.emulators import SERIES, STATE, Emulator

# Sample values by field name, for request types that need no case of their own.
SAMPLE_FIELDS: dict[str, object] = {"start": 0, "count": 255, "host_time_s": 12345.5}
INJECTION = "3600:cooling-failure"  # due long after the emulator's --duration: harmless
PAGE_FIELDS = {"total", "start", "entries"}


def _config_write(emulator: Emulator) -> pm.SetConfig:
    """The present value of a parameter, written back: valid whatever it is."""
    param = emulator.param("limits.max_charge_a")
    answer = emulator.client.ask(pm.GetConfig((param["param_id"],)))
    return pm.SetConfig(answer.values)


CASES: dict[str, Callable[[Emulator], object]] = {
    "GetConfig": lambda e: pm.GetConfig(tuple(p["param_id"] for p in e.params[:3])),
    "SetConfig": _config_write,
    "CommandRequest": lambda _e: pm.CommandRequest(int(pm.Command.STANDBY), 0),
    "Subscribe": lambda _e: pm.Subscribe(()),  # stops telemetry: nothing else changes
    "Inject": lambda _e: pm.Inject(INJECTION),
    "SetTime": lambda _e: pm.SetTime(time.time()),
}


def float_write(param: dict, value: float) -> pm.SetConfig:
    """A SetConfig of one FLOAT value."""
    return pm.SetConfig(({"param_id": param["param_id"], "kind": int(pm.ValueKind.FLOAT),
                          "value": value},))


def request_types() -> list[MessageType]:
    return [mt for _, mt in sorted(REGISTRY.items()) if mt.flags == Flags.REQUEST]


def sample(mt: MessageType, emulator: Emulator) -> object:
    """A valid request of type `mt`; LookupError when it needs a case in CASES."""
    if mt.name in CASES:
        return CASES[mt.name](emulator)
    names = [f.name for f in dataclasses.fields(mt.cls)]
    missing = [n for n in names if n not in SAMPLE_FIELDS]
    if missing:
        raise LookupError(f"{mt.name}: no sample value for {', '.join(missing)}; add a case "
                          "to tests/client/samples.py CASES")
    return mt.cls(**{n: SAMPLE_FIELDS[n] for n in names})


def answer_type(mt: MessageType) -> MessageType:
    """The response the spec lists for a request type (Messages: Pairing)."""
    return next(r for r in REGISTRY.values() if r.name == ANSWERS[mt.name])


# --- what each answer holds, as the spec says it ---------------------------------------------

def _device_info(info: pm.DeviceInfo, e: Emulator, revision: int, _req: object) -> None:
    assert info.protocol_version == revision
    assert (info.n_series, info.n_temp_sensors) == (SERIES, e.info.n_temp_sensors)
    assert info.mode == pm.Mode.SIM and info.capabilities & pm.Capability.INJECT
    if revision > min(REVISIONS):
        assert set(info.protocol_revisions) == set(REVISIONS)
        assert list(info.message_types) == [t for t in sorted(REGISTRY)
                                            if pm.in_revision(t, revision)]
        assert info.max_page_entries >= 1 and info.pack_id and info.firmware_build


def _status(status: pm.Status, _e: Emulator, revision: int, _req: object) -> None:
    assert status.state in STATE.values()
    assert 0.0 <= status.soc_pct <= 100.0 and status.time_s > 0
    assert 0 <= status.cell_v_min_index < SERIES and 0 <= status.cell_v_max_index < SERIES
    assert status.cell_v_min <= status.cell_v_max
    if revision > min(REVISIONS):
        assert status.store & pm.STORE_BITS["kept"]  # the emulators here keep a store
        assert math.isfinite(status.bus_voltage_v)
        assert status.charge_voltage_limit_v > status.discharge_voltage_limit_v > 0  # known
        levels = status.warning_bitmap | status.alarm_bitmap | status.fault_level_bitmap
        assert levels == status.fault_bitmap  # "any level" is the union of the levels


def _per_cell(answer: object, _e: Emulator, _r: int, _req: object) -> None:
    values = answer.cell_voltage_v if isinstance(answer, pm.CellVoltages) else answer.soc_pct
    assert len(values) == SERIES and all(v > 0 for v in values)


def _temperatures(answer: pm.Temperatures, e: Emulator, _r: int, _req: object) -> None:
    assert len(answer.temperature_c) == e.info.n_temp_sensors
    assert all(-40 < t < 80 for t in answer.temperature_c)


def _balancing(answer: pm.BalancingState, _e: Emulator, _r: int, _req: object) -> None:
    assert answer.mode in set(pm.BalancingMode) and len(answer.mask) == SERIES


def _config_values(answer: pm.ConfigValues, e: Emulator, _r: int, req: object) -> None:
    asked = (req.param_ids if isinstance(req, pm.GetConfig)
             else tuple(v["param_id"] for v in req.values))
    assert tuple(v["param_id"] for v in answer.values) == asked
    kinds = {p["param_id"]: p["kind"] for p in e.params}
    assert all(v["kind"] == kinds[v["param_id"]] for v in answer.values)


def _time_info(answer: pm.TimeInfo, _e: Emulator, _r: int, req: pm.TimeSync) -> None:
    assert answer.host_time_s == req.host_time_s and answer.device_time_s > 0


def _ack(answer: pm.Ack, _e: Emulator, _r: int, req: object) -> None:
    assert answer.request_type == pm.BY_CLASS[type(req)].type_id


def _page(answer: object, e: Emulator, _r: int, req: object) -> None:
    """Any paged answer: it starts where asked, holds at most what was asked and what a
    page holds, and never more than there are."""
    assert answer.start == req.start
    assert len(answer.entries) <= min(req.count, e.info.max_page_entries)
    assert len(answer.entries) <= answer.total - answer.start or not answer.entries


def _cell_health(answer: pm.CellHealthPage, e: Emulator, r: int, req: object) -> None:
    _page(answer, e, r, req)
    assert answer.total == SERIES and len(answer.entries) == SERIES
    assert all(0 < c["soh_pct"] <= 150 and c["capacity_ah"] > 0 for c in answer.entries)


CHECKS: dict[str, Callable[[object, Emulator, int, object], None]] = {
    "DeviceInfo": _device_info, "Status": _status, "CellVoltages": _per_cell,
    "CellSoc": _per_cell, "Temperatures": _temperatures, "BalancingState": _balancing,
    "ConfigValues": _config_values, "TimeInfo": _time_info, "Ack": _ack,
    "CellHealthPage": _cell_health,
}


def check_answer(answer: object, emulator: Emulator, revision: int, request: object) -> None:
    """The spec's promises about an answer's content: its own check, else the paged one
    when it is a page; a new answer type is checked as a page or for its type alone."""
    name = type(answer).__name__
    if name in CHECKS:
        CHECKS[name](answer, emulator, revision, request)
    elif {f.name for f in dataclasses.fields(answer)} >= PAGE_FIELDS:
        _page(answer, emulator, revision, request)
