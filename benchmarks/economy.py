"""The tax economy's anchors and the two-level RL planner against the exact optimum.

    python benchmarks/economy.py [--seeds 0 1 2] [--steps-learned 1500] [--steps-br 1000]
                                 [--jobs 3] [--tag _x] [--plot /tmp/economy_schedules.png]

1. Anchors on the 4-agent economy (free market, 2018 US federal, both Saez schedules, the
   bilevel-MILP optimum), integer and continuous hours -> benchmarks/results/economy_anchors.csv.
2. Two-level RL per seed, ``two_level`` (learned agents) and ``two_level_br`` (exact best
   response; ``--steps-br 0`` skips it), each schedule scored with the learned agents and with
   the exact best response -> benchmarks/results/economy_two_level.csv (``--tag``: suffix).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from oprl import registry
from oprl.api import train
from oprl.core import rollout
from oprl.policies import economy_schedules as sched
from oprl.runs import write_csv
from oprl.simulators import economy_response as resp
from oprl.simulators.economy import EconomySimulator
from oprl.solvers import economy as sol

RESULTS = Path(__file__).parent / "results"


def anchors(sim: EconomySimulator) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    skills = torch.tensor(sim.params.skills, dtype=torch.float64)
    cont = EconomySimulator(replace(sim.params, hours_step=0.0))
    start = time.perf_counter()
    saez, info = sched.saez_schedule(sim, skills)
    saez_s = time.perf_counter() - start
    start = time.perf_counter()
    binned, binned_info = sched.saez_binned_schedule(sim, skills)
    binned_s = time.perf_counter() - start
    milp = sol.optimal_schedule_milp(sim, skills)
    schedules = {"free market": (sched.free_market(sim), 0.0, "closed form"),
                 "us federal": (sched.us_federal(sim), 0.0, "2018 rates"),
                 "saez": (saez, saez_s, f"fixed point, elasticity {info['elasticity']:.2f}"),
                 "saez binned": (binned, binned_s,
                                 "AI Economist's binned estimator, fixed point, elasticity "
                                 f"{binned_info['elasticity']:.2f}, continuous rates"),
                 "milp optimum": (milp.rates, milp.wall_s, f"HiGHS {milp.status}, bound "
                                                           f"{milp.bound:.4f}")}
    rows = []
    for name, (rates, wall, note) in schedules.items():
        grid = resp.schedule_value(sim, skills[None], rates)
        smooth = resp.schedule_value(cont, skills[None], rates)
        rows.append({
            "schedule": name, "rates": [round(float(r), 4) for r in rates],
            "total": float(grid["objective"][0]), "per_capita": float(grid["objective"][0]) / 4,
            "equality": float(grid["equality"][0]), "productivity": float(grid["productivity"][0]),
            "hours": grid["hours"][0].tolist(), "total_continuous_hours": float(smooth["objective"][0]),
            "wall_s": wall, "note": note})
    frame = pd.DataFrame(rows)
    return frame, {name: [float(r) for r in s[0]] for name, s in schedules.items()}


def one_run(seed: int, algo: str, n: int) -> dict:
    """Train one two-level run and score its schedule with the learned agents and with the
    agents' exact best response."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train("economy/one_step", algo=algo, steps=n, seed=seed, out=Path(tmp) / "run")
    wall = time.perf_counter() - start
    sim = registry.make("economy/one_step")
    trace = sim.sample_trace(1, 2, seed=seed)
    policy = outcome.policy
    with torch.no_grad():
        obs = sim.observe(sim.reset(trace), 0, trace)
        rates = policy.planner(obs)[0].double()
        learned = float(sim.episode_metric(rollout(sim, policy, trace).rewards).mean())
    exact = resp.schedule_value(sim, obs["skills"], rates)
    row = {"algorithm": algo, "seed": seed, "steps": n, "best_step": outcome.best_step,
           "rates": [round(float(r), 2) for r in rates], "value_learned_agents": learned,
           "value_best_response": float(exact["objective"][0]),
           "hours_best_response": exact["hours"][0].tolist(), "train_s": wall}
    print(row, flush=True)
    return row


def two_level_runs(seeds: list[int], steps: dict[str, int], jobs: int = 1) -> pd.DataFrame:
    """Every (seed, algorithm) run; ``jobs`` > 1 runs them in that many processes."""
    tasks = [(seed, algo, n) for seed in seeds for algo, n in steps.items()]
    if jobs <= 1:
        return pd.DataFrame([one_run(*task) for task in tasks])
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        rows = list(pool.map(one_run, *zip(*tasks)))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps-learned", type=int, default=1500)
    parser.add_argument("--steps-br", type=int, default=1000)
    parser.add_argument("--skip-rl", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--plot", default=None, help="PNG of the schedules side by side")
    args = parser.parse_args()
    sim = registry.make("economy/one_step")
    table, schedules = anchors(sim)
    write_csv(RESULTS / f"economy_anchors{args.tag}.csv", table)
    print(table.to_string(index=False))
    optimum = float(table.loc[table["schedule"] == "milp optimum", "total"].iloc[0])
    saez = float(table.loc[table["schedule"] == "saez", "total"].iloc[0])
    binned = float(table.loc[table["schedule"] == "saez binned", "total"].iloc[0])
    values = dict(zip(table["schedule"], table["total"]))
    if not args.skip_rl:
        steps = {"two_level": args.steps_learned, "two_level_br": args.steps_br}
        runs = two_level_runs(args.seeds, {k: n for k, n in steps.items() if n > 0}, args.jobs)
        for col in ("value_learned_agents", "value_best_response"):
            runs[f"{col}_gap_pct"] = 100 * (runs[col] - optimum) / optimum
        runs["best_response_vs_saez_pct"] = 100 * (runs["value_best_response"] - saez) / saez
        runs["best_response_vs_saez_binned_pct"] = (100 * (runs["value_best_response"] - binned)
                                                    / binned)
        write_csv(RESULTS / f"economy_two_level{args.tag}.csv", runs)
        print(runs.drop(columns=["hours_best_response"]).to_string(index=False))
        for algo, group in runs.groupby("algorithm"):
            best = group.loc[group["value_best_response"].idxmax()]
            schedules[f"{algo} (seed {best['seed']})"] = best["rates"]
            values[f"{algo} (seed {best['seed']})"] = best["value_best_response"]
    if args.plot:
        from oprl.plots.economy import schedules_figure

        schedules_figure(schedules, sim.params.cutoffs, args.plot, values)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
