"""Durations as people write them on a command line: `3600`, `90s`, `90m`, `1.5h`, `2d`, `1h30m`."""

from __future__ import annotations

import re

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")


def parse_duration_s(text: str) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError naming the text."""
    cleaned = text.strip().lower()
    pos = 0
    total_s = 0.0
    parts = 0
    while pos < len(cleaned):
        match = _PART.match(cleaned, pos)
        if match is None or (parts and not match.group(2)):
            break
        total_s += float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
        pos = match.end()
        parts += 1
    if not cleaned or pos != len(cleaned):
        raise ValueError(
            f"bad duration {text!r}: use seconds or a number with s, m, h or d "
            "(for example 3600, 90m, 24h, 1h30m)"
        )
    return total_s
