"""A sweep killed half-way resumes to exactly all its cells; Ray gives the same numbers.

    OMP_NUM_THREADS=1 python benchmarks/sweep_resume.py examples/sweeps/inventory_200.yaml \
        --out /tmp/sweep200 [--ray]

1. runs `oprl sweep SPEC` (local backend) in a subprocess and kills it (SIGKILL) once at
   least half of the cells are in results.parquet;
2. resumes the same command to completion and checks: every cell exactly once;
3. with --ray, runs the same spec on a local Ray instance into a second folder and compares
   every number.
Prints a table of what happened (times, cells) for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from oprl.sweep import read_results

KEY = ["cell_id", "policy", "metric"]
VALUES = ["mean", "stderr", "gap_pct", "reference", "status"]


def sweep_cmd(spec: str, out: Path, backend: str = "local") -> list[str]:
    return [sys.executable, "-m", "oprl.cli", "sweep", spec, "--out", str(out),
            "--backend", backend]


def cells_in(out: Path) -> int:
    path = out / "results.parquet"
    return read_results(path)["cell_id"].nunique() if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--out", default="/tmp/oprl_sweep_resume")
    parser.add_argument("--ray", action="store_true")
    args = parser.parse_args()
    from oprl.sweep import load_spec

    total = len(load_spec(args.spec).cells)
    out = Path(args.out)
    local, remote = out / "local", out / "ray"
    shutil.rmtree(out, ignore_errors=True)
    rows = []

    start = time.perf_counter()
    proc = subprocess.Popen(sweep_cmd(args.spec, local), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and cells_in(local) < total // 2:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = cells_in(local)
    rows.append(("local, killed with SIGKILL", killed_at, time.perf_counter() - start))

    start = time.perf_counter()
    subprocess.run(sweep_cmd(args.spec, local), check=True, stdout=subprocess.DEVNULL)
    frame = pd.read_parquet(local / "results.parquet")
    rows.append(("local, resumed to the end", frame["cell_id"].nunique(),
                 time.perf_counter() - start))
    duplicates = int(frame.duplicated(KEY).sum())

    same = "not run"
    if args.ray:
        start = time.perf_counter()
        subprocess.run(sweep_cmd(args.spec, remote, "ray"), check=True, stdout=subprocess.DEVNULL)
        other = pd.read_parquet(remote / "results.parquet")
        rows.append(("ray (local instance), from scratch", other["cell_id"].nunique(),
                     time.perf_counter() - start))
        a = frame[KEY + VALUES].sort_values(KEY).reset_index(drop=True)
        b = other[KEY + VALUES].sort_values(KEY).reset_index(drop=True)
        same = "identical" if a.equals(b) else "DIFFERENT"

    print(f"spec: {args.spec} ({total} cells)")
    print("| run | cells in results | wall s |\n|---|---|---|")
    for name, cells, wall in rows:
        print(f"| {name} | {cells} | {wall:.0f} |")
    print(f"\nduplicate rows after resume: {duplicates}; cells expected {total}, "
          f"got {frame['cell_id'].nunique()}; Ray vs local numbers: {same}")


if __name__ == "__main__":
    main()
