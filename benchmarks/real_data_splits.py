"""Train, dev and test costs side by side on a demand history (`inventory/real_data`).

Trains the scenario's default policy (or loads ``--run``), tunes the heuristics on windows of
the train block as `oprl bench` does, then scores every policy on the one-episode-per-series
replay of each block. The paired difference to the learned policy and its standard error are
over distinct series; a policy "beats" another when the difference exceeds two of them.

    python benchmarks/real_data_splits.py --path examples/demand/weekly_demand.csv
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from oprl import registry
from oprl.api import load_policy, train
from oprl.core import SPLITS
from oprl.evaluate import Entry, episode_values
from oprl.scoring import bench_settings, tune_heuristics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="examples/demand/weekly_demand.csv")
    parser.add_argument("--run", help="a finished run folder (default: train into --out)")
    parser.add_argument("--out", default="runs/real_data_splits")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenario = "inventory/real_data"
    spec = registry.get(scenario)
    if args.run is None:
        start = time.perf_counter()
        train(scenario, {"path": args.path}, steps=args.steps, out=args.out, seed=args.seed)
        print(f"trained in {time.perf_counter() - start:.0f} s -> {args.out}")
    net, checkpoint = load_policy(args.run or args.out, scenario)
    sim = spec.build(**checkpoint["config"]["params"])
    settings = bench_settings(spec, args.seed)
    entries = [Entry("hdpo-mlp", net, "learned")] + tune_heuristics(
        spec, sim, settings, sim.eval_horizon, sim.eval_warmup, torch.device("cpu"))
    values = {}
    for purpose in SPLITS:
        trace, warmup = sim.holdout(purpose)
        values[purpose] = {e.name: episode_values(sim, e.policy, trace, warmup) for e in entries}
    print(f"\n{scenario} on {args.path}: cost per store-period, one episode per series "
          f"({trace.batch} series); blocks {sim.blocks}")
    print(f"{'policy':32s}" + "".join(f"{p:>26s}" for p in SPLITS))
    for e in entries:
        cells = []
        for purpose in SPLITS:
            v, base = values[purpose][e.name], values[purpose]["hdpo-mlp"]
            diff = v - base
            se = float(diff.std() / math.sqrt(diff.numel()))
            cells.append(f"{float(v.mean()):9.2f} ({float(diff.mean()):+7.2f} ±{se:5.2f})")
        print(f"{e.name:32s}" + "".join(f"{c:>26s}" for c in cells))
    print("(in brackets: mean paired difference to hdpo-mlp ± its standard error over series)")


if __name__ == "__main__":
    main()
