"""Summaries and figures of a sweep's results (`oprl report OUT_DIR`).

Tables are pandas frames printed as text; figures are PNGs written atomically into
``OUT_DIR/report/``: one heatmap of the gap to the reference over two swept parameters per
policy, and the metric against one swept parameter for every policy (other parameters
averaged).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oprl import registry
from oprl.runs import atomic_write
from oprl.sweep import RESULTS, first_record_per_cell, read_results


def load_results(out: str | Path) -> pd.DataFrame:
    path = Path(out) / RESULTS
    if not path.exists():
        raise ValueError(f"report: {out} holds no {RESULTS}; run `oprl sweep SPEC --out {out}`")
    try:
        frame = read_results(path)
    except (OSError, ValueError) as err:  # truncated or not parquet at all
        raise ValueError(f"report: {path} is not a readable results file ({err})") from None
    missing = sorted({"cell_id", "policy", "metric", "mean", "gap_pct"} - set(frame.columns))
    if not len(frame) or missing:
        raise ValueError(f"report: {path} holds no results rows"
                         + (f" (missing columns: {', '.join(missing)})" if missing else ""))
    return first_record_per_cell(frame)


def swept_parameters(frame: pd.DataFrame) -> list[str]:
    """Parameter columns that take more than one value, in spec order."""
    cols = [c for c in frame.columns if c.startswith("param.")]
    return [c.removeprefix("param.") for c in cols if frame[c].nunique(dropna=True) > 1]


def main_metric(frame: pd.DataFrame) -> str:
    """The metric reported first for each cell (the scenario's own)."""
    return str(frame.groupby("cell_id", sort=False)["metric"].first().mode().iloc[0])


def minimised(frame: pd.DataFrame, metric: str) -> bool | None:
    """Whether ``metric`` is minimised, read from the scenario's simulator (None: not its
    main metric, or a scenario not registered here)."""
    scenario = str(frame["scenario"].iloc[0]) if len(frame) else ""
    if metric != main_metric(frame) or scenario not in registry.SCENARIOS:
        return None
    return registry.get(scenario).simulator_type().metric.minimise


def summary(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per policy: cells scored, mean metric, and mean / median / worst gap to the reference
    (the highest gap of a minimised metric, the lowest of a maximised one; both where the
    direction is unknown)."""
    metric = metric or main_metric(frame)
    rows = frame[frame["metric"] == metric]
    minimise = minimised(frame, metric)
    worst = ({"gap_min": ("gap_pct", "min"), "gap_max": ("gap_pct", "max")} if minimise is None
             else {"gap_worst": ("gap_pct", "max" if minimise else "min")})
    table = rows.groupby(["policy", "kind"], sort=False).agg(
        cells=("cell_id", "nunique"), mean=("mean", "mean"), gap_mean=("gap_pct", "mean"),
        gap_median=("gap_pct", "median"), **worst,
    )
    refs = rows.groupby("reference_kind")["cell_id"].nunique()
    table.attrs["reference_kinds"] = {str(k): int(v) for k, v in refs.items() if k}
    return table.reset_index()


def gap_table(frame: pd.DataFrame, policy: str, x: str, y: str,
              metric: str | None = None) -> pd.DataFrame:
    """Mean gap (%) of ``policy`` over the values of parameters ``y`` (rows) and ``x``."""
    metric = metric or main_metric(frame)
    rows = frame[(frame["metric"] == metric) & (frame["policy"] == policy)]
    return rows.pivot_table(index=f"param.{y}", columns=f"param.{x}", values="gap_pct",
                            aggfunc="mean")


def report(out: str | Path, x: str | None = None, y: str | None = None,
           metric: str | None = None) -> str:
    """Print-ready text and the PNGs of a sweep folder."""
    frame = load_results(out)
    metrics = list(dict.fromkeys(frame["metric"]))
    if metric is not None and metric not in metrics:
        raise ValueError(f"--metric: {metric!r} is not in this sweep; its metrics: "
                         f"{', '.join(map(str, metrics))}")
    metric = metric or main_metric(frame)
    swept = swept_parameters(frame)
    for name, value in (("x", x), ("y", y)):
        if value is not None and f"param.{value}" not in frame.columns:
            raise ValueError(f"--{name}: {value!r} is not a parameter of this sweep; "
                             f"swept: {', '.join(swept) or 'none'}")
    x = x or (swept[0] if swept else None)
    y = y or next((p for p in swept if p != x), None)
    table = summary(frame, metric)
    kinds = ", ".join(f"{k} in {n} cells" for k, n in table.attrs["reference_kinds"].items())
    direction = {True: " (lower is better)", False: " (higher is better)"}.get(
        minimised(frame, metric), "")
    lines = [f"{frame['scenario'].iloc[0]}: {frame['cell_id'].nunique()} cells, metric {metric}"
             f"{direction}, "
             f"reference {kinds or 'none'}", "",
             table.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    figures = Path(out) / "report"
    if x is not None:
        curve = figures / f"{_slug(metric)}_by_{x}.png"
        metric_curves(frame, x, curve, metric)
        lines += ["", f"wrote {curve}"]
    if x is not None and y is not None:
        references = set(frame["reference"])
        for policy in table["policy"]:
            if policy in references:  # its gap is 0 by definition
                continue
            grid = gap_table(frame, policy, x, y, metric)
            if grid.isna().all().all():
                continue
            lines += ["", f"gap % of {policy} ({y} down, {x} across)",
                      grid.to_string(float_format=lambda v: f"{v:+.2f}")]
            path = figures / f"gap_{_slug(policy)}.png"
            gap_heatmap(grid, policy, x, y, path)
            lines.append(f"wrote {path}")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def gap_heatmap(grid: pd.DataFrame, policy: str, x: str, y: str, path: Path) -> None:
    from oprl.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.8 * grid.shape[1], 1 + 0.6 * grid.shape[0]))
    image = ax.imshow(grid.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v)
                                         for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v)
                                         for v in grid.index])
    for (i, j), v in pd.DataFrame(grid.values).stack().items():
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"gap % to reference: {policy}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def metric_curves(frame: pd.DataFrame, x: str, path: Path, metric: str) -> None:
    """The metric against parameter ``x`` for every policy and reference."""
    from oprl.plots import pyplot

    plt = pyplot()
    rows = frame[frame["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, part in rows.groupby("policy", sort=False):
        curve = part.groupby(f"param.{x}")["mean"].mean()
        ax.plot(curve.index, curve.values, marker="o", label=policy)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
