"""One scoring path for a scenario cell, shared by `oprl bench` and `oprl sweep`.

A cell is one scenario with fixed parameters and a seed. Scoring it means: tune the classical
heuristics on training traces, sample the evaluation trace, compute the solver references on that
very trace, and evaluate every policy on it (paired with the reference). `prepare_cell` does the
first three in that order (the order fixes the random streams), `score_cell` the last; a sweep
may hand `score_cell` scores it computed for many cells in one batched rollout. A recorded
history (`oprl.core.DataSplits`) tunes on windows of its train block and evaluates on its test
block, one episode per series.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from oprl import registry
from oprl.core import DataSplits, LeadTimes, Simulator, Trace
from oprl.evaluate import Entry, evaluate
from oprl.result import SolverResult

# seed offsets of the evaluation and heuristic-tuning traces: a cell with seed s evaluates on
# trace seed s + EVAL_SEED, disjoint from training (seeds s + step) and tuning traces
EVAL_SEED, TUNE_SEED = 1_234_567, 7_654_321


@dataclass(frozen=True)
class CellSettings:
    """How a cell is scored. ``heuristics`` / ``solvers``: None keeps every one the scenario
    provides, an empty tuple none, names a subset."""

    seed: int
    eval_episodes: int
    tune_episodes: int
    tune_horizon: int
    horizon: int | None = None
    warmup: int | None = None
    heuristics: tuple[str, ...] | None = None
    solvers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("eval_episodes", "tune_episodes", "tune_horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class PreparedCell:
    """A cell ready to evaluate: its policies, its evaluation trace and its references."""

    sim: Simulator
    trace: Trace
    warmup: int
    entries: list[Entry]
    references: list[SolverResult]

    def policies(self) -> dict[str, Callable]:
        """Every non-learned policy by name (tuned heuristics and the solvers' policies)."""
        found = {e.name: e.policy for e in self.entries if e.kind == "heuristic"}
        found.update({r.name: r.policy for r in self.references if r.policy is not None})
        return found


def bench_settings(scenario: registry.Scenario, seed: int, *, eval_episodes: int | None = None,
                   horizon: int | None = None, warmup: int | None = None) -> CellSettings:
    """The scenario's own benchmark settings (``Scenario.bench_defaults``) with overrides."""
    defaults = {"eval_episodes": 256, "tune_episodes": 64, "tune_horizon": 1000,
                **scenario.bench_defaults}
    episodes = defaults["eval_episodes"] if eval_episodes is None else eval_episodes
    return CellSettings(seed=seed, eval_episodes=episodes,  # validated by CellSettings
                        tune_episodes=int(defaults["tune_episodes"]),
                        tune_horizon=int(defaults["tune_horizon"]), horizon=horizon,
                        warmup=warmup)


def eval_window(sim: Simulator, horizon: int | None, warmup: int | None) -> tuple[int, int]:
    """Evaluation periods and uncounted warm-up; a shorter horizon keeps the scenario's
    warm-up fraction (e.g. 3,000 of 5,000)."""
    horizon = int(horizon or sim.eval_horizon)
    if horizon < 2:
        raise ValueError(f"horizon: evaluation needs at least 2 periods, got {horizon}")
    if warmup is None:
        warmup = sim.eval_warmup if horizon == sim.eval_horizon else int(
            horizon * sim.eval_warmup / sim.eval_horizon)
    if not 0 <= warmup < horizon:
        raise ValueError(f"eval_warmup: must lie in [0, {horizon}), got {warmup}")
    if isinstance(sim, LeadTimes) and horizon - warmup <= sim.max_lead_time:
        # no order placed in the counted periods arrives: every policy scores alike and a
        # reference would be reported as optimal on a window that measures nothing
        raise ValueError(f"horizon: an evaluation counting {horizon - warmup} period(s) "
                         f"({horizon} less a {warmup}-period warm-up) is not longer than the "
                         f"lead time ({sim.max_lead_time}); raise --horizon")
    return horizon, warmup


def tune_heuristics(scenario: registry.Scenario, sim: Simulator, settings: CellSettings,
                    horizon: int, warmup: int, device: torch.device) -> list[Entry]:
    """The scenario's heuristics fitted on training traces (seed + TUNE_SEED), never on the
    evaluation trace."""
    if settings.heuristics == ():
        return []
    start = time.perf_counter()
    if isinstance(sim, DataSplits):  # a recorded history: training windows of its train block
        horizon, warmup = sim.horizon, sim.warmup
    tune = sim.sample_trace(settings.tune_episodes, min(horizon, settings.tune_horizon),
                            seed=settings.seed + TUNE_SEED, device=device)
    fitted = registry.load(scenario.heuristics)(sim, tune, min(warmup, tune.horizon // 3))
    tune_s = time.perf_counter() - start
    return [Entry(name, policy, "heuristic", status, tune_s)
            for name, (policy, status) in fitted.items()
            if settings.heuristics is None or name in settings.heuristics]


def prepare_cell(scenario: registry.Scenario, sim: Simulator, learned: list[Entry],
                 settings: CellSettings, device: torch.device,
                 log: Callable[[str], None] = lambda message: None) -> PreparedCell:
    """Tune the heuristics, sample the evaluation trace, solve the references on it."""
    horizon, warmup = eval_window(sim, settings.horizon, settings.warmup)
    log("[oprl] tuning heuristics on training traces ...")
    entries = list(learned) + tune_heuristics(scenario, sim, settings, horizon, warmup, device)
    log("[oprl] solving references on the evaluation traces ...")
    if isinstance(sim, DataSplits):  # the test block: one episode per series, not resampled
        trace, warmup = sim.holdout("test", device)
        log(f"[oprl] evaluating on the history's test block: one episode per series "
            f"({trace.batch}), whatever --episodes says")
    else:
        trace = sim.sample_trace(settings.eval_episodes, horizon,
                                 seed=settings.seed + EVAL_SEED, device=device)
    references: list[SolverResult] = []
    if settings.solvers != ():
        references = [r for r in registry.load(scenario.references)(sim, trace, warmup)
                      if settings.solvers is None or r.name in settings.solvers]
    return PreparedCell(sim, trace, warmup, entries, references)


def score_cell(cell: PreparedCell,
               precomputed: dict[str, tuple[Tensor, dict[str, Tensor]]] | None = None
               ) -> pd.DataFrame:
    """Every policy and reference of ``cell`` on its evaluation trace: one table, paired gaps."""
    return evaluate(cell.sim, cell.trace, cell.warmup, cell.entries, cell.references,
                    precomputed=precomputed)
