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
from oprl.result import SolverResult

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


def episode_scores(
    sim: Simulator, policy: Policy, trace: Trace, warmup: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """The scenario's metric for every episode of ``trace`` ``[B]`` and its secondary metrics
    (``sim.episode_metrics``, e.g. served orders or survival), without gradients."""
    secondary = sim.has_secondary_metrics
    was_training = getattr(policy, "training", None)
    if was_training:
        policy.eval()
    with torch.no_grad():
        result = rollout(sim, policy, trace, keep_metrics=secondary)
    if was_training:
        policy.train()
    main = sim.episode_metric(result.rewards, warmup).double().cpu()
    extras = {} if not secondary else {
        k: torch.as_tensor(v).double().cpu() for k, v in sim.episode_metrics(result, warmup).items()}
    return main, extras


def episode_values(sim: Simulator, policy: Policy, trace: Trace, warmup: int) -> Tensor:
    """The scenario's metric for every episode of ``trace`` ``[B]`` (no gradients)."""
    return episode_scores(sim, policy, trace, warmup)[0]


def _stderr(values: Tensor) -> float:
    n = values.numel()
    return float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


def _reference_values(result: SolverResult, sim: Simulator, trace: Trace, warmup: int,
                      scores=None):
    """Per-episode reference values, the episodes they cover (None: a scalar objective) and
    secondary metrics (simulated for a policy, else ``details['metrics']``)."""
    if result.policy is not None:
        if scores is None:
            values, extras = episode_scores(sim, result.policy, trace, warmup)
        else:
            values, extras = scores(result.name, result.policy)
        return values, torch.arange(trace.batch), extras
    extras = {k: torch.as_tensor(v).double().reshape(-1).cpu()
              for k, v in result.details.get("metrics", {}).items()}
    if result.per_trace is not None:
        episodes = result.details.get("episodes")
        episodes = torch.arange(len(result.per_trace)) if episodes is None else torch.as_tensor(episodes)
        return result.per_trace.double().cpu(), episodes, extras
    return None, None, extras


# How a status may begin for its result to serve as a reference (an allow-list: whatever a
# solver reports outside it, e.g. HiGHS' "Not Set", "Empty" or "Time limit reached", is unusable).
USABLE_STATUS = ("optimal", "grid-refined", "grid policy, feasible", "converged", "closed form",
                 "exact", "clark-scarf recursion", "pooled newsvendor", "balance relaxation")
# Words that mark a failure anywhere in a status (e.g. "optimal; maxTimeLimit" when several
# solves were joined); Pyomo's and HiGHS' non-optimal termination conditions included.
_FAILURE_WORDS = ("infeasible", "unbounded", "limit", "not converged", "not_converged", "error",
                  "fail", "abort", "interrupt", "unknown", "not solved", "not optimal",
                  "maxiterations", "minsteplength", "not set", "empty", "objective bound",
                  "bound on objective", "target", "licensing")
# Bounds on an expectation, not on each sample path (the dispatch fluid LP): reported beside
# the others, never the reference of per-trace gaps (`solvers.dispatch`).
EXPECTATION_ONLY = ("fluid",)


def failed_status(status: str) -> bool:
    """Whether a solver's own status says it did not finish: it does not begin with one of
    `USABLE_STATUS`, or it names a failure (time limit, infeasible, iteration limit, ...)."""
    text = status.strip().lower()
    return (not text.startswith(USABLE_STATUS)
            or any(word in text for word in _FAILURE_WORDS))


def usable_reference(result: SolverResult) -> bool:
    """A solved result with a finite value that bounds or solves each sample path."""
    text = result.status.strip().lower()
    return (not failed_status(result.status) and math.isfinite(result.objective)
            and not text.startswith(EXPECTATION_ONLY))


def choose_reference(references: list[SolverResult]) -> SolverResult | None:
    """The most trustworthy usable reference (`usable_reference`): best kind first, and among
    bounds of one kind the tightest (highest lower bound, lowest upper bound). None when no
    reference is usable: the table then has no gaps rather than gaps to a failed solve."""
    pool = [r for r in references if usable_reference(r)]
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
    precomputed: dict[str, tuple[Tensor, dict[str, Tensor]]] | None = None,
) -> pd.DataFrame:
    """One row per policy and per solver: mean and standard error of the metric over the
    episodes of ``trace``, and the paired gap in % to the chosen reference
    (``100 * (value - reference) / |reference|``: positive is a higher value, which is worse for
    a cost and better for a reward). Secondary metrics add one row each with their own
    ``metric`` name, gapped against the same reference where it reports them.

    ``precomputed`` maps a policy's (or a solver's policy's) name to its per-episode scores on
    ``trace`` (``episode_scores``' output) when they were simulated elsewhere, e.g. in one
    batched rollout over many scenario settings (`oprl.sweep`)."""
    metric = sim.metric.name
    precomputed = precomputed or {}

    def scores(name: str, policy: Policy) -> tuple[Tensor, dict[str, Tensor]]:
        if name in precomputed:
            return precomputed[name]
        return episode_scores(sim, policy, trace, warmup)

    rows = []
    ref = choose_reference(list(references))
    ref_values, ref_episodes, ref_extras = (None, None, {})
    if ref is not None:
        ref_values, ref_episodes, ref_extras = _reference_values(ref, sim, trace, warmup, scores)

    def gap(values: Tensor, base_values: Tensor | None, base: float) -> tuple[float, float]:
        """Paired gap (and its standard error) in % of per-episode ``values`` (all episodes of
        the trace) to the reference's ``base_values`` (or its scalar ``base``)."""
        if ref is None:
            return float("nan"), float("nan")
        if base_values is None:
            return _pct(float(values.mean()) - base, base), float("nan")
        if base_values.numel() == 1:  # a scalar secondary metric
            return _pct(float(values.mean()) - float(base_values), float(base_values)), float("nan")
        if values.numel() != trace.batch:  # another per-trace bound: compare on its episodes
            if values.numel() != base_values.numel():
                return float("nan"), float("nan")
            diff = values - base_values
        else:
            diff = values[ref_episodes] - base_values
        mean = float(base_values.mean())
        return _pct(float(diff.mean()), mean), _pct(_stderr(diff), mean)

    def row(name, kind, name_metric, mean, stderr, status, wall_s, gap_pct, gap_err=float("nan")):
        rows.append({
            "scenario": sim.name, "policy": name, "kind": kind, "metric": name_metric,
            "mean": mean, "stderr": stderr,
            "reference": ref.name if ref else "", "reference_kind": ref.kind if ref else "",
            "gap_pct": gap_pct, "status": status, "wall_s": wall_s, "gap_stderr_pct": gap_err,
        })

    def scored(name, kind, values, extras, status, wall_s, is_ref=False):
        if values is None:
            pass
        elif is_ref:
            row(name, kind, metric, float(values.mean()), _stderr(values), status, wall_s, 0.0, 0.0)
        else:
            row(name, kind, metric, float(values.mean()), _stderr(values), status, wall_s,
                *gap(values, ref_values, ref.objective if ref else float("nan")))
        for key, vals in extras.items():
            base = ref_extras.get(key)
            pct = (float("nan"), float("nan")) if base is None else gap(vals, base, float("nan"))
            row(name, kind, key, float(vals.mean()), _stderr(vals), status, wall_s, *pct)

    for result in references:
        # the reference's own values were computed above: never simulate its policy twice
        if result is ref:
            values, extras = ref_values, ref_extras
        else:
            values, _, extras = _reference_values(result, sim, trace, warmup, scores)
        # an optimal policy's exact value beside its simulated mean on these episodes; a
        # bound's own estimate (e.g. a grid DP's) is not an exact value of anything
        status = result.status if result.policy is None or result.kind != "optimal" else (
            f"{result.status}; exact {result.objective:.4f}")
        if values is None:  # a scalar objective
            pct = gap(torch.tensor([result.objective], dtype=torch.float64), ref_values,
                      ref.objective)[0] if ref is not None and ref_values is None else float("nan")
            row(result.name, result.kind, metric, result.objective, float("nan"), result.status,
                result.wall_s, 0.0 if result is ref else pct)
        scored(result.name, result.kind, values, extras, status, result.wall_s, result is ref)
    for entry in entries:
        scored(entry.name, entry.kind, *scores(entry.name, entry.policy),
               entry.status, entry.wall_s)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "gap_stderr_pct"])
    frame.attrs["minimise"] = sim.metric.minimise
    return frame


