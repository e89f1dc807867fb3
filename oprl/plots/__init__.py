"""Matplotlib figures: learning curves and each policy's metric against the reference.

Domain-specific figures live beside this module, one file per domain (e.g. `oprl.plots.dispatch`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from oprl.runs import atomic_write


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict], path: str | Path, reference: float | None = None,
                   ylabel: str | None = None) -> None:
    """Train and dev objective (``dev_cost`` or ``dev_reward``) against the step, with the
    reference as a dashed line."""
    plt = pyplot()
    frame = pd.DataFrame(history)
    what = "cost" if "dev_cost" in frame else "reward"
    fig, ax = plt.subplots(figsize=(6, 4))
    if f"train_{what}" in frame:
        ax.plot(frame["step"], frame[f"train_{what}"], label="train")
    ax.plot(frame["step"], frame[f"dev_{what}"], label="dev")
    if reference is not None and not math.isnan(reference):
        ax.axhline(reference, color="k", linestyle="--", label="reference")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or what)
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def benchmark_bars(frame: pd.DataFrame, path: str | Path) -> None:
    """One bar per policy and solver (mean with standard error), the reference dashed."""
    plt = pyplot()
    frame = frame[frame["metric"] == frame["metric"].iloc[0]] if len(frame) else frame
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(frame) + 1.5))
    colors = {"learned": "tab:blue", "heuristic": "tab:gray"}
    ax.barh(frame["policy"], frame["mean"], xerr=frame["stderr"].fillna(0),
            color=[colors.get(k, "tab:green") for k in frame["kind"]])
    ref = frame[frame["policy"] == frame["reference"]]
    if len(ref):
        ax.axvline(float(ref["mean"].iloc[0]), color="k", linestyle="--")
    ax.set_xlabel(frame["metric"].iloc[0] if len(frame) else "")
    ax.set_title(frame["scenario"].iloc[0] if len(frame) else "")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
