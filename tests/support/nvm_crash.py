"""A crash campaign against the persistent store: `bms-emu serve` killed with SIGKILL at
random moments, over and over, each time resuming the store the last one left. The test
(tests/bms_emu/test_nvm_crash.py) runs a short one; benchmarks/nvm_crash.py the long one.

Each chain is one store and one pseudo-terminal: start the emulator (10 ms tick, a save
period of 0.5 s), talk to it over the protocol for a random 0.2..1.5 s - on every other
start toggling a warning's thresholds, so that a fault event and a configuration write
come every few ticks - and kill it. Then, after every kill:
  - the database opens and passes `PRAGMA integrity_check`;
  - every fault log entry the emulator answered over the protocol is in the store;
  - every configuration write it acknowledged is in the store's log of writes;
  - the saved SoC is no older than one save period before the last status answered;
and the next start says it resumed exactly that save. Chains run side by side, each in a
thread of its own: most of a kill's wall time is the emulator starting.
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import sqlite3
import subprocess
import threading
import time
import traceback
import tty
from dataclasses import dataclass, field
from pathlib import Path

from bms.data.config import default_config
from bms.data.parameters import catalogue
from bms.data.presets import PRESETS
from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from tests.support.processes import CLI

SERIES = 4
TICK_S = 0.01
SAVE_PERIOD_S = 0.5
START_TIMEOUT_S = 60.0
LIFE_S = (0.2, 1.5)  # how long the emulator lives before its kill: uniform in this range
CONFIG = """\
fault_log_size = 60000
[protection.CELL_IMBALANCE.WARNING]
debounce_s = 0.0
release_s = 0.0
"""
ROW = "protection.CELL_IMBALANCE.WARNING"
# The SoC spread of four cells is a percent or two: above the first, below the second
# (which stays under the ALARM's 0.2: a WARNING must trip before its ALARM).
RAISE = {"threshold": 0.001, "release": 0.0005}
CLEAR = {"threshold": 0.15, "release": 0.1}


class PtyClient:
    """A synchronous protocol client on the master side of a pty the emulator opens."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.decoder = Decoder()
        self.seq = 0

    def drain(self) -> None:
        """Drops whatever a killed emulator left unread."""
        while select.select([self.master], [], [], 0)[0]:
            os.read(self.master, 65536)
        self.decoder = Decoder()

    def ask(self, msg: object, timeout_s: float = 2.0) -> object | None:
        """The answer to `msg`, or None when none came in time."""
        self.seq = (self.seq + 1) & 0xFFFF
        os.write(self.master, encode(msg, self.seq))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.master], [], [], left)[0]:
                break
            for item in self.decoder.feed(os.read(self.master, 65536)):
                if isinstance(item, Frame) and item.header.seq == self.seq:
                    return item.message
        return None

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@dataclass
class Chain:
    k: int
    kills: int = 0
    events_checked: int = 0
    writes_checked: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Campaign:
    """What a campaign did: every failure (empty when the store held), and how much the
    kills checked."""

    kills: int
    events_checked: int
    writes_checked: int
    failures: list[str]


