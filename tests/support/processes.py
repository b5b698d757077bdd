"""`bms-emu` subprocesses for the tests that run the real commands (serve, rig, pty): output
collected as it comes, so that a test waits for a line with a deadline instead of blocking
on a pipe, and a stop that always ends the process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

CLI = [sys.executable, "-m", "bms_emu.main"]


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               details: Callable[[], str] = str, every_s: float = 0.02) -> object:
    """The first truthy value of `predicate()`, asked every `every_s`; the test fails after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {timeout_s:g} s){details()}")
        time.sleep(every_s)


class Proc:
    """A `bms-emu` subprocess whose output (stdout and stderr) is collected as it comes."""

    running: set[Proc] = set()  # not yet stopped: `stop_left_running` ends them

    def __init__(self, *args: str):
        self.popen = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        Proc.running.add(self)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> int:
        """How many lines so far contain `text`."""
        return sum(text in line for line in list(self.lines))

    def output(self) -> str:
        return "\n--- its output:\n" + "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 15.0) -> None:
        """Until a line contains `text`; fails at once if the process has ended."""
        wait_until(lambda: self.said(text) or self.popen.poll() is not None, timeout_s,
                   f"no {text!r} from {self.popen.args[3]}", self.output)
        if not self.said(text):
            pytest.fail(f"{self.popen.args[3]} ended before saying {text!r}{self.output()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(5)
        Proc.running.discard(self)


def stop_left_running(kept: set[Proc]) -> None:
    """Stops every `Proc` a test left running but those in `kept` (a module's fixtures'):
    a test that failed before its own stop must not leave a `serve` behind, which keeps
    reopening its pty by path and answers on a later test's pty."""
    for proc in list(Proc.running - kept):
        proc.stop()
