"""The shared training loop (selection, patience, resume) on a scripted toy algorithm, and the
settings dataclasses' checks of names, types and ranges (API and CLI)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oprl import api
from oprl.algorithms.hdpo import HDPOSettings
from oprl.algorithms.loop import Algorithm, Evaluation, run_loop, settings_class
from oprl.algorithms.ospo import GRPOSettings, train_grpo
from oprl.algorithms.settings import LoopSettings, parse_settings
from oprl.cli import main
from oprl.registry import SCENARIOS
from oprl.runs import through_checkpoint


class Scripted(Algorithm):
    """Step k sets the weight to k; the dev value after k steps is ``values[k]``."""

    train_columns = ("train_k",)

    def __init__(self, values: list[float]):
        self.policy = nn.Linear(1, 1, bias=False)
        self.values = values
        self.optimizer = torch.optim.SGD(self.policy.parameters(), lr=0.1)

    def optimizers(self):
        return {"policy": self.optimizer}

    def update(self, step: int, seed: int) -> dict[str, float]:
        with torch.no_grad():
            self.policy.weight.fill_(step + 1)
        return {"train_k": float(step + 1)}

    def evaluate(self, step: int) -> Evaluation:
        return Evaluation(self.values[step])


VALUES = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 0.5]


@pytest.mark.parametrize("maximise", [False, True])
def test_selection_follows_the_metric_direction(maximise: bool) -> None:
    s = LoopSettings(steps=6, eval_every=1)
    result = run_loop(Scripted(VALUES), s, metric="dev", maximise=maximise)
    best = (max if maximise else min)(range(7), key=lambda k: VALUES[k])
    assert result.best_step == best and result.best_value == VALUES[best]
    assert result.policy.weight.item() == best  # the kept weights are loaded
    assert [r["step"] for r in result.history] == list(range(7))
    assert math.isnan(result.history[0]["train_k"]) and result.history[2]["train_k"] == 2.0


def test_history_averages_training_columns_between_evaluations() -> None:
    result = run_loop(Scripted(VALUES), LoopSettings(steps=5, eval_every=2), metric="dev",
                      maximise=False)
    assert [r["step"] for r in result.history] == [0, 2, 4, 5]  # and always the last step
    assert [r["train_k"] for r in result.history[1:]] == [1.5, 3.5, 5.0]


def test_patience_stops_after_n_evaluations_without_relative_improvement() -> None:
    values = [10.0, 9.0, 8.96, 8.93, 8.92, 1.0, 1.0]  # 8.96 .. 8.92: under 1% better than 9
    kw = dict(metric="dev", maximise=False)
    strict = run_loop(Scripted(values), LoopSettings(steps=6, eval_every=1, patience=3), **kw)
    assert strict.steps_done == 6 and not strict.stopped_early  # each step improves a little
    loose = run_loop(Scripted(values), LoopSettings(steps=6, eval_every=1, patience=3,
                                                    min_improvement=0.01), **kw)
    assert loose.steps_done == 4 and loose.stopped_early and loose.best_step == 4
    off = run_loop(Scripted(values), LoopSettings(steps=6, eval_every=1), **kw)
    assert off.steps_done == 6 and off.best_step == 5


def test_provisional_and_unselectable_evaluations() -> None:
    class Staged(Scripted):
        def evaluate(self, step: int) -> Evaluation:
            # the initial weights are provisional; steps 1-2 may not be chosen
            return Evaluation(self.values[step], selectable=step not in (1, 2),
                              provisional=step == 0)

    result = run_loop(Staged([0.0, -5.0, -6.0, 3.0, 2.0]), LoopSettings(steps=4, eval_every=1),
                      metric="dev", maximise=False)
    assert result.best_step == 4  # step 0 was better but provisional; 1-2 not selectable


def test_resume_from_any_checkpoint_gives_the_same_history() -> None:
    s = LoopSettings(steps=6, eval_every=2)
    full = run_loop(Scripted(VALUES), s, metric="dev", maximise=False)
    saved = {}
    run_loop(Scripted(VALUES), s, metric="dev", maximise=False,
             callback=lambda step, p, o, h, state: saved.setdefault(step, through_checkpoint(state)))
    assert sorted(saved) == [2, 4, 6]
    resumed = run_loop(Scripted(VALUES), s, metric="dev", maximise=False, start_state=saved[4])
    drop = lambda rows: [repr({k: v for k, v in r.items() if k != "wall_s"}) for r in rows]  # noqa: E731
    assert drop(resumed.history) == drop(full.history)
    assert resumed.best_step == full.best_step
    assert resumed.policy.weight.item() == full.policy.weight.item()
    with pytest.raises(ValueError, match="start_state"):
        run_loop(Scripted(VALUES), s, metric="dev", maximise=False, start_state={"step": 2})


@pytest.mark.parametrize("name,value,expected", [
    ("batch_size", "abc", "batch_size: expected an integer, got 'abc'"),
    ("lr", [1, 2], "lr: expected a number, got [1, 2]"),
    ("batch_size", 2.5, "batch_size: expected an integer, got 2.5"),
    ("steps", True, "steps: expected an integer, got True"),
    ("lr", float("nan"), "lr: expected a number, got nan"),
    ("lr", "nan", "lr: expected a number, got 'nan'"),
    ("grad_clip", "off", "grad_clip: expected a number or null, got 'off'"),
    ("batch_size", 0, "batch_size: must be an integer >= 1, got 0"),
    ("lr_final_fraction", 1.5, "lr_final_fraction: must be a number in [0, 1], got 1.5"),
])
def test_wrong_types_and_ranges_name_the_setting(name, value, expected) -> None:
    with pytest.raises(ValueError) as err:
        parse_settings(HDPOSettings, {name: value}, owner="hdpo")
    assert str(err.value) == expected


def test_numbers_are_read_from_strings_and_whole_floats() -> None:
    s = parse_settings(HDPOSettings, {"steps": "1e3", "lr": "3e-4", "batch_size": 64.0,
                                      "grad_clip": None})
    assert (s.steps, s.lr, s.batch_size, s.grad_clip) == (1000, 3e-4, 64, None)
    assert isinstance(s.steps, int) and isinstance(s.batch_size, int)


def test_unknown_settings_list_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"hyper: hdpo has no setting 'batch_sise'; allowed: "
                                         r"steps, eval_every, patience, min_improvement, "):
        parse_settings(HDPOSettings, {"batch_sise": 8}, owner="hdpo")


def test_every_scenario_default_is_a_valid_setting() -> None:
    for spec in SCENARIOS.values():
        for algo in spec.algorithms:
            cls = settings_class(spec.trainer(algo))
            parse_settings(cls, spec.hyper(algo), owner=algo)  # raises on any mistake


def test_grpo_keeps_its_own_default_advantage() -> None:
    assert settings_class(train_grpo) is GRPOSettings and GRPOSettings().advantage == "grpo"


def test_api_refuses_bad_settings_before_writing_the_run(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="batch_size: expected an integer"):
        api.train("inventory/one_store_backlog", out=out, batch_size="abc")
    with pytest.raises(ValueError, match="steps: expected an integer"):
        api.train("inventory/one_store_backlog", out=out, steps=True)
    assert not out.exists()


def test_cli_hyper_errors_are_one_line(capsys, tmp_path) -> None:
    out = tmp_path / "run"
    for bad, says in (("batch_size=abc", "batch_size: expected an integer, got 'abc'"),
                      ("lr=[1,2]", "lr: expected a number, got [1, 2]"),
                      ("steps=true", "steps: expected an integer, got True")):
        with pytest.raises(SystemExit) as code:
            main(["train", "inventory/one_store_backlog", "--hyper", bad, "--out", str(out)])
        err = capsys.readouterr().err
        assert code.value.code == 2 and err.strip() == f"oprl: error: {says}"
    assert not out.exists()