def run_campaign(tmp_path: Path, chains: int, kills_per_chain: int,
                 seed: int = 20261129) -> Campaign:
    """`chains` chains side by side, each killing its emulator `kills_per_chain` times."""
    rng = random.Random(seed)
    runs = [Chain(k) for k in range(1, chains + 1)]
    threads = [threading.Thread(target=run_chain,
                                args=(c, tmp_path, kills_per_chain, random.Random(rng.random())))
               for c in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Campaign(kills=sum(c.kills for c in runs),
                    events_checked=sum(c.events_checked for c in runs),
                    writes_checked=sum(c.writes_checked for c in runs),
                    failures=[f for c in runs for f in c.failures])


def param_ids() -> dict[str, int]:
    chem = PRESETS["na-nfm"]
    cfg = default_config(chem, SERIES, chem.capacity_ah)
    return {p.name: p.id for p in catalogue(cfg)}


def run_chain(chain: Chain, tmp_path: Path, kills: int, rng: random.Random) -> None:
    try:
        kill_over_and_over(chain, tmp_path, kills, rng)
    except Exception:  # noqa: BLE001 - a thread's exception must fail the campaign
        chain.failures.append(f"chain {chain.k}: {traceback.format_exc()}")


def kill_over_and_over(chain: Chain, tmp_path: Path, kills: int, rng: random.Random) -> None:
    db_path = tmp_path / f"chain-{chain.k}.sqlite"
    config = tmp_path / f"chain-{chain.k}.toml"
    config.write_text(CONFIG)
    ids = param_ids()
    client = PtyClient()
    expected_resume: float | None = None
    try:
        for kill in range(kills):
            proc = subprocess.Popen(
                [*CLI, "serve", "--sim", "--serial", client.path, "--series", str(SERIES),
                 "--tick", str(TICK_S), "--nvm", str(db_path), "--nvm-period",
                 str(SAVE_PERIOD_S), "--config", str(config), "--profile", "current:-1.5",
                 "--seed", str(chain.k)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                problem = talk_and_kill(client, proc, rng, kill % 2 == 0, ids, db_path,
                                        expected_resume)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            if isinstance(problem, str):
                chain.failures.append(f"chain {chain.k} kill {kill + 1}: {problem}")
                return
            expected_resume, events, writes = problem
            chain.kills += 1
            chain.events_checked += events
            chain.writes_checked += writes
            client.drain()
    finally:
        client.close()


def talk_and_kill(client: PtyClient, proc: subprocess.Popen, rng: random.Random,
                  toggle: bool, ids: dict[str, int], db_path: Path,
                  expected_resume: float | None) -> tuple[float, int, int] | str:
    """One life of the emulator; (the save it left, events and writes checked) or what went
    wrong."""
    deadline = time.monotonic() + START_TIMEOUT_S
    status = None
    while status is None and time.monotonic() < deadline and proc.poll() is None:
        status = client.ask(pm.GetStatus(), timeout_s=0.5)
    if not isinstance(status, pm.Status):
        return f"no status from the emulator: {proc.stdout.read() if proc.poll() else ''}"
    first = client.ask(pm.GetFaultLog(0, 0))
    if not isinstance(first, pm.FaultLogPage) or first.dropped:
        return f"first fault log page: {first!r}"
    next_entry = first.total  # entries from here on are this life's
    seen: list[tuple[float, int, str]] = []
    writes = 0
    raised = False
    last_time_s = status.time_s
    end = time.monotonic() + rng.uniform(*LIFE_S)
    while time.monotonic() < end:
        if toggle:
            values = RAISE if not raised else CLEAR
            reply = client.ask(pm.SetConfig(tuple(
                {"param_id": ids[f"{ROW}.{name}"], "kind": int(pm.ValueKind.FLOAT),
                 "value": value}
                for name, value in values.items())))
            if isinstance(reply, pm.ConfigValues):
                writes += len(values)
                raised = not raised
        reply = client.ask(pm.GetStatus())
        if isinstance(reply, pm.Status):
            last_time_s = reply.time_s
        page = client.ask(pm.GetFaultLog(next_entry, 32))
        if isinstance(page, pm.FaultLogPage):
            seen += [(e["t_s"], e["code"], "raised" if e["action"] else "cleared")
                     for e in page.entries]
            next_entry += len(page.entries)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    output = proc.stdout.read()
    if expected_resume is not None:
        said = re.search(r"resumed boot \d+'s save at ([0-9.]+) s", output)
        if said is None or abs(float(said.group(1)) - expected_resume) > 0.05:
            return f"expected to resume the save at {expected_resume} s; it said {output!r}"
    return check_store(db_path, seen, writes, last_time_s)


def check_store(db_path: Path, seen: list[tuple[float, int, str]], writes: int,
                last_time_s: float) -> tuple[float, int, int] | str:
    db = sqlite3.connect(db_path)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            return f"integrity_check: {integrity}"
        boot = db.execute("SELECT MAX(boot) FROM boots").fetchone()[0]
        stored = set(db.execute("SELECT t_s, code, action FROM fault_log WHERE boot = ?",
                                (boot,)))
        missing = [e for e in seen if e not in stored]
        if missing:
            return f"{len(missing)} of {len(seen)} answered fault log entries lost: {missing[:3]}"
        logged = db.execute("SELECT COUNT(*) FROM config_changes WHERE boot = ? AND who LIKE "
                            "'protocol on %'", (boot,)).fetchone()[0]
        if logged < writes:
            return f"{writes} parameter writes acknowledged, {logged} in the store's log"
        saved_at_s = db.execute("SELECT saved_at_s FROM snapshot WHERE boot = ?",
                                (boot,)).fetchone()
        if saved_at_s is None or saved_at_s[0] < last_time_s - SAVE_PERIOD_S - TICK_S:
            return (f"the saved SoC is from {saved_at_s} s; the last status answered was at "
                    f"{last_time_s} s, the save period {SAVE_PERIOD_S} s")
        return saved_at_s[0], len(seen), writes
    finally:
        db.close()
