"""HDPO's pathwise gradient against REINFORCE's score-function gradient on the same simulator,
the same policy and the same trace batches: the spread of each estimator across independent
batches, and its variance along the true gradient direction (a large-batch HDPO gradient).

    python benchmarks/gradient_variance.py [--scenario inventory/one_store_backlog] [--batches 16]
"""

from __future__ import annotations

import argparse

import torch

import oprl
from oprl.algorithms.reinforce import gradient_variance, pathwise_gradient
from oprl.policies.inventory_mlp import InventoryMLP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="inventory/one_store_backlog")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    sim = oprl.make(args.scenario)
    torch.manual_seed(0)
    policy = InventoryMLP(sim)
    big = sim.sample_trace(4096, args.horizon, seed=99)
    direction = pathwise_gradient(sim, policy, big, args.warmup).detach()
    print(f"{args.scenario}: untrained MLP, {args.batches} batches of {args.batch_size} episodes "
          f"x {args.horizon} periods (first {args.warmup} not counted)")
    print(f"{'estimator':12s} {'total var':>12s} {'var along grad':>15s} {'rel. var':>10s} "
          f"{'cos(mean, grad)':>16s}")
    rows = {}
    for name in ("hdpo", "reinforce"):
        stats = gradient_variance(sim, policy, name, n_batches=args.batches,
                                  batch_size=args.batch_size, horizon=args.horizon,
                                  warmup=args.warmup, direction=direction)
        cos = float(torch.nn.functional.cosine_similarity(stats.mean, direction, dim=0))
        rows[name] = stats
        print(f"{name:12s} {stats.total_variance:12.4e} {stats.projection_variance:15.4e} "
              f"{stats.relative_variance:10.3g} {cos:16.3f}")
    ratio = rows["reinforce"].total_variance / rows["hdpo"].total_variance
    proj = rows["reinforce"].projection_variance / rows["hdpo"].projection_variance
    print(f"REINFORCE / HDPO variance: {ratio:.0f}x total, {proj:.0f}x along the gradient")


if __name__ == "__main__":
    main()
