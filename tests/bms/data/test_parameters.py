"""Run-time parameters: stable ids for every key the TOML file can set, changes checked
all-or-nothing by the file's rules, and a firmware that takes a new configuration without
losing its state."""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib

import numpy as np
import pytest

from bms.core.fault_log import FaultLog
from bms.core.protection import Protection
from bms.core.signals import FaultEvent, Measurement
from bms.data.config import BalancingMode, BalancingWhen, default_config, inverter_rows
from bms.data.config_toml import config_to_toml
from bms.data.parameters import ParameterError, apply_changes, catalogue, value_of
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.pack import SpreadSpec
from tests.bms.core.test_firmware import TICK_S, Bench
from tests.bms.core.test_protection import drive, held, row

NFM = PRESETS["na-nfm"]  # cells 1.5..4.1 V, 1C charge, 3C discharge
N, AH = 16, 100.0
CAT = catalogue(default_config(NFM, N, AH))
BY_NAME = {p.name: p for p in CAT}

# Pinned: a renumbering breaks every host's table, so it must break a test first.
PINNED = {
    0x0001: "measurement_timeout_s",
    0x0003: "fault_log_size",
    0x0101: "limits.max_charge_a",
    0x020D: "estimation.learn_offset_when_open",
    0x0304: "precharge.retries",
    0x0501: "balancing.mode",
    0x0505: "balancing.when",
    0x0601: "open_wire.test_every_s",
    0x0603: "open_wire.fallback",
    0x0701: "can.keepalive_timeout_s",
    0x0702: "can.keepalive_action",
    0x1000: "protection.CELL_OVERVOLTAGE.WARNING.threshold",
    0x100B: "protection.CELL_OVERVOLTAGE.FAULT.release_s",
    0x1074: "protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_min.threshold",
    0x1097: "protection.CURRENT_SENSOR_FAULT.ALARM.idle_current_a.release_s",
}


def pid(name: str) -> int:
    return BY_NAME[name].id


def change(changes: dict[str, object], overrides: dict | None = None):
    return apply_changes({} if overrides is None else overrides,
                         [(pid(name), value) for name, value in changes.items()], NFM, N, AH)


def refused(changes: list[tuple[int, object]], overrides: dict | None = None,
            sent_kinds: list[str] | None = None) -> ParameterError:
    with pytest.raises(ParameterError) as failed:
        apply_changes({} if overrides is None else overrides, changes, NFM, N, AH, sent_kinds)
    return failed.value


def leaves(table: dict, prefix: str = "") -> dict[str, object]:
    """Every key = value of a TOML document, by dotted path."""
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        out.update(leaves(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


# --- the catalogue ---------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize(("n_series", "pack_ah"), [(16, 1.5), (1, 0.01), (416, 300.0)])
def test_ids_are_unique_u16_and_the_same_for_every_pack(preset, n_series, pack_ah):
    cat = catalogue(default_config(PRESETS[preset], n_series, pack_ah))
    ids = [p.id for p in cat]
    assert len(set(ids)) == len(ids)
    assert all(0 <= i <= 0xFFFF for i in ids)
    assert [(p.id, p.name) for p in cat] == [(p.id, p.name) for p in CAT]


def test_pinned_ids():
    by_id = {p.id: p.name for p in CAT}
    assert {i: by_id.get(i) for i in PINNED} == PINNED


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_catalogue_is_exactly_the_keys_the_file_writes_with_their_values(preset):
    chem = PRESETS[preset]
    cfg = default_config(chem, N, AH)
    written = leaves(tomllib.loads(config_to_toml(cfg, chem)))
    cat = catalogue(cfg)
    assert sorted(p.name for p in cat) == sorted(written)
    for p in cat:
        assert value_of(cfg, p) == written[p.name], p.name


def test_kinds_choices_and_units():
    assert [(p.kind, p.choices) for p in (BY_NAME["balancing.mode"], BY_NAME["balancing.when"])
            ] == [("choice", tuple(BalancingMode)), ("choice", tuple(BalancingWhen))]
    assert BY_NAME["estimation.learn_offset_when_open"].kind == "bool"
    assert BY_NAME["fault_log_size"].kind == BY_NAME["precharge.retries"].kind == "int"
    assert BY_NAME["limits.max_charge_a"].kind == "float"
    assert BY_NAME["limits.max_charge_a"].unit == "A"
    assert BY_NAME["balancing.start_mv"].unit == "mV"
    assert BY_NAME["protection.CELL_OVERVOLTAGE.FAULT.threshold"].unit == "V"
    assert BY_NAME["protection.CHARGE_OVERTEMP.ALARM.release"].unit == "°C"
    assert BY_NAME["protection.CELL_OVERVOLTAGE.FAULT.debounce_s"].unit == "s"
    assert all(p.kind == "float" for p in CAT if p.name.startswith("protection."))
    assert all(p.unit for p in CAT if p.kind in ("float", "int")
               and p.name.split(".")[-1] not in ("threshold", "release"))


# --- changes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("limits.max_charge_a", 40, 40.0),  # an int for a float
    ("limits.max_charge_a", 42.5, 42.5),
    ("precharge.retries", 4, 4),
    ("precharge.retries", 5.0, 5),  # an integral float for an int
    ("estimation.learn_offset_when_open", False, False),
    ("balancing.mode", "soc", "soc"),
    ("protection.CELL_OVERVOLTAGE.FAULT.threshold", 4.06, 4.06),
    ("protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_min.debounce_s", 0.2, 0.2),
])
def test_a_valid_value_is_set_and_reads_back(name, value, expected):
    cfg, overrides = change({name: value})
    got = value_of(cfg, BY_NAME[name])
    assert got == expected and type(got) is type(expected)
    node = overrides
    for part in name.split("."):
        node = node[part]
    assert node == expected and type(node) is type(expected)
    others = [p for p in CAT if p.name != name]
    default = default_config(NFM, N, AH)
    assert [value_of(cfg, p) for p in others] == [value_of(default, p) for p in others]


