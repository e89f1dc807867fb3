"""The Gymnasium adapter replays the simulator exactly and follows the vector-env API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from oprl.core import rollout  # noqa: E402
from oprl.gym import VectorEnv  # noqa: E402
from oprl.simulators import inventory as inv  # noqa: E402
from oprl.simulators.inventory_rules import BaseStock  # noqa: E402


def test_env_replays_the_batched_rollout_and_autoresets() -> None:
    sim = inv.one_store_lost(lead_time=2, penalty=9.0)
    env = VectorEnv(sim, num_envs=5, horizon=12, seed=3)
    policy = BaseStock(sim, torch.tensor([16.0]))
    expected = rollout(sim, policy, sim.sample_trace(5, 12, seed=3)).rewards.double().numpy()
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    rewards = []
    for t in range(12):
        action = policy({k: torch.as_tensor(v) for k, v in obs.items()}).numpy()
        assert env.action_space.contains(action.astype(np.float32))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert not terminated.any() and truncated.all() == (t == 11)
        assert info["cost"].shape == (5,)
    np.testing.assert_allclose(np.stack(rewards, 1), expected, rtol=1e-6)
    # next-step autoreset: the actions are ignored and a fresh trace starts
    obs, reward, terminated, truncated, _ = env.step(np.zeros((5, 1)))
    assert (reward == 0).all() and not truncated.any()
    assert np.allclose(obs["onhand"], 0.0)


def test_bad_actions_and_keys_are_clear_errors() -> None:
    sim = inv.serial()
    env = VectorEnv(sim, num_envs=2, horizon=4, observation_keys=("onhand", "inbound"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions: expected shape"):
        env.step(np.zeros((3, sim.network.n_edges)))
    with pytest.raises(ValueError, match="observation_keys"):
        VectorEnv(sim, num_envs=2, horizon=4, observation_keys=("stock",))
    with pytest.raises(ValueError, match="num_envs"):
        VectorEnv(sim, num_envs=0, horizon=4)


def test_simulators_without_a_fixed_action_shape_need_an_action_space() -> None:
    from oprl import make

    dispatch = make("dispatch/manhattan", n_vehicles=20, requests=40.0)
    assert dispatch.action_shape is None
    with pytest.raises(ValueError, match="action_space: required"):
        VectorEnv(dispatch, num_envs=2, horizon=4)


def test_declared_action_shape_and_bounds_make_the_space() -> None:
    from oprl import make

    fishery = make("fishery/model3")  # two harvested species, mortalities in [0, 1]
    env = VectorEnv(fishery, num_envs=2, horizon=4)
    assert env.single_action_space.shape == (2,)
    assert env.single_action_space.low.min() == 0.0 and env.single_action_space.high.max() == 1.0
