"""Dispatch benchmarks: matcher time per instance (batched shortest augmenting paths, batched
auction, scipy, OR-Tools) on real candidate lists of the default scenario, simulator throughput,
and OSPO training time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dispatch.py [--batch 64] [--quick]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dispatch.py --matching-only --no-auction --batch 128
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dispatch.py --matching-only --no-auction --batch 256 --minutes 5
    .venv/bin/python benchmarks/dispatch.py --matching-only --device cuda   # torch matchers on a GPU

Times are per instance, both wall clock and CPU time of this process (the machine is shared:
CPU time is the steadier of the two), the median of ``--repeats`` alternating runs; each
matcher is timed on the same instances.

Writes benchmarks/results/dispatch_matching.csv and dispatch_throughput.csv.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from oprl.core import rollout
from oprl.policies.dispatch import NearestGreedy, PairMLP, PickupAssignment
from oprl.simulators import matching as mt
from oprl.simulators.dispatch import manhattan

OUT = Path(__file__).parent / "results"


def instances(batch: int, minutes: list[int], seed: int = 0, chunk: int = 128):
    """Candidate lists and learned-style scores of the default scenario at given minutes,
    with the min-pickup assignment driving the episodes between them. Batches above
    ``chunk`` (the simulator refuses 256 episodes' candidate pairs at once) are built from
    chunks of episodes with seeds ``seed, seed + 1, ...``, their order lists padded alike."""
    if batch <= chunk:
        yield from _instances(batch, minutes, seed)
        return
    parts = [_instances(min(chunk, batch - start), minutes, seed + k)
             for k, start in enumerate(range(0, batch, chunk))]
    for pieces in zip(*parts):
        yield (pieces[0][0], _cat_orders([p[1] for p in pieces], 0.0),
               _cat_orders([p[2] for p in pieces], -1))


def _instances(batch: int, minutes: list[int], seed: int):
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


def _cat_orders(parts: list[torch.Tensor], fill: float) -> torch.Tensor:
    """``[B_k, M_k, K]`` tensors joined over the batch, each padded to the largest ``M``."""
    m = max(x.shape[1] for x in parts)
    return torch.cat([torch.nn.functional.pad(x, (0, 0, 0, m - x.shape[1]), value=fill)
                      for x in parts])


def timed(fn, *args, **kw):
    """Result, wall seconds and CPU seconds of this process (queued CUDA work is waited for
    before and after, so that wall time is the matcher's)."""
    _sync()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    _sync()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


SAP_BATCHED = partial(mt.sap_match, finish="batched")
SAP_ROUNDS = partial(mt.sap_match, finish="batched", augment="rounds")


TORCH_MATCHERS = ("sap", "sap_batched", "sap_rounds", "auction")


def matching(batch: int, minutes: list[int], auction: bool = True, repeats: int = 3,
             device: str = "cpu") -> pd.DataFrame:
    """Per instance times (median of ``repeats`` alternating runs; the auction, 20-80x slower,
    once) and whether every matcher equals OR-Tools' optimum. "sap" is `sap_match` as the
    simulator calls it (on a CPU its tail finished per sample by scipy; on a GPU the same as
    "sap_batched"), "sap_batched" the same matcher kept in torch to the end, "sap_rounds" the
    pure batched matcher with parallel rounds of one search per free row
    (``augment='rounds'``). The torch matchers run on ``device``; scipy and OR-Tools on the
    CPU. On a GPU read wall time: CPU time is then the host's."""
    rows = []
    n = manhattan().params.n_vehicles
    warm = [x.to(device) for x in next(instances(2, [0]))[1:]]
    for fn in (mt.sap_match, SAP_BATCHED, SAP_ROUNDS):  # first-call costs (CUDA kernels too)
        fn(*warm, n)
    for t, scores, vehicles in instances(batch, minutes):
        on_device = scores.to(device), vehicles.to(device)
        runs = {"ortools": lambda s=scores, v=vehicles: mt.ortools_match(s, v, n),
                "ortools_all_idle": lambda s=scores, v=vehicles: mt.ortools_match(
                    s, v, n, idle_arcs="all")}
        matchers = {"sap": mt.sap_match, "sap_batched": SAP_BATCHED, "sap_rounds": SAP_ROUNDS,
                    "scipy": mt.scipy_match}
        for name, fn in matchers.items():
            runs[name] = partial(fn, *(on_device if name in TORCH_MATCHERS
                                       else (scores, vehicles)), n)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        results = {}
        for _ in range(repeats):
            for name, fn in runs.items():
                results[name], *spent = timed(fn)
                times[name].append(tuple(spent))
        if auction:
            results["auction"], *spent = timed(mt.auction_match, *on_device, n)
            times["auction"] = [tuple(spent)]
        best = results["ortools"][1]
        row = {"minute": t, "batch": batch, "device": device, "orders": scores.shape[1],
               "repeats": repeats,
               "candidate_vehicles_per_instance": sum(
                   int(v[v >= 0].unique().numel()) for v in vehicles) / batch,
               "ortools_formulations_agree": bool(torch.allclose(
                   best, results["ortools_all_idle"][1]))}
        for name, spent in times.items():
            row[f"{name}_ms"] = 1e3 * statistics.median(w for w, _ in spent) / batch
            row[f"{name}_cpu_ms"] = 1e3 * statistics.median(c for _, c in spent) / batch
            if name in matchers or name == "auction":
                row[f"{name}_rounds"] = results[name].rounds
                row[f"{name}_equals_ortools"] = bool(torch.allclose(
                    results[name].value.cpu(), best))
        row["sap_finished_per_sample"] = results["sap"].finished_per_sample
        rows.append(row)
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def _rollout_row(sim, policy, trace, /, served: bool = False, **labels) -> dict:
    """Wall time, episode-minutes per second and mean reward of one rollout (and the mean
    served orders when ``served``: the rollout then also keeps its metrics, timed with it)."""
    with torch.no_grad():
        result, wall, _ = timed(rollout, sim, policy, trace, keep_metrics=served)
    batch, horizon = trace.batch, trace.horizon
    row = {**labels, "batch": batch, "horizon": horizon, "wall_s": wall,
           "episode_minutes_per_s": batch * horizon / wall,
           "vehicle_minutes_per_s": batch * horizon * sim.params.n_vehicles / wall,
           "mean_reward": float(sim.episode_metric(result.rewards).mean())}
    if served:
        row["served"] = float(sim.episode_metrics(result)["served_orders"].mean())
    print(row, flush=True)
    return row


def throughput(batch: int) -> pd.DataFrame:
    """Rollouts of each policy (and both exact matchers) on one 30-minute trace."""
    sim, sap_sim = manhattan(), manhattan(matcher="sap")
    trace = sim.sample_trace(batch, 30, seed=1)
    return pd.DataFrame([
        _rollout_row(on, pol, trace, policy=name)
        for name, pol, on in (("assign-pickup", PickupAssignment(sim), sim),
                              ("assign-pickup (sap matcher)", PickupAssignment(sap_sim), sap_sim),
                              ("greedy-nearest", NearestGreedy(sim), sim),
                              ("mlp", PairMLP(sim), sim))])


def pooling_throughput(batch: int) -> pd.DataFrame:
    """Per-step exact assignment (scipy matcher) at capacity 1, 2 and 3 on the same trace."""
    rows = []
    for capacity in (1, 2, 3):
        sim = manhattan(capacity=capacity, matcher="scipy")
        rows.append(_rollout_row(sim, PickupAssignment(sim), sim.sample_trace(batch, 30, seed=0),
                                 served=True, capacity=capacity))
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
    parser.add_argument("--matching-only", action="store_true")
    parser.add_argument("--no-auction", action="store_true", help="skip the (slow) auction")
    parser.add_argument("--no-matching", action="store_true", help="throughput/training only")
    parser.add_argument("--pooling", action="store_true",
                        help="only the simulator's throughput at capacity 1, 2, 3")
    parser.add_argument("--minutes", type=lambda v: [int(x) for x in v.split(",")],
                        help="matching instances at these minutes (default 0,5,10,20)")
    parser.add_argument("--device", default="cpu",
                        help="where the torch matchers run (cuda: matching tables only)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs per matcher; the median is reported")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.pooling:
        pooling_throughput(8).to_csv(OUT / "dispatch_pooling_throughput.csv", index=False)
        return
    minutes = args.minutes or ([0, 10] if args.quick else [0, 5, 10, 20])
    name = "dispatch_matching.csv" if args.batch == 64 else f"dispatch_matching_b{args.batch}.csv"
    if args.minutes:
        name = name.replace(".csv", "_m" + "_".join(map(str, minutes)) + ".csv")
    if args.device != "cpu":
        name = name.replace(".csv", f"_{args.device.split(':')[0]}.csv")
    if not args.no_matching:
        matching(args.batch, minutes, not args.no_auction, args.repeats, args.device).to_csv(
            OUT / name, index=False)
    if args.matching_only:
        return
    frames = [throughput(8)]
    if not args.quick:
        frames.append(training_time(3))
    pd.concat(frames, ignore_index=True).to_csv(OUT / "dispatch_throughput.csv", index=False)


if __name__ == "__main__":
    main()
