"""Dispatch figures: served orders by policy against the hindsight bound, and a map-like
scatter of the zones' demand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oprl.plots import pyplot
from oprl.runs import atomic_write


def served_by_policy(frame: pd.DataFrame, path: str | Path, metric: str = "served_orders") -> None:
    """Horizontal bars of ``metric`` (mean +- standard error) for every policy and solver row of
    a benchmark table, the hindsight bound drawn dashed."""
    rows = frame[frame["metric"] == metric]
    if not len(rows):
        raise ValueError(f"frame: no rows with metric {metric!r}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    colors = {"learned": "tab:blue", "heuristic": "tab:gray"}
    ax.barh(rows["policy"], rows["mean"], xerr=rows["stderr"].fillna(0),
            color=[colors.get(k, "tab:green") for k in rows["kind"]])
    bound = rows[rows["policy"] == "hindsight-flow"]
    if len(bound):
        ax.axvline(float(bound["mean"].iloc[0]), color="k", linestyle="--", label="hindsight bound")
        ax.legend(loc="lower right")
    ax.set_xlabel(metric.replace("_", " ") + " per episode")
    ax.set_title(str(rows["scenario"].iloc[0]))
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def zone_demand_map(sim, path: str | Path, horizon: int | None = None) -> None:
    """Zone centroids (longitude, latitude) sized and coloured by expected requests per
    episode, adjacency drawn as thin lines."""
    horizon = int(horizon or sim.params.eval_horizon)
    demand = sim.od_intensity(horizon).sum((0, 2)).numpy()
    lon, lat = sim.zones.lon.numpy(), sim.zones.lat.numpy()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 8))
    for a, b in sim.zones.edges.t().tolist():
        ax.plot([lon[a], lon[b]], [lat[a], lat[b]], color="0.8", linewidth=0.6, zorder=1)
    dots = ax.scatter(lon, lat, s=20 + 400 * demand / demand.max(), c=demand, cmap="viridis",
                      zorder=2)
    fig.colorbar(dots, ax=ax, label=f"expected requests in {horizon} min")
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_aspect(1 / 0.76)  # ~cos(40.75 deg): metres east and north at the same scale
    ax.set_title(sim.name)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
