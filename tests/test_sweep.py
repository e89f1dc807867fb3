"""Sweeps: spec validation, batched == per-cell numbers, resume after a kill, Ray parity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from oprl.report import report
from oprl.sweep import load_spec, read_results, run_sweep

SPEC = {
    "scenario": "inventory/one_store_backlog",
    "grid": {"lead_time": [1, 3], "penalty": [4, 19]},
    "episodes": 8, "horizon": 120, "warmup": 40, "tune_episodes": 8, "tune_horizon": 120,
    "seeds": [0], "chunk": 4,
}
KEY = ["cell_id", "policy", "metric"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = KEY + ["mean", "stderr", "gap_pct", "reference", "reference_kind", "status"]
    return frame[cols].sort_values(KEY).reset_index(drop=True)


def _quiet(_msg: str) -> None:
    pass


@pytest.mark.parametrize("change, message", [
    ({"scenario": "inventory/nope"}, "scenario: unknown"),
    ({"grid": {"lead_tme": [1]}}, "spec.grid.lead_tme: unknown parameter"),
    ({"grid": {"lead_time": []}}, "empty list"),
    ({"grid": {}}, "empty grid"),
    ({"solvers": ["simplex_magic"]}, "spec.solvers: unknown 'simplex_magic'"),
    ({"heuristics": ["s-S"]}, "spec.heuristics: unknown 's-S'"),
    ({"seeds": []}, "spec.seeds"),
    ({"episodes": 0}, "spec.episodes: must be a positive integer"),
    ({"colour": "blue"}, "spec: unknown key 'colour'"),
    ({"fixed": {"penalty": 9}}, "also swept"),
    ({"sample": {"n": 3, "params": {"holding": {"normal": [0, 1]}}}}, "spec.sample.params.holding"),
    ({"train": {"algo": "ppo"}}, "algo: unknown 'ppo'"),
    ({"checkpoints": ["/nonexistent/run"]}, "not a run folder"),
])
def test_bad_specs_are_refused_before_any_work(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_sweep({**SPEC, **change}, tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()


def test_bad_parameter_value_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="lead_time"):
        run_sweep({**SPEC, "grid": {"lead_time": [2, -1]}}, tmp_path / "out", log=_quiet)


def test_cells_cover_grid_times_samples_times_seeds():
    spec = load_spec({**SPEC, "seeds": [0, 1],
                      "sample": {"n": 3, "seed": 5, "params": {"holding": {"uniform": [0.5, 2]}}}})
    assert len(spec.cells) == 2 * 2 * 3 * 2
    assert len({c.id for c in spec.cells}) == len(spec.cells)
    assert all(0.5 <= c.params["holding"] <= 2 for c in spec.cells)
    again = load_spec({**SPEC, "seeds": [0, 1],
                       "sample": {"n": 3, "seed": 5, "params": {"holding": {"uniform": [0.5, 2]}}}})
    assert [c.id for c in spec.cells] == [c.id for c in again.cells]  # stable ids


def test_one_batched_rollout_gives_the_per_cell_numbers(tmp_path):
    batched = run_sweep(SPEC, tmp_path / "a", log=_quiet)
    per_cell = run_sweep({**SPEC, "chunk": 1}, tmp_path / "b", log=_quiet)
    assert batched["cell_id"].nunique() == 4
    pd.testing.assert_frame_equal(_sorted(batched), _sorted(per_cell))
    # the backlog optimum is known in closed form: it is every cell's reference
    opt = batched[batched["policy"] == "base_stock_optimum"]
    assert len(opt) == 4 and (opt["reference_kind"] == "optimal").all()
    tuned = batched[batched["policy"] == "base-stock"]
    assert (tuned["gap_pct"] > -3).all()  # a tuned heuristic cannot beat the optimum by much


def test_another_spec_never_overwrites_results(tmp_path):
    out = tmp_path / "out"
    run_sweep({**SPEC, "grid": {"lead_time": [1], "penalty": [4]}}, out, log=_quiet)
    before = (out / "results.parquet").read_bytes()
    with pytest.raises(ValueError, match="another sweep spec"):
        run_sweep({**SPEC, "grid": {"lead_time": [2], "penalty": [4]}}, out, log=_quiet)
    assert (out / "results.parquet").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sweep folder"):
        run_sweep(SPEC, other, log=_quiet)


def test_killed_sweep_resumes_without_losing_or_repeating_cells(tmp_path):
    spec = {**SPEC, "grid": {"lead_time": [1, 2, 3], "penalty": [4, 9, 19]}, "chunk": 1,
            "horizon": 400, "warmup": 100}
    spec_file = tmp_path / "spec.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "oprl.cli", "sweep", str(spec_file),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.parquet"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and read_results(results)["cell_id"].nunique() >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_results(results)["cell_id"].nunique()
    assert 1 <= partial <= 9
    resumed = run_sweep(spec_file, out, log=_quiet)
    assert resumed["cell_id"].nunique() == 9
    assert not resumed.duplicated(KEY).any()
    whole = run_sweep(spec, tmp_path / "whole", log=_quiet)
    pd.testing.assert_frame_equal(_sorted(resumed), _sorted(whole))


def test_report_prints_tables_and_writes_figures(tmp_path):
    out = tmp_path / "out"
    run_sweep(SPEC, out, log=_quiet)
    text = report(out)
    assert "reference optimal in 4 cells" in text and "base-stock" in text
    assert (out / "report" / "gap_base_stock.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not a parameter of this sweep"):
        report(out, x="colour")


def test_unreachable_ray_address_is_a_clear_error(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'oprl[ray]')")
    with pytest.raises(ValueError, match="cannot reach a Ray cluster"):
        run_sweep(SPEC, tmp_path / "out", backend="ray", address="127.0.0.1:1", log=_quiet)
    assert not (tmp_path / "out").exists()


def test_ray_backend_gives_the_local_numbers(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'oprl[ray]')")
    spec = {**SPEC, "chunk": 2}
    local = run_sweep(spec, tmp_path / "local", log=_quiet)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path.cwd())}})
    try:
        remote = run_sweep(spec, tmp_path / "ray", backend="ray", log=_quiet)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_sorted(local), _sorted(remote))


def test_train_per_cell_scores_a_learned_policy_and_keeps_its_run(tmp_path):
    spec = {**SPEC, "grid": {"lead_time": [1, 2]}, "heuristics": ["base-stock"],
            "train": {"algo": "hdpo", "policy": "mlp", "steps": 4,
                      "hyper": {"batch_size": 16, "dev_scenarios": 16, "eval_every": 2,
                                "horizon": 40, "warmup": 10}}}
    frame = run_sweep(spec, tmp_path / "out", log=_quiet)
    learned = frame[frame["kind"] == "learned"]
    assert sorted(learned["policy"]) == ["hdpo-mlp", "hdpo-mlp"]
    assert learned["gap_pct"].notna().all()
    runs = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert runs == sorted(frame["cell_id"].unique())
    assert all((tmp_path / "out" / "runs" / r / "checkpoint.pt").exists() for r in runs)
