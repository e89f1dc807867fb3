"""Simulator throughput: store-periods per second of the batched torch simulator across batch
sizes, against a per-scenario pure-Python loop of the same dynamics (one episode at a time).

    python benchmarks/sim_throughput.py [--stores 50] [--periods 200] [--device cpu|cuda|all]

Both run the same network (one warehouse, many lost-sales stores) under the same base-stock
policy on the same traces; the script first checks that their costs agree. On a shared machine
the load drifts between measurements, so the loop and the batched simulator are timed in
alternation, ``--repeats`` times per batch size, and the ratio is the median of the paired
ratios (rates are the best of the repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from policy_throughput import python_loop_episode  # the same per-scenario loop, any network

from oprl.core import rollout
from oprl.policies.inventory_heuristics import newsvendor_levels
from oprl.simulators.inventory import one_warehouse
from oprl.simulators.inventory_rules import BaseStock


def torch_rate(sim, policy, trace) -> float:
    """Store-periods per second of one batched rollout of ``trace`` (on the trace's device)."""
    cuda = trace.device.type == "cuda"
    with torch.no_grad():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        rollout(sim, policy, trace)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return trace.batch * trace.horizon * len(sim.network.stores) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stores", type=int, default=50)
    ap.add_argument("--periods", type=int, default=200)
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--batches", default="1,16,256,4096")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sim = one_warehouse(n_stores=args.stores)
    levels = newsvendor_levels(sim)
    policy = BaseStock(sim, levels)

    # correctness first: the loop and the batched simulator agree on the same trace
    check = sim.sample_trace(4, args.periods, seed=0)
    batched = -rollout(sim, policy, check).rewards.sum(1)
    for b in range(check.batch):
        loop = python_loop_episode(sim, levels.tolist(), check["demand"][b].tolist())
        assert abs(loop - float(batched[b])) <= 1e-3 * abs(loop), (loop, float(batched[b]))

    episodes = 8
    trace = sim.sample_trace(episodes, args.periods, seed=1)
    demands = [trace["demand"][b].tolist() for b in range(episodes)]

    def loop_rate() -> float:
        start = time.perf_counter()
        for demand in demands:
            python_loop_episode(sim, levels.tolist(), demand)
        return episodes * args.periods * args.stores / (time.perf_counter() - start)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"one warehouse + {args.stores} stores, {args.periods} periods, base-stock policy; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{args.repeats} alternating repeats")
    print(f"{'device':8s} {'batch':>7s} {'store-periods/s':>16s} {'loop':>10s} "
          f"{'x loop (median)':>16s} {'min':>6s} {'max':>6s}")
    for device in devices:
        on_device = policy.to(device)
        for batch in [int(b) for b in args.batches.split(",")]:
            trace = sim.sample_trace(batch, args.periods, seed=1, device=device)
            with torch.no_grad():  # warm-up
                rollout(sim, on_device, trace.select(slice(0, min(batch, 8))))
            pairs = [(torch_rate(sim, on_device, trace), loop_rate()) for _ in range(args.repeats)]
            ratios = sorted(t / lp for t, lp in pairs)
            best_torch, best_loop = max(t for t, _ in pairs), max(lp for _, lp in pairs)
            print(f"{device:8s} {batch:7d} {best_torch:16.3e} {best_loop:10.3e} "
                  f"{statistics.median(ratios):16.1f} {ratios[0]:6.1f} {ratios[-1]:6.1f}")


if __name__ == "__main__":
    main()
