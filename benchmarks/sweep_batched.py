"""Speed-up of evaluating many scenario settings in one batched rollout (what `oprl sweep`
does for cells that differ only in per-sample parameters) over one rollout per setting.

    OMP_NUM_THREADS=1 python benchmarks/sweep_batched.py [--device cpu] [--settings 8 32 128]

Settings: one-store backlog, lead time 1..8 x penalty grid; each setting evaluates the
closed-form newsvendor base-stock policy (fitted per setting, so every setting has its own
levels) on ``--episodes`` episodes of ``--horizon`` periods. Both paths see the same traces and
must give identical per-episode costs (checked). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from oprl.core import Trace
from oprl.evaluate import episode_scores
from oprl.policies.inventory_heuristics import newsvendor_levels
from oprl.simulators.inventory import align_simulators, one_store_backlog, stack_simulators
from oprl.simulators.inventory_rules import BaseStock
from oprl.sweep import stack_policies


def settings(n: int) -> list[dict]:
    grid = itertools.product(range(1, 9), [2.0, 4.0, 9.0, 19.0, 39.0, 4.5, 14.0, 29.0] * 64)
    return [{"lead_time": lt, "penalty": p + 0.01 * i} for i, (lt, p) in zip(range(n), grid)]


def measure(n: int, episodes: int, horizon: int, device: str) -> dict:
    sims = align_simulators([one_store_backlog(**s) for s in settings(n)])
    policies = [BaseStock(sim, newsvendor_levels(sim)).to(device) for sim in sims]
    traces = [sim.sample_trace(episodes, horizon, seed=i, device=device)
              for i, sim in enumerate(sims)]
    warmup = horizon // 4

    start = time.perf_counter()
    separate = [episode_scores(sim, pol, tr, warmup)[0] for sim, pol, tr in zip(sims, policies, traces)]
    one_by_one = time.perf_counter() - start

    start = time.perf_counter()
    stacked = stack_simulators(sims, episodes)
    big = Trace({k: torch.cat([t[k] for t in traces]) for k in traces[0].data})
    together = episode_scores(stacked, stack_policies(policies, episodes), big, warmup)[0]
    batched = time.perf_counter() - start
    diff = float((torch.cat(separate) - together).abs().max())
    return {"settings": n, "episodes": episodes, "horizon": horizon, "one_by_one_s": one_by_one,
            "batched_s": batched, "speedup": one_by_one / batched, "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=500)
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print("| settings | episodes each | periods | one rollout per setting (s) | one batched "
          "rollout (s) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for n in args.settings:
        r = measure(n, args.episodes, args.horizon, args.device)
        print(f"| {r['settings']} | {r['episodes']} | {r['horizon']} | {r['one_by_one_s']:.2f} | "
              f"{r['batched_s']:.2f} | {r['speedup']:.1f}x | {r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
