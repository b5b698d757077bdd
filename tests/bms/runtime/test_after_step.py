"""What follows a firmware step (bms.runtime.after_step): the store saves before the device
takes the step in and before MQTT publishes it; MQTT commands run after the step's
publishing when the loop polls each step, and only when polled otherwise."""

from __future__ import annotations

from bms.runtime.after_step import AfterStep


class Part:
    """A store, a device or a bridge that writes down what it is called for."""

    def __init__(self, name: str, calls: list[tuple]):
        self.name, self.calls = name, calls

    def after_step(self, now_s, act) -> None:
        self.calls.append((self.name, "after_step", now_s, act))

    def observe(self, m, act) -> None:
        self.calls.append((self.name, "observe", m, act))

    def poll(self, now_s) -> None:
        self.calls.append((self.name, "poll", now_s))


def parts() -> tuple[list[tuple], Part, Part, Part]:
    calls: list[tuple] = []
    return calls, Part("device", calls), Part("keeper", calls), Part("bridge", calls)


def test_the_store_saves_before_the_device_observes_and_mqtt_publishes():
    calls, device, keeper, bridge = parts()
    after = AfterStep(device, keeper, bridge)
    after(1.5, "m", "act")
    assert calls == [
        ("keeper", "after_step", 1.5, "act"),
        ("device", "observe", "m", "act"),
        ("bridge", "after_step", 1.5, "act"),
    ]
    calls.clear()
    after.poll(1.6)
    assert calls == [("bridge", "poll", 1.6)]


def test_polled_each_step_the_commands_run_right_after_the_step_is_published():
    calls, device, keeper, bridge = parts()
    AfterStep(device, keeper, bridge, poll_each_step=True)(2.0, None, "act")
    assert [c[:2] for c in calls] == [
        ("keeper", "after_step"),
        ("device", "observe"),
        ("bridge", "after_step"),
        ("bridge", "poll"),
    ]


def test_a_part_left_out_is_skipped():
    calls, device, keeper, _ = parts()
    after = AfterStep(keeper=keeper, poll_each_step=True)
    after(3.0, "m", "act")
    after.poll(3.1)
    assert calls == [("keeper", "after_step", 3.0, "act")]
    calls.clear()
    AfterStep(device)(3.2, "m", "act")
    assert calls == [("device", "observe", "m", "act")]