def test_changes_merge_into_the_overrides_in_effect_without_changing_them():
    _, first = change({"limits.max_charge_a": 40.0, "balancing.stop_mv": 3.0})
    kept = copy.deepcopy(first)
    cfg, second = change({"limits.max_discharge_a": 100.0}, first)
    assert first == kept
    assert second == {"limits": {"max_charge_a": 40.0, "max_discharge_a": 100.0},
                      "balancing": {"stop_mv": 3.0}}
    assert (cfg.limits.max_charge_a, cfg.limits.max_discharge_a, cfg.balancing.stop_mv) == (
        40.0, 100.0, 3.0)


def test_the_merged_overrides_are_checked_together():
    # stop_mv 8 was fine under the default start_mv 10; start_mv 7 then is not.
    _, overrides = change({"balancing.stop_mv": 8.0})
    err = refused([(pid("balancing.start_mv"), 7.0)], overrides)
    assert err.code == "OUT_OF_RANGE"
    assert err.problems == ["balancing.stop_mv (id 0x0503) = 8.0: must be below "
                            "balancing.start_mv (7)"]


def test_one_bad_change_applies_none_and_names_only_the_bad_one():
    overrides = {"limits": {"max_charge_a": 40.0}}
    kept = copy.deepcopy(overrides)
    err = refused([(pid("balancing.start_mv"), 20.0), (pid("limits.max_charge_a"), 500.0)],
                  overrides)
    assert overrides == kept
    assert err.code == "OUT_OF_RANGE"
    assert err.problems == [
        "limits.max_charge_a (id 0x0101) = 500.0: must be within [0, 100] "
        "(the chemistry's max charge 1 C x 100 Ah)"]
    assert "limits.max_charge_a (id 0x0101)" in str(err)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(("name", "value", "code", "allowed"), [
    ("precharge.retries", 2.5, "BAD_TYPE", "must be an integer"),
    ("fault_log_size", "100", "BAD_TYPE", "must be an integer"),
    ("balancing.mode", "max", "BAD_VALUE", "must be one of ['off', 'voltage', 'soc']"),
    ("balancing.when", 1, "BAD_TYPE", "must be one of ['rest', 'charge', 'always']"),
    ("limits.max_charge_a", True, "BAD_TYPE", "must be a number"),
    ("limits.max_charge_a", "40", "BAD_TYPE", "must be a number"),
    ("limits.max_charge_a", math.nan, "OUT_OF_RANGE", "must be a finite number"),
    ("protection.OPEN_WIRE.FAULT.threshold", -math.inf, "OUT_OF_RANGE",
     "must be a finite number"),
    ("estimation.learn_offset_when_open", 1, "BAD_TYPE", "must be true or false"),
])
def test_a_value_the_parameter_cannot_take_gets_the_code_of_its_cause(name, value, code,
                                                                       allowed):
    """Another type: BAD_TYPE; a word that is not one of a choice's: BAD_VALUE; a number no
    parameter allows (NaN, infinite): OUT_OF_RANGE."""
    err = refused([(pid(name), value)])
    assert err.code == code
    assert err.problems == [f"{name} (id 0x{pid(name):04X}) = {value!r}: {allowed}"]


