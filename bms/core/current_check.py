"""Current-sensor plausibility: a current step must move the pack voltage with it.

When the measured current steps by dI between two readings, the pack voltage steps by
about dI times the pack's ohmic resistance, in the same direction. A current step that
the voltage does not follow (less than a quarter of the expected change, or the wrong
way) came from the sensor, not the pack. The mismatch is held for `hold_s` so that one
such step raises a lasting alarm rather than a one-tick blip.
"""

from __future__ import annotations

FOLLOW_FRACTION = 0.25  # the voltage must move at least this share of dI * R
HOLD_S = 60.0


class CurrentCheck:
    def __init__(self, pack_r0_ohm: float, min_step_a: float, hold_s: float = HOLD_S):
        self.pack_r0_ohm = pack_r0_ohm
        self.min_step_a = min_step_a
        self.hold_s = hold_s
        self.last: tuple[float, float] | None = None
        self.mismatch_a = 0.0
        self.seen_at_s = -float("inf")

    def update(self, current_a: float, pack_v: float, now_s: float) -> float:
        """The size of the last unexplained current step, A (0 once `hold_s` has passed)."""
        if self.last is not None:
            d_current_a = current_a - self.last[0]
            if abs(d_current_a) >= self.min_step_a:
                expected_v = d_current_a * self.pack_r0_ohm
                if (pack_v - self.last[1]) / expected_v < FOLLOW_FRACTION:
                    self.mismatch_a = abs(d_current_a)
                    self.seen_at_s = now_s
        self.last = (current_a, pack_v)
        if now_s - self.seen_at_s > self.hold_s:
            self.mismatch_a = 0.0
        return self.mismatch_a
