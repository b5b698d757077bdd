"""Which build of the firmware is running, for DeviceInfo's `firmware_build`."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


@cache
def firmware_build() -> str:
    """`git describe --always` of the tree the code runs from (a tag, or a commit's short
    hash), or "unknown" where there is none: an installed copy, no git. Read-only: no
    `--dirty`, which refreshes the index."""
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), "describe", "--always"],
                              capture_output=True, text=True, timeout=5.0, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"
