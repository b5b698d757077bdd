"""`bms_emu.start_gate`: the fleet's processes start their clocks together. Driven in a
child interpreter (it forks, which a pytest process should not do to itself); what each
process did is appended, in order, to one file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from bms_emu.start_gate import StartGate

    log = sys.argv[1]

    def say(text):
        with open(log, "a") as f:
            f.write(text + "\\n")

    gate = StartGate()
    pids = []
    # A: ready at once; B: ready after a while; C: ends before it is ready (a batch whose
    # packs all failed to build); D: a pack's own `run`, which does not wait.
    for name, delay_s, waits, ends_early in (("A", 0.0, True, False), ("B", 0.5, True, False),
                                             ("C", 0.2, True, True), ("D", 0.0, False, False)):
        pid = os.fork()
        if pid == 0:
            gate.in_child(waits=waits)
            time.sleep(delay_s)
            if ends_early:
                say(name + " ended")
                os._exit(1)
            if waits:
                say(name + " ready")
                gate.wait(lambda: False)
            say(name + " through")
            os._exit(0)
        pids.append(pid)
    gate.forked()
    while not gate.poll():
        time.sleep(0.01)
    say("open")
    for pid in pids:
        os.waitpid(pid, 0)
""")


def test_the_gate_opens_once_every_process_is_ready_or_ended_and_then_lets_all_through(
        tmp_path):
    log = tmp_path / "order.txt"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    order = log.read_text().splitlines()
    assert sorted(order) == sorted(["A ready", "B ready", "C ended", "D through", "open",
                                    "A through", "B through"]), order
    # The gate opens, and the waiting processes pass, only once the last of them said it
    # was ready (B, half a second after A) or ended (C, which held no one back); a pack's
    # own `run` (D) never waited.
    last_ready = max(order.index("A ready"), order.index("B ready"), order.index("C ended"))
    assert order.index("open") > last_ready
    assert order.index("A through") > last_ready and order.index("B through") > last_ready
