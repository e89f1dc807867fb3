"""The `oprl` command and the Python API end to end, on tiny budgets."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from oprl import api
from oprl.cli import main, parse_sets
from oprl.evaluate import COLUMNS

TINY = ["--set", "lead_time=1", "--episodes", "16", "--horizon", "2000"]


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_parse_sets_reads_numbers_lists_and_rejects_garbage():
    assert parse_sets(["a=4", "b=0.5", "c=[1, 2]", "d=true", "e=x.csv"]) == {
        "a": 4, "b": 0.5, "c": [1, 2], "d": True, "e": "x.csv"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["lead_time"])


def test_list_names_every_inventory_scenario(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("one_store_backlog", "one_store_lost", "serial", "transshipment",
                 "one_warehouse", "many_warehouses", "real_data"):
        assert f"inventory/{name}" in out


@pytest.mark.parametrize("argv, message", [
    (["bench", "inventory/nope"], "unknown 'inventory/nope'"),
    (["bench", "inventory/one_store_lost", "--set", "lead_time=-1"], "lead_time: must be >= 0"),
    (["bench", "inventory/one_store_lost", "--set", "lead_time=1.5"], "lead_time: expected a whole number"),
    (["solve", "inventory/one_store_lost", "--set", "leadtime=2"], "unknown parameter 'leadtime'"),
    (["bench", "inventory/real_data", "--set", "path=missing.csv"], "does not exist"),
    (["evaluate", "no/such/run"], "not a run folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_writes_the_csv_with_a_paired_optimal_reference(capsys, tmp_path):
    csv = tmp_path / "out.csv"
    code, out, _ = run_cli(capsys, "bench", "inventory/one_store_backlog", *TINY,
                           "--train-steps", "3", "--csv", str(csv), "--plot", str(tmp_path / "p.png"))
    assert code == 0 and "base_stock_optimum" in out
    frame = pd.read_csv(csv)
    assert list(frame.columns) == COLUMNS
    assert set(frame["kind"]) >= {"learned", "heuristic", "optimal"}
    assert (frame["reference_kind"] == "optimal").all()
    ref = frame[frame["policy"] == "base_stock_optimum"].iloc[0]
    assert ref["gap_pct"] == 0.0 and ref["status"].startswith("closed form")
    heuristics = frame[frame["kind"] == "heuristic"]
    assert (heuristics["gap_pct"] > -1.0).all()  # nothing beats the optimum beyond noise
    assert (tmp_path / "p.png").stat().st_size > 0
    learned = frame[frame["kind"] == "learned"].iloc[0]
    assert "whole-unit" not in learned["status"]  # Normal demand: continuous orders


def test_bench_says_when_learned_orders_are_whole_units(capsys, tmp_path):
    csv = tmp_path / "lost.csv"
    code, _, _ = run_cli(capsys, "bench", "inventory/one_store_lost", "--set", "lead_time=1",
                         "--episodes", "4", "--horizon", "200", "--train-steps", "2",
                         "--csv", str(csv))
    frame = pd.read_csv(csv)
    assert code == 0
    assert frame[frame["kind"] == "learned"]["status"].str.contains("whole-unit orders").all()


def test_train_resume_and_evaluate(capsys, tmp_path):
    out = tmp_path / "run"
    code, text, _ = run_cli(capsys, "train", "inventory/one_store_backlog", "--set",
                            "lead_time=1", "--steps", "2", "--out", str(out))
    assert code == 0 and (out / "checkpoint.pt").exists() and (out / "learning_curve.png").exists()
    code, _, err = run_cli(capsys, "train", "inventory/one_store_backlog", "--steps", "2",
                           "--out", str(out))
    assert code == 2 and "--resume" in err
    code, _, err = run_cli(capsys, "train", "inventory/serial", "--resume", "--out", str(out))
    assert code == 2 and "holds a run of 'inventory/one_store_backlog'" in err
    code, _, err = run_cli(capsys, "bench", "inventory/serial", "--run", str(out))
    assert code == 2 and "trained on 'inventory/one_store_backlog'" in err
    code, text, _ = run_cli(capsys, "evaluate", str(out), "--episodes", "4")
    assert code == 0 and "hdpo-mlp" in text


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    hyper = {"batch_size": 16, "eval_every": 2, "dev_scenarios": 8, "lr_final_fraction": 1.0}
    whole = api.train("inventory/one_store_backlog", {"lead_time": 1}, steps=4,
                      out=tmp_path / "whole", **hyper)
    api.train("inventory/one_store_backlog", {"lead_time": 1}, steps=2, out=tmp_path / "cut",
              **hyper)
    resumed = api.train("inventory/one_store_backlog", {"lead_time": 1}, steps=4,
                        out=tmp_path / "cut", resume=True)
    assert resumed.steps_done == 4
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["dev_cost"] for h in whole.history] == [h["dev_cost"] for h in resumed.history]


def test_hyper_settings_reach_the_trainer_and_unknown_ones_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "inventory/one_store_backlog", "--steps", "2",
                         "--hyper", "batch_size=8", "--hyper", "dev_scenarios=8",
                         "--hyper", "eval_every=2", "--out", str(out))
    assert code == 0
    assert json.loads((out / "config.json").read_text())["hyper"]["batch_size"] == 8
    bad = tmp_path / "bad"
    code, _, err = run_cli(capsys, "train", "inventory/one_store_backlog", "--steps", "2",
                           "--hyper", "batch_sise=8", "--out", str(bad))
    assert code == 2 and "hyper: hdpo has no setting 'batch_sise'" in err
    assert not bad.exists()
    code, _, err = run_cli(capsys, "train", "inventory/one_store_backlog", "--algo", "ppo",
                           "--out", str(bad))
    assert code == 2 and "algo: unknown 'ppo'" in err and not bad.exists()


def test_bench_on_a_demand_history_file_runs_end_to_end(capsys):
    """`oprl bench inventory/real_data` once crashed after training (AdaptiveNewsvendor read
    an attribute before setting it) and no test ran it."""
    history = Path(__file__).parent / "data" / "tiny_demand.csv"
    code, out, err = run_cli(capsys, "bench", "inventory/real_data", "--set", f"path={history}",
                           "--set", "lead_time=2", "--set", "demand_lags=4", "--set", "horizon=10",
                           "--set", "warmup=3", "--train-steps", "2", "--episodes", "5")
    assert code == 0
    # 30 periods: test block 21..29 after 9 uncounted periods (4 lags + 2 lead times + 1),
    # one episode per product whatever --episodes says
    assert "3 episodes x 18 periods (first 9 not counted)" in out + err
    for row in ("hdpo-mlp", "newsvendor (adaptive)", "base-stock", "perfect_information_lp"):
        assert row in out
