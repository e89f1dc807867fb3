"""Dispatch benchmarks: matcher time per instance (batched auction, scipy, OR-Tools) on real
candidate lists of the default scenario, simulator throughput, and OSPO training time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dispatch.py [--batch 64] [--quick]

Writes benchmarks/results/dispatch_matching.csv and dispatch_throughput.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from oprl.core import rollout
from policies.dispatch import NearestGreedy, PairMLP, PickupAssignment
from simulators import matching as mt
from simulators.dispatch import manhattan

OUT = Path(__file__).parent / "results"


def instances(batch: int, minutes: list[int], seed: int = 0):
    """Candidate lists and learned-style scores of the default scenario at given minutes,
    with the min-pickup assignment driving the episodes between them."""
    sim = manhattan()
    trace = sim.sample_trace(batch, max(minutes) + 1, seed=seed)
    state = sim.reset(trace)
    torch.manual_seed(0)
    scorer, rule = PairMLP(sim), PickupAssignment(sim)
    with torch.no_grad():
        for t in range(max(minutes) + 1):
            obs = sim.observe(state, t, trace)
            if t in minutes:
                cand = sim.candidates(state, t)
                yield t, scorer(obs), torch.where(cand.pair_valid, cand.vehicle, -1)
            state, _, _ = sim.apply(state, sim.decide(state, rule(obs), t), t, trace)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def matching(batch: int, minutes: list[int]) -> pd.DataFrame:
    rows = []
    n = manhattan().params.n_vehicles
    for t, scores, vehicles in instances(batch, minutes):
        auction, s_a = timed(mt.auction_match, scores, vehicles, n)
        scipy, s_s = timed(mt.scipy_match, scores, vehicles, n)
        (_, best), s_o = timed(mt.ortools_match, scores, vehicles, n)
        rows.append({
            "minute": t, "batch": batch, "orders": scores.shape[1],
            "candidate_vehicles_per_instance": sum(
                int(v[v >= 0].unique().numel()) for v in vehicles) / batch,
            "auction_ms_per_instance": 1e3 * s_a / batch, "auction_rounds": auction.rounds,
            "scipy_ms_per_instance": 1e3 * s_s / batch,
            "ortools_ms_per_instance": 1e3 * s_o / batch,
            "auction_equals_ortools": bool(torch.allclose(auction.value, best)),
            "scipy_equals_ortools": bool(torch.allclose(scipy.value, best)),
        })
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def throughput(batch: int) -> pd.DataFrame:
    sim = manhattan()
    trace = sim.sample_trace(batch, 30, seed=1)
    rows = []
    for name, pol in (("assign-pickup", PickupAssignment(sim)), ("greedy-nearest", NearestGreedy(sim)),
                      ("mlp", PairMLP(sim))):
        with torch.no_grad():
            result, s = timed(rollout, sim, pol, trace)
        served = float(sim.episode_metric(result.rewards).mean())
        rows.append({"policy": name, "batch": batch, "horizon": 30, "wall_s": s,
                     "episode_minutes_per_s": batch * 30 / s,
                     "vehicle_minutes_per_s": batch * 30 * sim.params.n_vehicles / s,
                     "mean_reward": served})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def training_time(steps: int) -> pd.DataFrame:
    from oprl.algorithms.ospo import train_ospo
    from oprl.scenarios.dispatch import _TRAIN

    sim = manhattan()
    hyper = {k: v for k, v in _TRAIN.items() if k != "steps"}
    hyper["eval_every"] = steps
    torch.manual_seed(0)
    result = train_ospo(sim, PairMLP(sim), steps=steps, **hyper)
    row = {"algo": "ospo", "steps": steps, "wall_s": result.wall_s,
           "s_per_step_incl_dev": result.wall_s / steps, **{k: v for k, v in hyper.items()}}
    print(row, flush=True)
    return pd.DataFrame([row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="fewer instances, no training")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    minutes = [0, 10] if args.quick else [0, 5, 10, 20]
    matching(args.batch, minutes).to_csv(OUT / "dispatch_matching.csv", index=False)
    frames = [throughput(8)]
    if not args.quick:
        frames.append(training_time(3))
    pd.concat(frames, ignore_index=True).to_csv(OUT / "dispatch_throughput.csv", index=False)


if __name__ == "__main__":
    main()
