"""Crash safety of the persistent store: `bms-emu serve` killed with SIGKILL at random
moments, over and over, each time resuming the store the last one left (the campaign and
what each kill checks: tests/support/nvm_crash.py).

Two chains of three kills each: every check runs after a life that toggled a warning (fault
events and configuration writes) and after one that did not, and every restart after the
first checks the save it resumed. Most of a kill's wall time is the emulator starting, so
the many-kill campaign (4 chains x 13 kills, at least 50) is a benchmark, run by hand:
`.venv/bin/python benchmarks/nvm_crash.py`.
"""

from __future__ import annotations

from tests.support.nvm_crash import run_campaign

CHAINS = 2
KILLS_PER_CHAIN = 3


def test_sigkill_at_random_moments_never_loses_the_store(tmp_path):
    campaign = run_campaign(tmp_path, CHAINS, KILLS_PER_CHAIN)
    assert not campaign.failures, "\n".join(campaign.failures)
    print(f"{campaign.kills} kills; {campaign.events_checked} answered fault events and "
          f"{campaign.writes_checked} acknowledged parameter writes found in the store")
    assert campaign.kills == CHAINS * KILLS_PER_CHAIN
    # the toggling lives did raise and clear faults and write configuration
    assert campaign.events_checked >= campaign.kills
    assert campaign.writes_checked >= campaign.kills
