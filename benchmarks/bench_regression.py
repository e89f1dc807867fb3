"""Same seeds, same numbers: `oprl bench` tables before and after a refactor.

Runs `oprl.api.benchmark` on six scenarios with short, fixed settings and either saves the tables
(``--save``) or compares them with the saved ones (the default), column by column: every policy
row, mean, standard error, gap and status must match; wall time is left out.

    python benchmarks/bench_regression.py --save      # on the commit before the change
    python benchmarks/bench_regression.py             # after it: exit 1 on any difference
    python benchmarks/bench_regression.py --only dispatch/manhattan

The short settings train a few steps only: they check that the code computes the same thing,
not that the policies are good (RESULTS has those runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from oprl import api

SAVED = Path(__file__).parent / "results" / "regression"
COMPARED = ["policy", "kind", "metric", "mean", "stderr", "reference", "reference_kind",
            "gap_pct", "status"]

# scenario -> (parameters, benchmark settings); seeds are api.benchmark's defaults
CASES: dict[str, tuple[dict, dict]] = {
    "inventory/one_store_lost": ({"lead_time": 4, "penalty": 9},
                                 {"train_steps": 40, "eval_episodes": 64, "eval_horizon": 1000}),
    "inventory/serial": ({}, {"train_steps": 30, "eval_episodes": 32, "eval_horizon": 600}),
    "dispatch/manhattan": ({}, {"train_steps": 2, "eval_episodes": 2}),
    "economy/one_step": ({}, {"train_steps": 40, "eval_episodes": 8}),
    "fishery/model1": ({}, {"train_steps": 20, "eval_episodes": 64}),
    "recsys/tabular": ({}, {"train_steps": 10, "eval_episodes": 512,
                            "train_hyper": {"dev_episodes": 4096, "dual_episodes": 1024}}),
}


def table(scenario: str) -> pd.DataFrame:
    params, settings = CASES[scenario]
    frame = api.benchmark(scenario, params, log=lambda m: None, **settings)
    return frame[COMPARED].reset_index(drop=True)


def file_of(scenario: str) -> Path:
    return SAVED / (scenario.replace("/", "__") + ".csv")


def differences(saved: pd.DataFrame, now: pd.DataFrame) -> list[str]:
    """Rows or cells that differ, as readable lines (floats compared as printed, 6 digits)."""
    if list(saved["policy"]) != list(now["policy"]):
        return [f"policies differ: {list(saved['policy'])} vs {list(now['policy'])}"]
    out = []
    for col in COMPARED:
        for i, (a, b) in enumerate(zip(saved[col], now[col])):
            if isinstance(a, float) or isinstance(b, float):
                same = (pd.isna(a) and pd.isna(b)) or f"{float(a):.6g}" == f"{float(b):.6g}"
            else:
                same = str(a) == str(b)
            if not same:
                out.append(f"{saved['policy'][i]}.{col}: {a!r} -> {b!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help="save the tables instead of comparing")
    parser.add_argument("--only", action="append", choices=sorted(CASES))
    args = parser.parse_args(argv)
    failed = 0
    for scenario in args.only or list(CASES):
        start = time.perf_counter()
        now = table(scenario)
        wall = time.perf_counter() - start
        if args.save:
            SAVED.mkdir(parents=True, exist_ok=True)
            now.to_csv(file_of(scenario), index=False, float_format="%.10g")
            print(f"{scenario:28s} saved ({wall:.0f} s)")
            continue
        diff = differences(pd.read_csv(file_of(scenario), keep_default_na=False,
                                       na_values=[""]), now)
        failed += bool(diff)
        print(f"{scenario:28s} {'DIFFERS' if diff else 'same'} ({wall:.0f} s)")
        for line in diff:
            print(f"    {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
