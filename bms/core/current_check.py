"""Current-sensor plausibility: a current step must move the pack voltage with it.

Why and how: docs/internals.md, bms/core/current_check.py.
"""

from __future__ import annotations

import math

from bms.core.estimator import PackModel

FOLLOW_FRACTION = 0.25  # the voltage must move at least this share of dI * R0
HOLD_S = 60.0
# How far the model's RC and OCV change over one interval may be off, as a share of it.
MODEL_DOUBT = 0.5
NOISE_SIGMAS = 4.0  # the readings' noise allowed for, in standard deviations


class CurrentCheck:
    def __init__(self, min_step_a: float, pack_noise_v: float, hold_s: float = HOLD_S):
        self.min_step_a = min_step_a
        self.hold_s = hold_s
        self.tune(pack_noise_v)
        self.last: tuple[float, float, float] | None = None  # current, pack voltage, time
        self.rc_v = (0.0, 0.0)  # the pack model's two RC voltages at the last reading
        self.mismatch_a = 0.0
        self.seen_at_s = -float("inf")

    def tune(self, pack_noise_v: float) -> None:
        """`pack_noise_v`: rms noise of one pack voltage reading (the sum of the cells')."""
        # Two readings' noise, with margin: what a voltage change may be off by anyway.
        self.noise_v = NOISE_SIGMAS * math.sqrt(2.0) * pack_noise_v

    def update(self, current_a: float, pack_v: float, now_s: float, model: PackModel,
               comparable: bool = True) -> float:
        """The size of the last unexplained current step, A (0 once `hold_s` has passed).
        `current_a` flowed since the last reading; `comparable` is False when the two
        readings were taken under different conditions (another bleed), so that their
        difference says nothing of the current."""
        if not math.isfinite(pack_v):  # an unreadable cell: the sensor rows deal with it
            self.last = None
            return self._held(now_s)
        if self.last is not None:
            last_a, last_v, last_s = self.last
            # The model's RC voltages over the interval, exact for a current held over it.
            dt_s = now_s - last_s
            a1, a2 = _decay(dt_s, model.tau1_s), _decay(dt_s, model.tau2_s)
            rc_v = (self.rc_v[0] * a1 + model.r1_ohm * (1.0 - a1) * current_a,
                    self.rc_v[1] * a2 + model.r2_ohm * (1.0 - a2) * current_a)
            rc_change_v = (rc_v[0] - self.rc_v[0], rc_v[1] - self.rc_v[1])
            ocv_change_v = model.ocv_v_per_as * current_a * dt_s
            self.rc_v = rc_v
            step_v = model.r0_ohm * (current_a - last_a)
            if comparable and abs(current_a - last_a) >= self.min_step_a and step_v != 0.0:
                doubt_v = self.noise_v + MODEL_DOUBT * (
                    abs(rc_change_v[0]) + abs(rc_change_v[1]) + abs(ocv_change_v))
                # Judged only where a step the voltage follows and one it does not are told
                # apart whatever the doubt: at a long tick, right after a large change, a
                # small step is not.
                if (1.0 - FOLLOW_FRACTION) * abs(step_v) > doubt_v:
                    # The voltage's move that the model does not account for otherwise, in
                    # the step's direction: the voltage followed if, given the benefit of the
                    # doubt, it moved at least FOLLOW_FRACTION of the step's R0 drop.
                    moved_v = (pack_v - last_v - sum(rc_change_v) - ocv_change_v) * (
                        math.copysign(1.0, step_v))
                    if moved_v + doubt_v < FOLLOW_FRACTION * abs(step_v):
                        self.mismatch_a = abs(current_a - last_a)
                        self.seen_at_s = now_s
        self.last = (current_a, pack_v, now_s)
        return self._held(now_s)

    def _held(self, now_s: float) -> float:
        if now_s - self.seen_at_s > self.hold_s:
            self.mismatch_a = 0.0
        return self.mismatch_a


def _decay(dt_s: float, tau_s: float) -> float:
    """What an RC voltage keeps of itself over `dt_s`; nothing without a time constant."""
    return math.exp(-dt_s / tau_s) if tau_s > 0.0 else 0.0
