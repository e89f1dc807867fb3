"""Score policies and solver references on exactly the same traces -> a pandas table.

Every gap is paired: a policy and its reference are evaluated on the same episodes, so the
gap's standard error comes from per-episode differences, not from two independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from oprl.core import Policy, Simulator, Trace, rollout
from solvers.result import SolverResult

# the CSV columns; the DataFrame adds gap_stderr_pct (standard error of the paired gap)
COLUMNS = [
    "scenario", "policy", "kind", "metric", "mean", "stderr", "reference", "reference_kind",
    "gap_pct", "status", "wall_s",
]
# how trustworthy a reference is: an optimum beats a bound beats a best-known value
_RANK = {"optimal": 0, "lower_bound": 1, "upper_bound": 1, "best_known": 2}


@dataclass(frozen=True)
class Entry:
    """A policy to score, with how it came about (kind 'learned' or 'heuristic')."""

    name: str
    policy: Policy
    kind: str
    status: str = ""
    wall_s: float = 0.0


def episode_values(sim: Simulator, policy: Policy, trace: Trace, warmup: int) -> Tensor:
    """The scenario's metric for every episode of ``trace`` ``[B]`` (no gradients)."""
    with torch.no_grad():
        result = rollout(sim, policy, trace)
    return sim.episode_metric(result.rewards, warmup).double().cpu()


def _stderr(values: Tensor) -> float:
    n = values.numel()
    return float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


def _reference_values(result: SolverResult, sim: Simulator, trace: Trace, warmup: int):
    """Per-episode reference values and the episodes they cover (None: a scalar objective)."""
    if result.policy is not None:
        return episode_values(sim, result.policy, trace, warmup), torch.arange(trace.batch)
    if result.per_trace is not None:
        episodes = result.details.get("episodes")
        episodes = torch.arange(len(result.per_trace)) if episodes is None else torch.as_tensor(episodes)
        return result.per_trace.double().cpu(), episodes
    return None, None


def choose_reference(references: list[SolverResult]) -> SolverResult | None:
    """The most trustworthy reference: solved to its solver's satisfaction, best kind first,
    and among bounds of one kind the tightest (highest lower bound, lowest upper bound)."""
    usable = [r for r in references if r.status.split()[0] in ("optimal", "converged", "exact")]
    pool = usable or references
    if not pool:
        return None

    def order(r: SolverResult):
        tight = -r.objective if r.kind == "lower_bound" else r.objective
        return (_RANK[r.kind], tight if r.kind in ("lower_bound", "upper_bound") else 0.0)

    return min(pool, key=order)


def _pct(diff: float, base: float) -> float:
    """100 * diff / |base|; undefined (NaN) against a zero reference."""
    return 100.0 * diff / abs(base) if abs(base) > 1e-12 else float("nan")


def evaluate(
    sim: Simulator,
    trace: Trace,
    warmup: int,
    entries: list[Entry],
    references: list[SolverResult] = (),
) -> pd.DataFrame:
    """One row per policy and per solver: mean and standard error of the metric over the
    episodes of ``trace``, and the paired gap in % to the chosen reference."""
    metric = getattr(sim, "metric_name", "reward")
    rows = []
    ref = choose_reference(list(references))
    ref_values, ref_episodes = (None, None)
    if ref is not None:
        ref_values, ref_episodes = _reference_values(ref, sim, trace, warmup)

    def gap(values: Tensor) -> tuple[float, float]:
        """Paired gap (and its standard error) in % of per-episode ``values`` (all episodes of
        the trace) to the reference."""
        if ref is None:
            return float("nan"), float("nan")
        if ref_values is None:
            return _pct(float(values.mean()) - ref.objective, ref.objective), float("nan")
        diff = values[ref_episodes] - ref_values
        base = float(ref_values.mean())
        return _pct(float(diff.mean()), base), _pct(_stderr(diff), base)

    def row(name, kind, mean, stderr, status, wall_s, gap_pct, gap_err=float("nan")):
        rows.append({
            "scenario": sim.name, "policy": name, "kind": kind, "metric": metric,
            "mean": mean, "stderr": stderr,
            "reference": ref.name if ref else "", "reference_kind": ref.kind if ref else "",
            "gap_pct": gap_pct, "status": status, "wall_s": wall_s, "gap_stderr_pct": gap_err,
        })

    def scored(name, kind, values, status, wall_s):
        row(name, kind, float(values.mean()), _stderr(values), status, wall_s, *gap(values))

    for result in references:
        # the reference's own values were computed above: never simulate its policy twice
        values = ref_values if result is ref else _reference_values(result, sim, trace, warmup)[0]
        if values is None:
            pct = gap(torch.tensor([result.objective], dtype=torch.float64))[0]
            row(result.name, result.kind, result.objective, float("nan"), result.status,
                result.wall_s, pct if ref_values is None else float("nan"))
        elif result is ref:
            status = result.status if result.policy is None else (
                f"{result.status}; exact {result.objective:.4f}")
            row(result.name, result.kind, float(values.mean()), _stderr(values), status,
                result.wall_s, 0.0, 0.0)
        elif result.policy is not None:  # simulated on the traces; show its exact value too
            scored(result.name, result.kind, values,
                   f"{result.status}; exact {result.objective:.4f}", result.wall_s)
        else:  # a per-trace bound that is not the reference: gap on its own episodes
            comparable = ref_values is not None and len(values) == len(ref_episodes)
            pct = (_pct(float((values - ref_values).mean()), float(ref_values.mean()))
                   if comparable else float("nan"))
            row(result.name, result.kind, float(values.mean()), _stderr(values), result.status,
                result.wall_s, pct)
    for entry in entries:
        scored(entry.name, entry.kind, episode_values(sim, entry.policy, trace, warmup),
               entry.status, entry.wall_s)
    return pd.DataFrame(rows, columns=[*COLUMNS, "gap_stderr_pct"])


def format_table(frame: pd.DataFrame) -> str:
    """A compact fixed-width table for the terminal."""
    shown = frame[["policy", "kind", "mean", "stderr", "gap_pct", "status", "wall_s"]].copy()
    shown["mean"] = shown["mean"].map(lambda v: f"{v:.4f}")
    shown["stderr"] = shown["stderr"].map(lambda v: "" if math.isnan(v) else f"{v:.4f}")
    err = frame.get("gap_stderr_pct", pd.Series(float("nan"), index=frame.index))
    shown["gap_pct"] = [
        "" if math.isnan(g) else f"{g:+.2f}%" + ("" if math.isnan(e) or e == 0 else f" ±{e:.2f}")
        for g, e in zip(frame["gap_pct"], err)
    ]
    shown["wall_s"] = shown["wall_s"].map(lambda v: f"{v:.1f}")
    header = ""
    if len(frame):
        first = frame.iloc[0]
        header = (f"{first['scenario']}  metric: {first['metric']}  reference: "
                  f"{first['reference']} ({first['reference_kind']})\n")
    return header + shown.to_string(index=False)
