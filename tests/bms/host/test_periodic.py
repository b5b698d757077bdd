"""The one telemetry schedule (protocol subscriptions and MQTT telemetry share it)."""

from __future__ import annotations

from bms.host.periodic import Periodic


def due_times(schedule: Periodic, times_s: list[float]) -> list[float]:
    return [t for t in times_s if schedule.due(t)]


def test_a_period_of_ten_ticks_comes_every_tenth_tick_without_drift():
    """Times summed from 0.1 s ticks fall a hair short of the deadline they stand for; a
    1 s period must still come every 10 ticks, not every 11."""
    ticks = [k * 0.1 for k in range(101)]
    assert due_times(Periodic(1.0), ticks) == [ticks[k] for k in range(0, 101, 10)]
    summed, t = [], 0.0
    for _ in range(101):
        summed.append(t)
        t += 0.1  # accumulates rounding error
    assert len(due_times(Periodic(1.0), summed)) == 11


def test_a_stall_sends_once_and_keeps_the_phase():
    schedule = Periodic(1.0)
    assert schedule.due(0.0)
    assert schedule.due(3.7)  # three deadlines missed: one message, no burst
    assert not schedule.due(3.9)
    assert schedule.next_due_s == 4.0  # the phase of 0, 1, 2, ... is kept
    assert schedule.due(4.05)


def test_a_message_out_of_turn_restarts_the_period():
    schedule = Periodic(1.0)
    assert schedule.due(0.0)
    schedule.restart(0.4)
    assert not schedule.due(1.0)
    assert schedule.due(1.4)


def test_the_first_deadline_may_be_now():
    schedule = Periodic(0.25, first_due_s=12.0)
    assert not schedule.due(11.9)
    assert schedule.due(12.0) and not schedule.due(12.1) and schedule.due(12.25)
