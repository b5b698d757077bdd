"""The inverter's keep-alive stops: after `can.keepalive_timeout_s` the firmware raises
INVERTER_TIMEOUT at the level `can.keepalive_action` names - warn: a WARNING, derate: an
ALARM (limits cut), open: a FAULT (contactors open, latched) - and nothing for off."""

from __future__ import annotations

import can
import pytest

from bms.core.firmware import Firmware
from bms.data.config_toml import parse_config
from bms.data.parameters import apply_changes, catalogue
from bms.data.presets import PRESETS
from bms.data.validation import InputError
from hil.loads import Demand
from tests.bms.links.can.bench import TICK_S, CanBench

TIMEOUT_S = 5.0


def bench_for(action: str, name: str = "pylon-lv") -> CanBench:
    return CanBench(name, {"can": {"keepalive_action": action,
                                   "keepalive_timeout_s": TIMEOUT_S}})


def timeouts(bench: CanBench) -> list[tuple[float, str, str]]:
    return [(round(e.t_s, 6), e.level, e.action) for e in bench.events
            if e.name == "INVERTER_TIMEOUT"]


@pytest.fixture
def benches():
    made = []
    yield lambda *args: made.append(bench_for(*args)) or made[-1]
    for bench in made:
        bench.close()


def test_warn_raises_a_warning_once_the_silence_passes_the_timeout_and_clears_on_return(
        benches):
    bench = benches("warn")
    bench.run(20.0)  # the last keep-alive at t = 19 s
    bench.run(5.1, inverter_alive=False)  # to t = 25 s: 6 s of silence
    assert timeouts(bench) == [(24.1, "WARNING", "raised")]  # the first step past 5 s
    assert bench.act.state == "RUN" and bench.act.contactors.main_closed
    assert bench.act.charge_limit_a > 0
    assert bench.decoded("bms_protection_warning")["warning_system_error"] == 1
    bench.run(2.0)  # a keep-alive at 26 s: cleared at the step after it
    assert timeouts(bench)[1:] == [(26.1, "WARNING", "cleared")]
    assert bench.decoded("bms_protection_warning")["warning_system_error"] == 0


def test_silence_shorter_than_the_timeout_raises_nothing(benches):
    bench = benches("open")
    for _ in range(6):  # keep-alives 4.9 s apart
        bench.run(1.0)
        bench.run(3.9, inverter_alive=False)
    assert timeouts(bench) == []
    assert bench.act.state == "RUN"


def test_derate_raises_an_alarm_that_cuts_the_limits(benches):
    silent, alive = benches("derate"), benches("derate")
    for bench, alive_s in ((silent, 5.0), (alive, 30.0)):
        bench.run(alive_s)
        bench.run(30.0 - alive_s, inverter_alive=False)
    assert timeouts(silent) == [(9.1, "ALARM", "raised")]  # the last keep-alive at 4 s
    assert timeouts(alive) == []
    fraction = silent.fw.cfg.limits.alarm_fraction
    assert silent.act.charge_limit_a == pytest.approx(fraction * alive.act.charge_limit_a)
    assert silent.act.discharge_limit_a == pytest.approx(
        fraction * alive.act.discharge_limit_a)
    assert alive.act.charge_limit_a > 0 and silent.act.state == "RUN"
    flags = silent.decoded("bms_protection_warning")
    assert flags["protection_system_error"] == 1 and flags["warning_system_error"] == 0


def test_open_opens_the_contactors_in_the_step_that_trips_and_stays_open_until_cleared(
        benches):
    bench = benches("open")
    bench.run(10.0)
    assert bench.act.contactors.main_closed
    bench.run(5.2, inverter_alive=False)  # to t = 15.2 s
    assert timeouts(bench) == [(14.1, "FAULT", "raised")]  # the last keep-alive at 9 s
    assert bench.act.state == "FAULT" and not bench.act.contactors.main_closed
    assert (bench.act.charge_limit_a, bench.act.discharge_limit_a) == (0.0, 0.0)
    bench.run(10.0)  # the inverter is back: a FAULT is latched
    assert bench.act.state == "FAULT" and len(timeouts(bench)) == 1
    bench.fw.request("clear-faults")
    bench.run(10.0)
    assert timeouts(bench)[1][1:] == ("FAULT", "cleared")
    assert bench.act.state == "RUN" and bench.act.contactors.main_closed


