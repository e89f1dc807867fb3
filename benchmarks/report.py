"""Markdown tables from the CSVs that `inventory_gaps.py` writes, for benchmarks/RESULTS.md.

    python benchmarks/report.py benchmarks/results/*.csv
"""

from __future__ import annotations

import json
import math
import sys

import pandas as pd

TARGETS = {"backlog": 0.05, "lost": 0.25, "serial": 1.0, "transshipment": 0.5}


def _fmt(v: float, spec: str = ".2f") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pm(stderr: float) -> str:
    """`` ± s.e.`` of a paired gap; nothing against a bound, which is not simulated."""
    text = _fmt(stderr)
    return f" ± {text}" if text else ""


def instance_table(frame: pd.DataFrame) -> str:
    lines = ["| instance | learned | gap % (± s.e.) | best heuristic | its gap % | reference (kind) "
             "| ref. value | train s | to 1% s |", "|---|---|---|---|---|---|---|---|---|"]
    for key, group in frame.groupby("instance", sort=False):
        params = {k: v for k, v in json.loads(key).items() if k != "scenario"}
        learned = group[group["kind"] == "learned"].iloc[0]
        heur = group[group["kind"] == "heuristic"].sort_values("mean").iloc[0]
        ref = group[group["policy"] == group["reference"]]
        ref_value = _fmt(float(ref["mean"].iloc[0]), ".4f") if len(ref) else ""
        lines.append(
            f"| {', '.join(f'{k}={v}' for k, v in params.items())} | {learned['mean']:.4f} "
            f"| {learned['gap_pct']:+.2f}{_pm(learned.get('gap_stderr_pct', math.nan))} "
            f"| {heur['policy']} {heur['mean']:.4f} | {heur['gap_pct']:+.2f} "
            f"| {learned['reference']} ({learned['reference_kind']}) | {ref_value} "
            f"| {learned['wall_s']:.0f} | {_fmt(learned['time_to_1pct_s'], '.0f')} |")
    return "\n".join(lines)


def summary(frame: pd.DataFrame) -> str:
    learned = frame[frame["kind"] == "learned"]
    out = []
    for suite, group in learned.groupby("suite"):
        target = TARGETS.get(suite)
        within = f", {int((group['gap_pct'] <= target).sum())}/{len(group)} within {target}%" if target else ""
        out.append(f"- {suite}: {len(group)} instances, gap mean {group['gap_pct'].mean():+.3f}%, "
                   f"max {group['gap_pct'].max():+.3f}%{within}")
    return "\n".join(out)


def main() -> None:
    frames = [pd.read_csv(p) for p in sys.argv[1:]]
    # shards run from both ends may both finish an instance: keep its first row per policy
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(
        subset=["suite", "instance", "policy"], keep="first")
    print(summary(frame))
    for suite, group in frame.groupby("suite", sort=False):
        print(f"\n### {suite}\n")
        print(instance_table(group))


if __name__ == "__main__":
    main()
