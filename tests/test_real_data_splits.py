"""A demand history split by date: training windows, dev selection and test evaluation each
see only their own block (plus an uncounted warm-up of earlier periods)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oprl import registry
from oprl.algorithms.hdpo import HDPO, HDPOSettings
from oprl.core import DataSplits, rollout
from oprl.policies.inventory_mlp import InventoryFeatures
from oprl.scoring import CellSettings, prepare_cell
from oprl.simulators.inventory_data import HistoryBlocks, real_data

PRODUCTS, PERIODS = 3, 40


def period_coded(tmp_path: Path) -> Path:
    """Demand = 100 * product + period + 1: every value says which period it came from."""
    lines = ["product,period,demand"] + [
        f"p{i},{t},{100 * i + t + 1}" for i in range(PRODUCTS) for t in range(PERIODS)]
    path = tmp_path / "coded.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def periods_of(demand: torch.Tensor) -> torch.Tensor:
    return (demand - 1) % 100


def test_blocks_are_consecutive_by_date_with_the_documented_defaults():
    blocks = HistoryBlocks.of(156, 0.2, 0.3, prefix=17)
    assert (blocks.bounds("train"), blocks.bounds("dev"), blocks.bounds("test")) == (
        (0, 78), (78, 109), (109, 156))  # 30% of 156 = 47 test, 20% = 31 dev
    assert blocks.episode("test") == (92, 156, 17)  # 17 earlier periods replayed uncounted
    with pytest.raises(ValueError, match="test_fraction"):
        HistoryBlocks.of(156, 0.2, 1.5, prefix=17)
    with pytest.raises(ValueError, match="no training periods"):
        HistoryBlocks.of(10, 0.5, 0.5, prefix=1)
    with pytest.raises(ValueError, match="purpose"):
        blocks.bounds("validation")


def test_training_windows_come_from_training_periods_only(tmp_path):
    sim = real_data(period_coded(tmp_path), lead_time=1, demand_lags=2, horizon=8, warmup=2,
                    dev_fraction=0.25, test_fraction=0.25)  # train 0..19, dev 20..29, test 30..39
    trace = sim.sample_trace(500, seed=0)
    seen = periods_of(trace["demand"])
    assert int(seen.max()) == 19 and int(seen.min()) == 0
    with pytest.raises(ValueError, match="horizon"):
        real_data(period_coded(tmp_path), horizon=21, dev_fraction=0.25, test_fraction=0.25)


def test_holdout_is_one_episode_per_series_counting_only_its_block(tmp_path):
    sim = real_data(period_coded(tmp_path), lead_time=1, demand_lags=2, horizon=8, warmup=2,
                    dev_fraction=0.25, test_fraction=0.25, eval_warmup=5)
    assert isinstance(sim, DataSplits)
    for purpose, (first, stop) in {"dev": (20, 30), "test": (30, 40)}.items():
        trace, warmup = sim.holdout(purpose)
        assert trace.batch == PRODUCTS and warmup == 5
        periods = periods_of(trace["demand"][..., 0])
        assert periods[:, warmup:].tolist() == [list(range(first, stop))] * PRODUCTS
        assert periods[:, :warmup].tolist() == [list(range(first - 5, first))] * PRODUCTS
        # each series is scaled by its training-period mean, never by dev or test demand
        level = torch.tensor([100.0 * i + 10.5 for i in range(PRODUCTS)])
        torch.testing.assert_close(trace["scale"][:, 0, 0], level)


def test_dev_selection_and_evaluation_read_their_own_blocks(tmp_path):
    path = period_coded(tmp_path)
    spec = registry.get("inventory/real_data")
    sim = spec.build(path=str(path), lead_time=1, demand_lags=2, horizon=8, warmup=2,
                     dev_fraction=0.25, test_fraction=0.25)
    net = spec.policy_builder("mlp")(sim)
    hdpo = HDPO(sim, net, HDPOSettings(steps=1), seed=0, device="cpu")
    assert int(periods_of(hdpo.dev_trace["demand"])[:, hdpo.dev_warmup:].min()) == 20
    assert int(periods_of(hdpo.dev_trace["demand"]).max()) == 29
    cell = prepare_cell(spec, sim, [], CellSettings(seed=0, eval_episodes=99, tune_episodes=4,
                                                   tune_horizon=1000), torch.device("cpu"))
    assert cell.trace.batch == PRODUCTS  # not the 99 episodes asked for
    assert int(periods_of(cell.trace["demand"])[:, cell.warmup:].min()) == 30


def test_features_scale_each_series_by_its_own_level(tmp_path):
    """A series ten times another, with a level ten times as high, looks the same to the
    policy's stock, pipeline and demand-lag features."""
    lines = ["product,period,demand"] + [
        f"{name},{t},{k * (3 + t % 4)}" for name, k in (("slow", 1), ("fast", 10))
        for t in range(40)]
    path = tmp_path / "twins.csv"
    path.write_text("\n".join(lines) + "\n")
    sim = real_data(path, lead_time=2, demand_lags=3, horizon=8, warmup=2)
    features = InventoryFeatures(sim)
    trace, _ = sim.holdout("test")
    seen = []
    level_column = sim.node_layout["mean_demand"]

    def five_levels(obs):  # order five times the series level: the fast twin orders 10x
        seen.append(features.nodes(obs))
        return 5.0 * obs["nodes"][:, :1, level_column].squeeze(-1)

    rollout(sim, five_levels, trace)
    for nodes in seen:
        quantities = torch.cat([nodes[:, 0, : 2 * sim.slots + 2], nodes[:, 0, -3:]], -1)
        torch.testing.assert_close(quantities[0], quantities[1])
