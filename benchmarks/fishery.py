"""Learned harvest policies vs tuned heuristics vs DP references on the four fishery models.

    python benchmarks/fishery.py [--models 1 3 4] [--steps 400] [--policy mlp] [--episodes 100]

For each model: train (HDPO, the scenario's defaults unless overridden) into ``runs/``, then
`oprl.api.benchmark` on ``--episodes`` evaluation episodes (the anchors use 100), the table to
``benchmarks/results/fishery_modelN.csv``, a figure of the learned harvest against the stock
beside the DP policy to ``benchmarks/results/fishery_modelN_policy.png``, and a line per model
comparing with the published numbers (Montealegre-Mora et al. 2023).

Every model's references include the certified LP bound (`solvers.fishery_bound`); with
``--milp`` model 1 also gets the tighter piecewise-hull MILP bound on the same episodes. Each
policy's gap to the tightest bound goes to ``benchmarks/results/fishery_bounds{tag}.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pandas as pd

from oprl import registry
from oprl.api import EVAL_SEED, benchmark, eval_window, load_policy, train
from oprl.evaluate import COLUMNS, format_table
from oprl.plots.fishery import policy_map
from oprl.runs import write_csv
from oprl.solvers.fishery import grid_dp_3d, single_species_dp
from oprl.solvers.fishery_bound import relaxation_bound

# published means over 100 episodes (Montealegre-Mora et al. 2023; docs/fishery.md)
ANCHORS = {
    1: {"stochastic DP": 5.70, "constant escapement": 5.32, "constant mortality": 1.93},
    3: {"constant mortality": 62.30, "constant escapement": 48.36, "PPO": 66.83, "PPO+GP": 68.75},
    4: {"constant mortality": 44.52, "constant escapement": 36.76, "PPO": 48.75, "PPO+GP": 49.44},
}


def plot_policy(model: int, run: Path, out: Path) -> None:
    """The learned policy's harvest against the stock beside the DP policy's."""
    net, checkpoint = load_policy(run)
    sim = registry.make(f"fishery/model{model}", **checkpoint["config"]["params"])
    horizon = sim.params.eval_horizon
    if model == 1:
        dp = single_species_dp(sim, horizon=horizon).policy
        others: tuple[float, ...] = ()
    else:
        dp = grid_dp_3d(sim, horizon=horizon).policy
        others = (0.5, 0.6, 0.6)
    policy_map({"learned": net.eval(), "DP": dp}, out, horizon=horizon, others=others,
               title=f"fishery/model{model}")


def milp_row(model: int, run: Path, episodes: int, seed: int, frame: pd.DataFrame) -> dict:
    """Model 1's piecewise-hull MILP bound on the benchmark's own evaluation episodes, as a
    row of the benchmark table (gap to the reference: difference of means on those episodes)."""
    _, checkpoint = load_policy(run)
    sim = registry.make(f"fishery/model{model}", **checkpoint["config"]["params"])
    horizon, _ = eval_window(sim, None, None)
    trace = sim.sample_trace(episodes, horizon, seed=seed + EVAL_SEED)
    result = relaxation_bound(sim, trace, breakpoints=(0.29,), time_limit=20.0)
    ref = frame[(frame["policy"] == frame["reference"]) & (frame["metric"] == frame["metric"].iloc[0])]
    base = float(ref["mean"].iloc[0])
    values = result.per_trace
    return {"scenario": sim.name, "policy": result.name, "kind": result.kind,
            "metric": frame["metric"].iloc[0], "mean": float(values.mean()),
            "stderr": float(values.std() / math.sqrt(len(values))),
            "reference": ref["policy"].iloc[0], "reference_kind": ref["kind"].iloc[0],
            "gap_pct": 100 * (float(values.mean()) - base) / abs(base), "status": result.status,
            "wall_s": result.wall_s, "gap_stderr_pct": float("nan")}


def gaps_to_bound(model: int, frame: pd.DataFrame) -> pd.DataFrame:
    """Each policy's and reference's mean against the tightest certified bound in the table
    (the lowest LP/MILP bound; model 1's hindsight DP is not certified: grid interpolation):
    the gap of means on the same episodes."""
    main = frame[frame["metric"] == frame["metric"].iloc[0]]
    bounds = main[(main["kind"] == "upper_bound") & main["policy"].str.contains("bound\\[")]
    bound = bounds.loc[bounds["mean"].idxmin()]
    out = main[["policy", "kind", "mean"]].copy()
    out.insert(0, "model", model)
    out["bound"] = bound["policy"]
    out["bound_mean"] = bound["mean"]
    out["gap_to_bound_pct"] = 100 * (out["mean"] - bound["mean"]) / abs(bound["mean"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--steps", type=int)
    ap.add_argument("--policy", default="mlp")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="training hyper-parameter, e.g. --set batch_size=256")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate a finished run already in --runs instead of training")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", default="", help="suffix of the CSV/PNG names (e.g. _2000eps)")
    ap.add_argument("--milp", action="store_true",
                    help="model 1: add the piecewise-hull MILP bound (seconds per episode)")
    args = ap.parse_args()
    hyper = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    results = Path(args.results)
    gaps = []
    for model in args.models:
        scenario = f"fishery/model{model}"
        run = Path(args.runs) / f"fishery-model{model}-{args.policy}-s{args.seed}"
        if not (args.reuse and (run / "checkpoint.pt").exists()):
            shutil.rmtree(run, ignore_errors=True)
            print(f"[fishery] training {args.policy} on {scenario} ...", flush=True)
            train(scenario, {}, policy=args.policy, steps=args.steps, out=run, seed=args.seed,
                  **hyper)
        frame = benchmark(scenario, run=run, eval_episodes=args.episodes, seed=args.seed,
                          log=lambda m: None)
        if args.milp and model == 1:
            frame = pd.concat([frame, pd.DataFrame([milp_row(model, run, args.episodes,
                                                             args.seed, frame)])],
                              ignore_index=True)
        gaps.append(gaps_to_bound(model, frame))
        write_csv(results / f"fishery_model{model}{args.tag}.csv", frame[COLUMNS])
        print(format_table(frame), flush=True)
        main_rows = frame[frame["metric"] == frame["metric"].iloc[0]].set_index("policy")["mean"]
        anchors = ANCHORS.get(model, {})
        print("published:", ", ".join(f"{k} {v}" for k, v in anchors.items()) or "none",
              f"| eval seed {args.seed + EVAL_SEED}", flush=True)
        print("measured: ", ", ".join(f"{k} {v:.2f}" for k, v in main_rows.items()), flush=True)
        plot_policy(model, run, results / f"fishery_model{model}{args.tag}_policy.png")
    table = pd.concat(gaps, ignore_index=True)
    write_csv(results / f"fishery_bounds{args.tag}.csv", table)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)


if __name__ == "__main__":
    main()
