"""Internal-short detection from the per-cell SoC estimates at rest.

Why and how: docs/internals.md, bms/core/rest_drift.py.
"""

from __future__ import annotations

import numpy as np

SETTLE_S = 600.0
SAMPLE_EVERY_S = 60.0
# A current below the rest current still moves charge (a 0.2C charge of a 1 Ah cell reads
# 0.199 A), and the same charge moves cells of different capacity by different SoC: a cell
# with 1.4 % more capacity fell 1.3 % behind over a charge. Once the cells have moved
# together by this much, the rest starts over (so a charge of more than SHARED_MOVE_MAX
# per SETTLE_S is never one); cells 5 % apart in capacity part by 0.05 % within it.
SHARED_MOVE_MAX = 0.01


class RestDrift:
    def __init__(self, rest_current_a: float, settle_s: float = SETTLE_S,
                 sample_every_s: float = SAMPLE_EVERY_S):
        self.rest_current_a = rest_current_a
        self.settle_s = settle_s
        self.sample_every_s = sample_every_s
        self.rest_since_s: float | None = None
        self.sampled_at_s = -np.inf
        self.reference: np.ndarray | None = None
        self.rest_soc: np.ndarray | None = None  # where the cells stood as the rest began
        self.epoch_seen = 0
        self.drop = 0.0  # the worst cell's SoC fall against the others (held between samples)
        self.held = 0.0  # the largest fall since the last clear: a suspected short latches

    def clear(self) -> None:
        """A clear-faults request: the held fall is forgotten. A short still there shows
        again once the pack next rests long enough."""
        self.held = 0.0

    def update(self, cell_soc: np.ndarray, current_a: float, reset_epoch: int,
               now_s: float) -> float:
        """Returns the largest fall of one cell's SoC against the pack mean seen since the
        last `clear`, fraction. `cell_soc` is the estimate with the charge bled since start
        added back; `reset_epoch` counts the estimator's resets from the voltage."""
        self.held = max(self.held, self._live(cell_soc, current_a, reset_epoch, now_s))
        return self.held

    def _live(self, cell_soc: np.ndarray, current_a: float, reset_epoch: int,
              now_s: float) -> float:
        """The fall in this rest against its reference (0 without one)."""
        if reset_epoch != self.epoch_seen:
            self.epoch_seen = reset_epoch
            self.reference = None
            self.drop = 0.0
            self.rest_soc = None  # the reset's jump is no charge moved
        if abs(current_a) >= self.rest_current_a:
            self.rest_since_s = None
            self.rest_soc = None
            self.reference = None
            self.drop = 0.0
            return 0.0
        if self.rest_since_s is None:
            self.rest_since_s = now_s
        if self.rest_soc is None:
            self.rest_soc = cell_soc.copy()
        elif abs(shared_move(cell_soc - self.rest_soc)) > SHARED_MOVE_MAX:
            # The cells moved together: charge flows, and a charge parts cells of different
            # capacity. The estimates may show that parting late (only where the OCV is
            # steep), so the rest starts over and settles again, as after any current.
            self.rest_since_s, self.rest_soc = now_s, cell_soc.copy()
            self.reference = None
            self.drop = 0.0
        if (now_s - self.rest_since_s < self.settle_s
                or now_s - self.sampled_at_s < self.sample_every_s):
            return self.drop
        self.sampled_at_s = now_s
        deviation = cell_soc - cell_soc.mean()
        if self.reference is None:
            self.reference = deviation
            return self.drop
        self.drop = float((self.reference - deviation).max())
        return self.drop

    def worst_cell(self, cell_soc: np.ndarray) -> int | None:
        """The cell that has fallen furthest, for the fault log."""
        if self.reference is None:
            return None
        deviation = cell_soc - cell_soc.mean()
        return int(np.argmax(self.reference - deviation))


def shared_move(moved: np.ndarray) -> float:
    """The SoC change every cell shares: a charge through the string moves them all one
    way, a short moves one cell; changes of both signs share none."""
    return max(float(moved.min()), 0.0) + min(float(moved.max()), 0.0)
