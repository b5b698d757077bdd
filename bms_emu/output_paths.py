"""Files a command writes as it ends (a recording, a plot, a report, statistics) are checked
before it starts: a run of hours must not end in 'No such file or directory' with its summary
lost. The check is what can be known without writing: the folder exists and may be written
in, the path is not a folder, and (for an image) the type is one the plotter writes."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from bms.data.validation import Problems


def check_output_path(problems: Problems, flag: str, path: str | os.PathLike | None,
                      suffixes: Collection[str] = ()) -> None:
    """Adds a problem when `path` cannot be written; `suffixes` (without the dot), when
    given, are the file types allowed."""
    if path is None:
        return
    target = Path(path)
    try:
        folder = target.parent
        if not str(path):
            problems.add(flag, str(path), "must be a file name")
        elif target.is_dir():
            problems.add(flag, str(path), "is a directory: give a file name")
        elif not folder.is_dir():
            problems.add(flag, str(path), f"its directory {folder} does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK) or (
                target.exists() and not os.access(target, os.W_OK)):
            problems.add(flag, str(path), "cannot be written here (permission denied)")
        elif suffixes and target.suffix.lower().lstrip(".") not in suffixes:
            problems.add(flag, str(path), "must end in one of "
                         f"{', '.join('.' + s for s in sorted(suffixes))}")
    except (OSError, ValueError) as exc:  # a NUL in the name; a name too long
        problems.add(flag, str(path), f"is not a usable path: {exc}")
