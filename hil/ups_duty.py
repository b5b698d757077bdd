"""The simulated inverter's duty as a UPS sees it: the mains, which fails at given times
for given lengths, and the load it carries, which the battery supplies while the mains is
away (`bms-emu inverter --outage AT:LEN --load-w W`). While the mains is up the grid
carries the load and the inverter charges the battery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bms.data.durations import parse_duration_s
from bms.data.validation import Problems

LOAD_W_RANGE = (1e-3, 10_000_000)  # W: up to 10 MW, a PCS


@dataclass(frozen=True)
class Outage:
    at_s: float
    length_s: float

    @property
    def end_s(self) -> float:
        return self.at_s + self.length_s

    def describe(self) -> str:
        return f"{self.at_s:g}-{self.end_s:g} s"


@dataclass(frozen=True)
class UpsDuty:
    outages: tuple[Outage, ...] = ()
    load_w: float = 0.0  # what the load draws; the battery's while the mains is away

    def outage_at(self, now_s: float) -> Outage | None:
        return next((o for o in self.outages if o.at_s <= now_s < o.end_s), None)

    def mains_up(self, now_s: float) -> bool:
        return self.outage_at(now_s) is None


def parse_outage(text: str, where: str, problems: Problems) -> Outage | None:
    """`AT:LEN`, both durations (`600`, `10m`, `1h30m`); None with the problem added."""
    at_text, sep, length_text = text.partition(":")
    try:
        at_s, length_s = parse_duration_s(at_text), parse_duration_s(length_text)
    except ValueError as exc:
        problems.add(where, text, f"must be AT:LEN, two durations (for example 60:300 or "
                     f"1h:10m): {exc}" if sep else "must be AT:LEN, two durations (for "
                     "example 60:300 or 1h:10m)")
        return None
    if not (math.isfinite(at_s) and math.isfinite(length_s)) or length_s <= 0.0:
        problems.add(where, text, "the outage must start at a finite time and last a "
                     "finite time longer than 0 s")
        return None
    return Outage(at_s, length_s)


def parse_duty(outages: list[str], load_w: float | None, problems: Problems) -> UpsDuty | None:
    """The duty from `--outage` (repeatable) and `--load-w`; None with every problem added:
    a malformed outage, outages that overlap, a load out of range, outages with no load."""
    known = len(problems.items)
    parsed = [parse_outage(text, "--outage", problems) for text in outages]
    if load_w is not None:
        problems.check_range("--load-w", load_w, *LOAD_W_RANGE)
    elif outages:
        problems.add("--load-w", None, "give the power the load draws (W), which the "
                     "battery supplies during the --outage")
    good = sorted((o for o in parsed if o is not None), key=lambda o: o.at_s)
    for before, after in zip(good, good[1:], strict=False):
        if after.at_s < before.end_s:
            problems.add("--outage", f"{after.at_s:g}:{after.length_s:g}",
                         f"overlaps the outage {before.describe()}: give outages that do "
                         "not overlap")
    if len(problems.items) > known:
        return None
    return UpsDuty(tuple(good), load_w or 0.0)
