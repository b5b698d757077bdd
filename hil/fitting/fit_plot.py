"""A figure of a fit: each file's measured voltage against the fitted model's, and the error,
held-out rows marked."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hil.fitting.fit import FitResult  # noqa: E402


def plot_fit(result: FitResult, path: str) -> None:
    n = len(result.traces)
    fig, axes = plt.subplots(2 * n, 1, figsize=(11, 3.2 * 2 * n), squeeze=False)
    for k, (source, t_s, data_v, model_v, held) in enumerate(result.traces):
        top, bottom = axes[2 * k, 0], axes[2 * k + 1, 0]
        hours = t_s / 3600.0
        top.plot(hours, data_v, lw=0.8, label="measured")
        top.plot(hours, model_v, lw=0.8, ls="--", label="fitted model")
        top.set_title(source)
        top.set_ylabel("V")
        top.legend(loc="best")
        error_mv = (data_v - model_v) * 1e3
        bottom.plot(hours, error_mv, lw=0.6, color="gray", label="fitted rows")
        if held.any():
            bottom.plot(hours[held], error_mv[held], ".", ms=1.5, color="red",
                        label="held-out rows")
        bottom.set_ylabel("error, mV")
        bottom.set_xlabel("h")
        bottom.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