@pytest.mark.parametrize(("name", "value", "sent", "kind"), [
    ("limits.max_charge_a", 1, "int", "FLOAT"),
    ("fault_log_size", 500.0, "float", "INT"),
    ("estimation.learn_offset_when_open", True, "int", "BOOL"),
])
def test_a_value_sent_as_another_kind_is_bad_type_where_the_sender_says_the_kind(
        name, value, sent, kind):
    """The binary protocol's values carry their kind: it must be the parameter's. TOML and
    JSON values carry none, and 1 for a float parameter is fine there."""
    err = refused([(pid(name), value)], sent_kinds=[sent])
    assert err.code == "BAD_TYPE"
    assert err.problems == [f"{name} (id 0x{pid(name):04X}) = {value!r}: sent as "
                            f"{sent.upper()}; this parameter is {kind}"]
    if kind != "BOOL":
        apply_changes({}, [(pid(name), value)], NFM, N, AH)  # no kind: taken


def test_an_unknown_id_is_unknown_param():
    err = refused([(0x0FFF, 1.0), (pid("limits.max_charge_a"), 40.0)])
    assert err.code == "UNKNOWN_PARAM"
    assert err.problems == ["id 0x0FFF = 1.0: no such parameter"]


def test_an_id_given_twice_is_bad_value():
    err = refused([(pid("limits.max_charge_a"), 40.0), (pid("limits.max_charge_a"), 50.0)])
    assert err.code == "BAD_VALUE"
    assert err.problems == ["limits.max_charge_a (id 0x0101) = 50.0: given more than once in "
                            "one request; set each parameter once"]


@pytest.mark.parametrize(("changes", "where"), [
    ({"limits.max_charge_a": 101.0}, "limits.max_charge_a (id 0x0101) = 101.0: must be within"),
    ({"protection.CELL_OVERVOLTAGE.FAULT.threshold": 4.2},
     "protection.CELL_OVERVOLTAGE.FAULT.threshold (id 0x1008) = 4.2: must be within [1.5, 4.1]"),
    ({"protection.CELL_OVERVOLTAGE.FAULT.release": 4.09},
     "protection.CELL_OVERVOLTAGE.FAULT.release (id 0x1009) = 4.09: must be below the "
     "threshold"),
    ({"protection.SHORT_CIRCUIT.FAULT.debounce_s": 0.5}, "must be at most the default 0"),
    ({"balancing.stop_mv": 12.0}, "balancing.stop_mv (id 0x0503) = 12.0: must be below"),
    ({"fault_log_size": 0}, "fault_log_size (id 0x0003) = 0: must be within [1, 65535]"),
    ({"fault_log_size": 65536}, "fault_log_size (id 0x0003) = 65536: must be within"),
])
def test_what_a_file_may_not_set_is_out_of_range(changes, where):
    with pytest.raises(ParameterError) as failed:
        change(changes)
    assert failed.value.code == "OUT_OF_RANGE"
    (problem,) = failed.value.problems
    assert where in problem


def test_ids_and_types_are_checked_for_every_change_before_any_range():
    err = refused([(pid("limits.max_charge_a"), 1e6), (pid("precharge.retries"), 1.5),
                   (0xFFFF, 0.0)])
    assert err.code == "UNKNOWN_PARAM"  # the most basic problem gives the code
    assert err.problems == ["precharge.retries (id 0x0304) = 1.5: must be an integer",
                            "id 0xFFFF = 0.0: no such parameter"]


# --- the firmware takes a new configuration and keeps its state -----------------------------


