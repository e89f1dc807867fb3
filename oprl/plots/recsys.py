"""Trade-off figure for the recommendation CMDP: watch time against each auxiliary signal,
one point per policy (learned, heuristic, LP optimum), the threshold as a dashed line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oprl.plots import pyplot
from oprl.runs import atomic_write

MAIN = "watch_time/episode"


def tradeoff(frame: pd.DataFrame, path: str | Path, title: str | None = None) -> None:
    """``frame``: rows of `oprl.evaluate.evaluate` (metric ``watch_time/episode`` and one
    metric per signal named ``"<signal>/episode (>= threshold)"``)."""
    plt = pyplot()
    signals = [m for m in frame["metric"].unique() if "(>=" in m]
    if not signals:
        raise ValueError("frame: no auxiliary-signal metrics ('<signal>/episode (>= t)') found")
    main = frame[frame["metric"] == MAIN].drop_duplicates("policy").set_index("policy")["mean"]
    fig, axes = plt.subplots(1, len(signals), figsize=(4 * len(signals), 3.8), squeeze=False)
    colors = {"learned": "tab:blue", "heuristic": "tab:gray", "optimal": "tab:green"}
    for ax, metric in zip(axes[0], signals):
        rows = frame[frame["metric"] == metric].drop_duplicates("policy")
        for _, row in rows.iterrows():
            if row["policy"] not in main.index:
                continue
            ax.scatter(row["mean"], main[row["policy"]], color=colors.get(row["kind"], "k"))
            ax.annotate(row["policy"], (row["mean"], main[row["policy"]]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        threshold = float(metric.split(">=")[1].rstrip(") "))
        ax.axvline(threshold, color="r", linestyle="--", linewidth=1)
        ax.set_xlabel(metric)
        ax.set_ylabel(MAIN)
    fig.suptitle(title or str(frame["scenario"].iloc[0]))
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
