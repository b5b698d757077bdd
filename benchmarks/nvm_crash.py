"""A crash campaign against the persistent store: `bms-emu serve` killed with SIGKILL at
random moments, many times over, each start resuming the store the last one left. Prints one
JSON line.

    .venv/bin/python benchmarks/nvm_crash.py [--chains 4] [--kills-per-chain 13]
        [--seed 20261129] [--quick]

After every kill the store must pass `PRAGMA integrity_check`, hold every fault log entry
and configuration write the emulator answered, and a SoC save no older than one save period
before its last status; the next start must resume exactly that save (what a kill checks:
tests/support/nvm_crash.py). The test suite runs a campaign of 6 kills
(tests/bms_emu/test_nvm_crash.py); this is the one with enough kills to land on the rare
moments (a write half done, a save under way).

Figures: kills made and checked, fault events and parameter writes found in the store,
failures (each with its chain and kill), wall seconds. Goal: at least 50 kills, no failure.
`--quick` is 2 chains of 2 kills (a smoke run of this script, not a campaign).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.nvm_crash
from tests.support.nvm_crash import run_campaign  # noqa: E402

GOAL_KILLS = 50


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, default=4,
                   help="stores killed side by side, each by a thread of its own")
    p.add_argument("--kills-per-chain", type=int, default=13, help="kills of each chain")
    p.add_argument("--seed", type=int, default=20261129, help="the kill moments' seed")
    p.add_argument("--quick", action="store_true", help="the CI smoke run: 2 chains x 2 kills")
    a = p.parse_args()
    if a.quick:
        a.chains, a.kills_per_chain = 2, 2
    for name in ("chains", "kills_per_chain"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: at least 1")
    return a


def main() -> None:
    a = parse_args()
    started_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nvm-crash-") as tmp:
        campaign = run_campaign(Path(tmp), a.chains, a.kills_per_chain, a.seed)
    planned = a.chains * a.kills_per_chain
    print(json.dumps({
        "benchmark": "nvm_crash", "chains": a.chains, "kills_per_chain": a.kills_per_chain,
        "seed": a.seed, "kills_planned": planned, "kills": campaign.kills,
        "events_checked": campaign.events_checked, "writes_checked": campaign.writes_checked,
        "failures": campaign.failures, "wall_s": round(time.monotonic() - started_s, 1),
        "goal_kills": GOAL_KILLS,
        "goal_met": campaign.kills >= GOAL_KILLS and not campaign.failures}))


if __name__ == "__main__":
    main()