def reconfigure(bench: Bench, changes: dict[str, object]) -> None:
    cfg, _ = apply_changes({}, [(pid(name), v) for name, v in changes.items()],
                           bench.fw.chem, bench.fw.n_series, bench.pack.capacity_ah)
    bench.fw.reconfigure(cfg)


def test_a_lowered_threshold_acts_on_the_next_step_and_a_raised_fault_stays():
    bench = Bench()
    bench.run(10.0)
    m = bench.pack.measure()
    # Cells at 4.02 V: above a full cell's 4.0 V, below the default WARNING (4.027 V).
    hot = Measurement(np.full_like(m.cell_voltage_v, 4.02), np.full_like(m.temperature_c, 90.0),
                      m.current_a, m.bus_voltage_v, m.contactors)
    for _ in range(60):
        bench.fw.step(hot, bench.now_s)
        bench.k += 1
    fw = bench.fw
    overtemp = [i for i, r in enumerate(fw.protection.rows)
                if (r.fault, r.level) == ("DISCHARGE_OVERTEMP", "FAULT")]
    assert fw.state == "FAULT" and fw.protection.active[overtemp].all()
    over = [i for i, r in enumerate(fw.protection.rows) if r.fault == "CELL_OVERVOLTAGE"]
    assert not fw.protection.active[over].any()
    reconfigure(bench, {"protection.CELL_OVERVOLTAGE.WARNING.threshold": 4.01,
                        "protection.CELL_OVERVOLTAGE.WARNING.release": 3.9,
                        "protection.CELL_OVERVOLTAGE.WARNING.debounce_s": 0.0,
                        "protection.DISCHARGE_OVERTEMP.FAULT.threshold": 58.0})
    act = fw.step(hot, bench.now_s)
    assert [(e.name, e.level, e.action) for e in act.events] == [
        ("CELL_OVERVOLTAGE", "WARNING", "raised")]
    assert fw.protection.active[overtemp].all() and act.state == "FAULT"
    assert fw.protection.rows[overtemp[0]].threshold == 58.0


def test_a_retune_keeps_a_debounce_under_way():
    protection = Protection((row(threshold=4.1, debounce_s=2.0),))
    values = held(2.0 + TICK_S)
    assert drive(protection, values[:15]) == []  # 1 s into the 2 s debounce
    protection.retune((row(threshold=4.2, debounce_s=2.0),))
    assert drive(protection, values[15:], start_s=1.5) == [(2.5, "raised")]


def test_a_configuration_the_firmware_cannot_take_changes_nothing():
    bench = Bench()
    bench.run(1.0)
    before = bench.fw.cfg
    cfg, _ = apply_changes({}, [(pid("protection.OPEN_WIRE.FAULT.threshold"), 0.05)],
                           bench.fw.chem, 4, bench.pack.capacity_ah)
    other_rows = dataclasses.replace(cfg, protection=cfg.protection[:-1])
    bad_balancing = dataclasses.replace(
        cfg, balancing=dataclasses.replace(cfg.balancing, mode="fast"))
    with pytest.raises(ValueError, match="same protection rows"):
        bench.fw.reconfigure(other_rows)
    with pytest.raises(InputError, match="balancing.mode"):
        bench.fw.reconfigure(bad_balancing)
    assert bench.fw.cfg is before
    assert bench.fw.protection.rows == before.protection + inverter_rows(before.can)


def test_a_lowered_max_charge_lowers_the_published_limit_on_the_next_step():
    bench = Bench()
    act = bench.run(30.0)
    max_a = bench.fw.cfg.limits.max_charge_a
    assert act.state == "RUN" and act.charge_limit_a > 0.5 * max_a
    reconfigure(bench, {"limits.max_charge_a": 0.25 * max_a})
    act = bench.tick()
    assert act.state == "RUN"
    assert 0.0 < act.charge_limit_a <= 0.25 * max_a
    assert act.discharge_limit_a > 0.5 * bench.fw.cfg.limits.max_discharge_a


