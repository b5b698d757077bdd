"""Issue 14: whole duty cycles on healthy packs at a 1 s measurement period raise nothing,
end connected, and take the pack where the cycle drives it. The shorter ones run here;
benchmarks/duty_cycles.py runs the whole catalogue (0.2C, 416S, days of float and rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bms.core.signals import FaultEvent
from hil.duty_cycles import DutyCycle, DutyResult, full_cycle, judge, run_duty_cycle
from hil.scenario import run_scenario
from hil.scenario_file import load_scenario

UPS = Path(__file__).resolve().parents[2] / "scenarios" / "ups-outage-to-empty-and-recharge.toml"


# The 2C na-nfm cycle and the UPS outage on na-nvpf 16S are the benchmark's quick runs,
# judged the same way by tests/benchmarks/test_quick_runs.py: not run twice.
@pytest.mark.parametrize(("chemistry", "c_rate"),
                         [("na-nfm", 0.5), ("na-nvpf", 0.5), ("na-nvpf", 2.0)])
def test_a_full_cycle_within_the_limits_raises_nothing(chemistry, c_rate):
    result = run_duty_cycle(full_cycle(c_rate, chemistry))
    assert result.problems == [], result.as_dict()


@pytest.mark.parametrize(("chemistry", "series"), [("na-nfm", 416)])
def test_the_ups_outage_story_holds_on_other_packs(chemistry, series):
    """The library's UPS outage (na-nfm 16S) on a rack string (on na-nvpf 16S: the
    benchmark's quick run)."""
    sc = load_scenario(UPS, {"pack.chemistry": chemistry, "pack.series": series})
    result = run_scenario(sc)
    failed = [f"{v.check.label}: {v.message}" for v in result.verdicts if not v.passed]
    assert not failed, failed


def test_judge_names_what_a_user_would_call_wrong():
    """The verdict can fail: an event, a pack left open, a SoC range not reached."""
    cycle = DutyCycle("x", "rest", "1h", reaches_below_pct=10.0, reaches_above_pct=95.0)
    event = FaultEvent(5.0, "OPEN_WIRE", 9, "FAULT", "raised", 3, 1.0)
    problems = judge(DutyResult(cycle, [event], 20.0, 90.0, "FAULT", "open", 3600.0, 1.0))
    assert problems == ["raised on a healthy pack: t=5 s OPEN_WIRE FAULT",
                        "ends in FAULT with contactors open, not RUN closed",
                        "true SoC never below 10 % (lowest 20.0)",
                        "true SoC never above 95 % (highest 90.0)"]
