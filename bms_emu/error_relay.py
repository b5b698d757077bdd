"""What a fleet's processes say on their error output while they run (a broker refusing
them, a client id taken in turn), passed on as it comes, each line under the process's
name. Their error output is a file (`fleet_cmd._run_in_child`): kept there until the end,
a fleet's trouble would go unseen for as long as it runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

PERIOD_S = 1.0  # how often the files are read
MAX_READ_BYTES = 64 * 1024  # a process that floods its error output is read in slices
MAX_LINE_CHARS = 400


@dataclass
class _Watched:
    name: str
    path: Path
    offset: int = 0


class ErrorRelay:
    def __init__(self, prefix: str = "bms-emu fleet"):
        self.prefix = prefix
        self._watched: dict[int, _Watched] = {}

    def watch(self, pid: int, name: str, path: Path) -> None:
        self._watched[pid] = _Watched(name, path)

    def forget(self, pid: int) -> None:
        """The process has ended: what it said last is in its failure report, if any."""
        self._watched.pop(pid, None)

    def relay(self) -> None:
        """Each whole line written since the last call, as `<prefix>: <name>: <line>`."""
        for w in self._watched.values():
            try:
                with open(w.path, "rb") as f:
                    f.seek(w.offset)
                    data = f.read(MAX_READ_BYTES)
            except OSError:  # not created yet
                continue
            end = data.rfind(b"\n") + 1
            if end == 0:
                continue
            w.offset += end
            for line in data[:end].decode(errors="replace").splitlines():
                if line.strip():
                    print(f"{self.prefix}: {w.name}: {line[:MAX_LINE_CHARS]}", file=sys.stderr,
                          flush=True)