def test_a_lowered_maximum_binds_on_a_step_without_a_measurement():
    """A step with no measurement (a silent rig, up to the timeout) leaves the limits as
    they were; above a maximum lowered since, they were published over it."""
    bench = Bench()
    act = bench.run(30.0)
    lc = bench.fw.cfg.limits
    assert act.state == "RUN" and act.charge_limit_a > 0.5 * lc.max_charge_a
    reconfigure(bench, {"limits.max_charge_a": 0.25 * lc.max_charge_a,
                        "limits.max_discharge_a": 0.25 * lc.max_discharge_a})
    act = bench.tick(measurement=False)
    assert act.state == "RUN"
    assert act.charge_limit_a == bench.fw.cfg.limits.max_charge_a
    assert act.discharge_limit_a == bench.fw.cfg.limits.max_discharge_a


def test_a_shrunk_fault_log_keeps_its_newest_entries():
    bench = Bench()
    bench.run(1.0)
    for k in range(8):
        bench.fw.log.record(FaultEvent(float(k), "CELL_IMBALANCE", 0, "WARNING", "raised"),
                            {"k": k})
    reconfigure(bench, {"fault_log_size": 3})
    assert [e.snapshot["k"] for e in bench.fw.log.entries] == [5, 6, 7]
    assert bench.fw.log.dropped == 5
    bench.fw.log.record(FaultEvent(8.0, "CELL_IMBALANCE", 0, "WARNING", "cleared"), {"k": 8})
    assert [e.snapshot["k"] for e in bench.fw.log.entries] == [6, 7, 8]


def test_a_grown_fault_log_keeps_everything():
    log = FaultLog(2)
    for k in range(3):
        log.record(FaultEvent(float(k), "CELL_IMBALANCE", 0, "WARNING", "raised"), {"k": k})
    log.resize(10)
    log.record(FaultEvent(3.0, "CELL_IMBALANCE", 0, "WARNING", "raised"), {"k": 3})
    assert [e.snapshot["k"] for e in log.entries] == [1, 2, 3] and log.dropped == 1


def test_balancing_switched_off_stops_bleeding_on_the_next_step():
    bench = Bench(n_series=8, initial_soc=0.6, spread=SpreadSpec(initial_soc=0.02))
    bench.run(20.0)
    assert bench.pack.balancing.any()
    reconfigure(bench, {"balancing.mode": "off"})
    act = bench.tick()
    assert not act.balance_mask.any()


def test_new_estimation_settings_reach_the_running_filter_and_keep_its_state():
    bench = Bench()
    bench.run(5.0)
    est = bench.fw.estimator
    soc_before, filter_before = est.filter.soc.copy(), est.filter
    reconfigure(bench, {"estimation.voltage_noise_v": 3e-3})
    assert est.filter is filter_before and est.filter.noise.voltage_v == 3e-3
    np.testing.assert_array_equal(est.filter.soc, soc_before)



def test_raised_balancing_thresholds_stop_bleeding_on_the_next_step():
    bench = Bench(n_series=8, initial_soc=0.6, spread=SpreadSpec(initial_soc=0.02))
    bench.run(20.0)
    assert bench.pack.balancing.any() and not bench.fw.balancer.measuring
    reconfigure(bench, {"balancing.start_mv": 500.0, "balancing.stop_mv": 400.0})
    act = bench.tick()
    assert not act.balance_mask.any() and not bench.fw.balancer.measuring


@pytest.mark.parametrize("wire_test", [False, True])
def test_a_lowered_open_wire_threshold_looks_at_smaller_spreads(wire_test):
    # Two neighbours read 50 mV off, each the other way: without the AFE's open-wire test
    # (the passive fallback) an open wire's signature, a faint one, and a spread too small
    # for the default 80 mV threshold to look at. With the test it is what it is, two
    # sensor offsets: the test moves neither reading, so no threshold makes it an open wire.
    bench = Bench(wire_test=wire_test, spread=SpreadSpec(initial_soc=0.002))
    bench.run(5.0)
    bench.inject("0:sensor-offset:cell=2,offset_v=0.05")
    bench.inject("0:sensor-offset:cell=3,offset_v=-0.05")
    bench.run(2.0)
    assert "OPEN_WIRE" not in bench.names()
    reconfigure(bench, {"protection.OPEN_WIRE.FAULT.threshold": 0.005,
                        "protection.OPEN_WIRE.FAULT.release": 0.002,
                        "balancing.mode": "off"})
    bench.run(1.0 if not wire_test else 10.0)
    assert ("OPEN_WIRE" in bench.names()) is not wire_test
    assert bench.fw.open_wire.testing is wire_test
