"""Learned policies vs heuristics vs references on the HDPO paper's inventory settings.

    python benchmarks/inventory_gaps.py --suite lost [--steps 600] [--out benchmarks/results/gaps.csv]
        [--shard K/N] [--reverse] [--where lead_time=15,20]

Suites: backlog (24 one-store instances), lost (16), serial (4), transshipment (8, GNN from
128 training scenarios), transshipment_policies and one_warehouse (GNN vs MLP at 128 and 8,192
training scenarios). One row per (instance, policy) is appended to
the CSV as soon as an instance finishes, so a killed run resumes where it stopped. The gap is
paired (same evaluation traces) against the reference the row names; "time to 1%" is the
training wall time at the first dev evaluation within 1% of the reference's expected value.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pandas as pd

from oprl.api import benchmark
from oprl.runs import write_csv


def suites() -> dict[str, list[tuple[str, dict, dict]]]:
    """(scenario, params, training overrides) per instance."""
    backlog = [("inventory/one_store_backlog", {"penalty": p, "lead_time": lt}, {})
               for p, lt in itertools.product([4, 9, 19, 39], [1, 4, 7, 10, 15, 20])]
    lost = [("inventory/one_store_lost", {"penalty": p, "lead_time": lt}, {})
            for p, lt in itertools.product([4, 9, 19, 39], [1, 2, 3, 4])]
    serial = [("inventory/serial", {"store_lead_time": lt}, {}) for lt in (1, 2, 3, 4)]
    trans = [("inventory/transshipment",
              {"n_stores": 3, "store_lead_time": lt, "penalty": p, "correlation": rho},
              {"policy": "gnn", "train_scenarios": 128})
             for lt, p, rho in itertools.product([2, 6], [4, 9], [0.0, 0.5])]
    # GNN vs MLP at 128 and 8,192 training scenarios on one transshipment instance
    trans_policies = [("inventory/transshipment",
                       {"n_stores": 3, "store_lead_time": 2, "penalty": 9, "correlation": 0.5},
                       {"policy": pol, "train_scenarios": k})
                      for pol in ("gnn", "mlp") for k in (128, 8192)]
    warehouse = [("inventory/one_warehouse", {"n_stores": n},
                  {"policy": pol, "train_scenarios": k})
                 for n in (3, 10) for pol in ("gnn", "mlp") for k in (128, 8192)]
    return {"backlog": backlog, "lost": lost, "serial": serial, "transshipment": trans,
            "transshipment_policies": trans_policies, "one_warehouse": warehouse}


def parse_where(clauses: list[str]) -> dict[str, set[str]]:
    """``["lead_time=15,20", "penalty=39"]`` -> ``{"lead_time": {"15", "20"}, "penalty": {"39"}}``."""
    wanted: dict[str, set[str]] = {}
    for clause in clauses:
        key, sep, values = clause.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"--where: KEY=V1[,V2...], got {clause!r}")
        wanted.setdefault(key, set()).update(values.split(","))
    return wanted


def matches(params: dict, wanted: dict[str, set[str]]) -> bool:
    """Whether every filtered parameter is present with one of its wanted values (compared as
    text, so 20 matches both 20 and 20.0 only when written alike)."""
    return all(key in params and str(params[key]) in values for key, values in wanted.items())


def time_to_gap(history: list[dict], reference: float, pct: float = 1.0) -> float:
    for h in history:
        if h["step"] > 0 and h["dev_cost"] <= reference * (1 + pct / 100):
            return h["wall_s"]
    return math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", required=True, choices=[*suites(), "all"])
    ap.add_argument("--steps", type=int)
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--horizon", type=int, help="evaluation periods (default: scenario's)")
    ap.add_argument("--limit", type=int, help="run at most this many instances")
    ap.add_argument("--where", action="append", default=[], metavar="KEY=V1[,V2]",
                    help="only instances whose parameter KEY is one of the values (repeatable)")
    ap.add_argument("--shard", default="0/1",
                    help="K/N: run every N-th instance from the K-th (parallel runs, one --out each)")
    ap.add_argument("--reverse", action="store_true",
                    help="last instance first (a second runner meeting a shard from its far end)")
    ap.add_argument("--out", default="benchmarks/results/inventory_gaps.csv")
    args = ap.parse_args()
    out = Path(args.out)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame()
    names = list(suites()) if args.suite == "all" else [args.suite]
    wanted = parse_where(args.where)
    instances = [(s, i) for n in names for i in suites()[n] for s in [n] if matches(i[1], wanted)]
    shard, shards = (int(x) for x in args.shard.split("/"))
    if not 0 <= shard < shards:
        raise SystemExit(f"--shard: K/N with 0 <= K < N, got {args.shard}")
    instances = instances[shard::shards][:: -1 if args.reverse else 1]
    if args.limit:
        instances = instances[: args.limit]
    for suite, (scenario, params, overrides) in instances:
        key = json.dumps({"scenario": scenario, **params, **overrides}, sort_keys=True)
        if len(done) and key in set(done["instance"]):
            continue
        overrides = dict(overrides)
        policy = overrides.pop("policy", None)
        frame = benchmark(scenario, params, policy=policy, train_steps=args.steps,
                          eval_episodes=args.episodes, eval_horizon=args.horizon,
                          train_hyper=overrides, log=lambda m: None)
        ref = frame[frame["policy"] == frame["reference"]]
        ref_value = float(ref["mean"].iloc[0]) if len(ref) else math.nan
        frame.insert(0, "instance", key)
        frame.insert(0, "suite", suite)
        frame["time_to_1pct_s"] = math.nan
        learned = frame["kind"] == "learned"
        frame.loc[learned, "time_to_1pct_s"] = time_to_gap(frame.attrs["history"], ref_value)
        done = pd.concat([done, frame], ignore_index=True)
        write_csv(out, done)
        row = frame[learned].iloc[0]
        print(f"{suite:14s} {json.dumps(params):60s} learned {row['mean']:.4f}  "
              f"gap {row['gap_pct']:+.2f}% vs {row['reference']} ({row['reference_kind']})  "
              f"train {row['wall_s']:.0f}s", flush=True)
    summarise(done)


def summarise(frame: pd.DataFrame) -> None:
    learned = frame[frame["kind"] == "learned"]
    for suite, group in learned.groupby("suite"):
        print(f"{suite}: {len(group)} instances, gap mean {group['gap_pct'].mean():+.3f}% "
              f"max {group['gap_pct'].max():+.3f}%")


if __name__ == "__main__":
    main()
