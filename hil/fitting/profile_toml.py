"""A fitted cell profile as TOML text, in the shape `bms.data.chemistry.parse_profile` reads
(there is no TOML writer in the standard library, and a profile needs only numbers, strings,
lists and one level of tables)."""

from __future__ import annotations

import numpy as np


def _value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    text = f"{float(value):.6g}"
    return text if "." in text or "e" in text else text + ".0"  # a float, never an int


def profile_toml(profile: dict, comments: list[str]) -> str:
    """TOML text of `profile` (top-level keys, then one [table] per dict), with `comments`
    as # lines at the top."""
    lines = [f"# {c}" for c in comments]
    tables = {k: v for k, v in profile.items() if isinstance(v, dict)}
    lines += [f"{k} = {_value(v)}" for k, v in profile.items() if k not in tables]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