def format_table(frame: pd.DataFrame) -> str:
    """A compact fixed-width table for the terminal: the main metric, then one column per
    secondary metric (mean over episodes)."""
    if not len(frame):
        return "(no rows)"
    main_metric = frame["metric"].iloc[0]
    main = frame[frame["metric"] == main_metric]
    shown = main[["policy", "kind", "mean", "stderr", "gap_pct", "status", "wall_s"]].copy()
    shown["mean"] = shown["mean"].map(lambda v: f"{v:.4f}")
    shown["stderr"] = shown["stderr"].map(lambda v: "" if math.isnan(v) else f"{v:.4f}")
    err = main.get("gap_stderr_pct", pd.Series(float("nan"), index=main.index))
    shown["gap_pct"] = [
        "" if math.isnan(g) else f"{g:+.2f}%" + ("" if math.isnan(e) or e == 0 else f" ±{e:.2f}")
        for g, e in zip(main["gap_pct"], err)
    ]
    shown["wall_s"] = shown["wall_s"].map(lambda v: f"{v:.1f}")
    first = frame.iloc[0]
    minimise = frame.attrs.get("minimise")
    direction = "" if minimise is None else (" (lower is better)" if minimise
                                             else " (higher is better)")
    header = (f"{first['scenario']}  metric: {main_metric}{direction}  reference: "
              f"{first['reference']} ({first['reference_kind']})\n")
    text = header + shown.to_string(index=False)
    extra = frame[frame["metric"] != main_metric]
    if len(extra):
        table = extra.pivot_table(index="policy", columns="metric", values="mean", sort=False)
        text += "\n\nsecondary metrics (mean per episode)\n" + table.to_string(
            float_format=lambda v: f"{v:.4g}")
    return text
