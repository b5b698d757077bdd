"""Capacity and coulombic efficiency from full cycles.

Capacity is the charge a full cell gives before it meets the cut-off, taken from the slowest
such discharge (the one that leaves least behind). Coulombic efficiency is the charge out
over the charge in across a cycle empty -> full -> empty whose two empties were met at the
same rate (else the cut-off leaves a different charge behind at each end)."""

from __future__ import annotations

from dataclasses import dataclass

from hil.fitting.segments import Event, Segmented

SAME_RATE = 0.2  # two empties at rates within 20 % of each other end a cycle alike


@dataclass(frozen=True)
class Cycle:
    """A cycle empty -> full -> empty within one file (rows of its three events)."""

    seg: Segmented
    empty_row: int
    full_row: int
    end_row: int

    @property
    def charge_in_ah(self) -> float:
        q = self.seg.charge_ah
        return float(q[self.full_row] - q[self.empty_row])

    @property
    def charge_out_ah(self) -> float:
        q = self.seg.charge_ah
        return float(q[self.full_row] - q[self.end_row])

    @property
    def efficiency(self) -> float:
        return self.charge_out_ah / self.charge_in_ah

    @property
    def span_s(self) -> tuple[float, float]:
        t = self.seg.trace.time_s
        return float(t[self.empty_row]), float(t[self.end_row])


def full_discharges_ah(seg: Segmented, events: list[Event]) -> list[float]:
    """The charge out of each full -> empty pair of events in a row."""
    q = seg.charge_ah
    return [float(q[a.row] - q[b.row]) for a, b in zip(events, events[1:], strict=False)
            if a.kind == "full" and b.kind == "empty"]


def cycles(seg: Segmented, events: list[Event]) -> list[Cycle]:
    """Each empty -> full -> empty run of events whose empties were met at the same rate."""
    found = []
    for a, b, c in zip(events, events[1:], events[2:], strict=False):
        if (a.kind, b.kind, c.kind) == ("empty", "full", "empty") and abs(
                a.current_a - c.current_a) <= SAME_RATE * abs(c.current_a):
            found.append(Cycle(seg, a.row, b.row, c.row))
    return found