def test_off_never_raises_and_an_inverter_that_never_speaks_times_out_from_the_start(
        benches):
    off, never = benches("off"), benches("warn")
    off.run(30.0, inverter_alive=False)
    never.run(30.0, inverter_alive=False)
    assert timeouts(off) == []
    assert timeouts(never) == [(5.1, "WARNING", "raised")]  # the link started at t = 0


def test_a_malformed_keepalive_keeps_nothing_alive(benches):
    bench = benches("warn")
    bench.run(10.0)
    short = can.Message(arbitration_id=0x305, data=bytes(3), is_extended_id=False)
    for _ in range(80):
        if bench.k % 10 == 0:
            bench.inverter.send(short)
        bench.tick(inverter_alive=False)
    assert bench.link.node.malformed["inverter_keepalive"] == 8
    assert timeouts(bench) == [(14.1, "WARNING", "raised")]


def test_pylon_hv_takes_the_inverter_s_requests_as_its_keepalive(benches):
    bench = benches("warn", "pylon-hv")
    bench.run(20.0)
    assert timeouts(bench) == [] and bench.link.node.keepalives == 20
    bench.run(6.0, inverter_alive=False)
    assert timeouts(bench) == [(24.1, "WARNING", "raised")]


def test_without_a_link_the_firmware_never_times_out():
    chem = PRESETS["na-nfm"]
    cfg = parse_config({"can": {"keepalive_action": "open", "keepalive_timeout_s": 1.0}},
                       "test", chem, 16, 1.5)
    bench = CanBench()  # only for its pack: this firmware has no link
    fw = Firmware(chem, 16, bench.pack.capacity_ah, cfg)
    try:
        for k in range(round(30.0 / TICK_S)):
            act = fw.step(bench.pack.measure(), k * TICK_S)
            bench.pack.actuate(act)
            bench.pack.advance(Demand(0.0, "a"))
            assert not act.events or all(e.name != "INVERTER_TIMEOUT" for e in act.events)
        assert act.state == "RUN"
    finally:
        bench.close()


def test_changing_the_action_at_run_time_clears_the_row_it_turns_off(benches):
    bench = benches("warn")
    bench.run(1.0)
    bench.run(6.0, inverter_alive=False)
    assert timeouts(bench) == [(5.1, "WARNING", "raised")]
    pid = {p.name: p.id for p in catalogue(bench.fw.cfg)}["can.keepalive_action"]
    cfg, _ = apply_changes({"can": {"keepalive_timeout_s": TIMEOUT_S}}, [(pid, "off")],
                           bench.fw.chem, bench.fw.n_series, bench.pack.capacity_ah)
    bench.fw.reconfigure(cfg)
    bench.run(1.0, inverter_alive=False)
    assert timeouts(bench)[1:] == [(7.0, "WARNING", "cleared")]
    assert bench.fw.log.entries[-1].snapshot["note"] == "can.keepalive_action changed"


@pytest.mark.parametrize(("table", "words"), [
    ({"keepalive_action": "explode"}, "can.keepalive_action = 'explode': must be one of "
                                      "['off', 'warn', 'derate', 'open']"),
    ({"keepalive_timeout_s": 0.5}, "can.keepalive_timeout_s = 0.5: must be within [1, 86400]"),
    ({"keepalive_period_s": 1.0}, "can.keepalive_period_s = 1.0: unknown field; allowed: "
                                  "['keepalive_timeout_s', 'keepalive_action']"),
])
def test_a_bad_setting_is_refused_naming_the_key_the_value_and_what_is_allowed(table, words):
    with pytest.raises(InputError) as refused:
        parse_config({"can": table}, "my.toml", PRESETS["na-nfm"], 16, 1.5)
    assert any(p.startswith(words) for p in refused.value.problems), refused.value.problems
