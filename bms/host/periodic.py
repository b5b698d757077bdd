"""Messages that go out every so often (protocol telemetry subscriptions, MQTT telemetry):
one deadline that comes round every period, on whatever clock the caller passes in."""

from __future__ import annotations

import math

# A time summed from ticks (0.30000000000000004 s) still meets the deadline it stands for.
TIME_EPS_S = 1e-9


class Periodic:
    """Falls due every `period_s`, first at `first_due_s`. A stall skips the periods it
    missed and keeps the phase: no burst to catch up, and the next deadline a period on
    from the last one met, not from the late call that met it (which comes a step late as
    often as not, and would stretch a 1 s period to 1.1 s with 0.1 s steps)."""

    def __init__(self, period_s: float, first_due_s: float = 0.0):
        self.period_s = period_s
        self.next_due_s = first_due_s

    def due(self, now_s: float) -> bool:
        """Whether a period has come round by `now_s`; if so, the deadline moves on."""
        late_s = now_s + TIME_EPS_S - self.next_due_s
        if late_s < 0.0:
            return False
        self.next_due_s += (math.floor(late_s / self.period_s) + 1) * self.period_s
        return True

    def restart(self, now_s: float) -> None:
        """Sent out of turn at `now_s` (on a change): the next one a whole period later."""
        self.next_due_s = now_s + self.period_s
