"""A multi-panel figure of a recorded run (`bms-emu run --record` CSV)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from bms.core.signals import State  # noqa: E402
from bms.data.csv_table import Findings, read_table  # noqa: E402
from bms.data.faults import names_in  # noqa: E402
from bms.data.validation import InputError, Problems  # noqa: E402
from hil.recorder import SUMMARY_COLUMNS  # noqa: E402

MAX_CELL_LINES = 32  # draw each cell's voltage when there are at most this many
TEXT_COLUMNS = ("state", "contactors", "balancing_mask")


def image_types() -> frozenset[str]:
    """The file types `plot_run` writes, by suffix (without the dot)."""
    return frozenset(FigureCanvasBase.get_supported_filetypes())


def read_run(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a recorded run; InputError names a missing column or each bad line."""
    table = read_table(path)
    header = table.header
    if table.first is None:
        raise InputError(table.source, ["the file is empty"])
    missing = [c for c in SUMMARY_COLUMNS if c not in header]
    if missing:
        raise InputError(table.source, [f"missing column {c!r} (is this a `bms-emu run "
                                        "--record` file?)" for c in missing])
    if not table.rows:
        raise InputError(table.source, ["no data rows"])
    numeric = [j for j, name in enumerate(header) if name not in TEXT_COLUMNS]
    nums = table.numbers(numeric)
    found = Findings()
    found.add([row.line for row in nums.misshapen], 0,
              lambda k: f"line {nums.misshapen[k].line}: has {len(nums.misshapen[k].cells)} "
              f"columns, the header has {len(header)}")
    lines = nums.lines
    rows, cols = np.nonzero(~nums.is_number)
    found.add(lines[rows], cols,
              lambda k: f"line {lines[rows[k]]}, column {header[numeric[cols[k]]]!r}: "
              f"{nums.cell(rows[k], cols[k])!r} is not a number")
    problems = Problems(table.source)
    found.report(problems)
    problems.raise_if_any()
    data = {header[j]: nums.values[:, c] for c, j in enumerate(numeric)}
    for j, name in enumerate(header):
        if name in TEXT_COLUMNS:
            data[name] = np.array([row.cells[j] for row in nums.rows])
    return data


def plot_run(csv_path: str | Path, png_path: str | Path, title: str | None = None) -> None:
    d = read_run(csv_path)
    t = d["time_s"]
    hours = t[-1] > 2 * 3600
    x = t / (3600.0 if hours else 60.0)
    xlabel = "time (h)" if hours else "time (min)"
    cells = sorted((k for k in d if k[0] == "v" and k[1:].isdigit()), key=lambda k: int(k[1:]))
    temps = sorted((k for k in d if k[0] == "t" and k[1:].isdigit()), key=lambda k: int(k[1:]))

    fig, ax = plt.subplots(5, 1, figsize=(12, 14), sharex=True, constrained_layout=True)
    fig.suptitle(f"{title or Path(csv_path).name}: {len(cells)} cells in series")

    ax[0].plot(x, d["pack_v"], color="tab:blue", label="pack voltage")
    ax[0].set_ylabel("pack (V)")
    right = ax[0].twinx()
    right.plot(x, d["current_a"], color="tab:red", lw=0.8, label="current (+ = charge)")
    right.plot(x, d["charge_limit_a"], color="tab:green", lw=0.8, ls="--", label="charge limit")
    right.plot(x, -d["discharge_limit_a"], color="tab:purple", lw=0.8, ls="--",
               label="discharge limit")
    right.set_ylabel("current (A)")
    right.legend(loc="upper right", fontsize=8)
    ax[0].legend(loc="upper left", fontsize=8)

    ax[1].plot(x, d["soc_true_pct"], color="black", label="true")
    ax[1].plot(x, d["soc_pct"], color="tab:orange", ls="--", label="estimated")
    ax[1].set_ylabel("SoC (%)")
    ax[1].set_ylim(-5, 105)
    ax[1].legend(loc="upper right", fontsize=8)

    if len(cells) <= MAX_CELL_LINES:
        for k in cells:
            ax[2].plot(x, d[k], lw=0.5, alpha=0.6)
    ax[2].plot(x, d["cell_v_max"], color="tab:red", lw=1.2, label="max")
    ax[2].plot(x, d["cell_v_mean"], color="black", lw=1.0, label="mean")
    ax[2].plot(x, d["cell_v_min"], color="tab:blue", lw=1.2, label="min")
    ax[2].set_ylabel("cell (V)")
    ax[2].legend(loc="upper right", fontsize=8)

    for k in temps:
        ax[3].plot(x, d[k], lw=0.5, label=k)
    ax[3].set_ylabel("temperature (°C)")
    if len(temps) <= 8:
        ax[3].legend(loc="upper right", fontsize=8, ncol=4)

    names = [s.value for s in State]
    state_index = np.array([State(s).code if s in names else -1 for s in d["state"]])
    ax[4].step(x, state_index, where="post", color="black", label="state")
    ax[4].set_yticks(range(len(names)), names)
    ax[4].set_ylabel("state")
    balancing = ax[4].twinx()
    balancing.fill_between(x, d["balancing_n"], step="post", alpha=0.3, color="tab:green")
    balancing.set_ylim(0, max(1.0, float(d["balancing_n"].max())))
    balancing.set_ylabel("cells balancing")
    faults = d["faults"].astype(np.int64)
    changes = np.flatnonzero(np.diff(faults, prepend=0))
    for i in changes:
        label = ", ".join(names_in(int(faults[i]))) or "cleared"
        ax[4].axvline(x[i], color="tab:red", lw=0.8)
        ax[4].annotate(label, (x[i], len(names) - 1), fontsize=7, rotation=90, va="top",
                       color="tab:red")
    ax[4].set_xlabel(xlabel)
    for a in ax:
        a.grid(alpha=0.3)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
