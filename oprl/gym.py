"""A thin Gymnasium vector-env adapter over any oprl simulator (``pip install oprl[gym]``).

Users with their own RL library (Stable-Baselines3, CleanRL, TorchRL's Gym wrappers) drive a
batch of oprl episodes through the standard ``reset``/``step`` API; oprl's own trainers keep
calling the simulator directly, so the hot loop never pays for this bookkeeping.

One `VectorEnv` is one trace: ``num_envs`` episodes of ``horizon`` periods, all drawn up
front (docs/architecture.md), so every sub-environment ends at the same step. Observations are
the simulator's own tensors, one numpy array per key (a ``Dict`` space); rewards are the
simulator's per-period rewards (cost = -reward). Autoreset follows Gymnasium's default
``NEXT_STEP`` mode: the step after the last one ignores its actions and returns the first
observation of a fresh trace (seeded ``seed + episode``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:
    import gymnasium
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("oprl.gym needs gymnasium: pip install 'oprl[gym]'") from err

from oprl.core import Simulator, resolve_device


def default_action_space(sim: Simulator) -> spaces.Box | None:
    """The single-episode action space of simulators whose actions have a fixed shape
    (``sim.action_shape`` within ``sim.action_bounds``, e.g. inventory orders: one
    non-negative quantity per edge). ``None`` where the shape depends on the state
    (dispatch's candidate pairs): pass ``action_space`` then."""
    if sim.action_shape is None:
        return None
    low, high = sim.action_bounds
    return spaces.Box(low, high, tuple(sim.action_shape), np.float32)


class VectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` episodes of ``sim`` as a Gymnasium vector environment.

    ``observation_keys`` picks the observation entries to expose (default: every entry of
    the first observation); their shapes must not change within an episode."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        sim: Simulator,
        num_envs: int,
        horizon: int,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        observation_keys: tuple[str, ...] | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs: must be >= 1, got {num_envs}")
        if horizon < 1:
            raise ValueError(f"horizon: must be >= 1, got {horizon}")
        self.sim, self.num_envs, self.horizon = sim, int(num_envs), int(horizon)
        self.device = resolve_device(device)
        self._seed, self._episode = int(seed), 0
        single_action = action_space or default_action_space(sim)
        if single_action is None:
            raise ValueError(
                f"action_space: required for {sim.name!r} "
                "(its actions have no fixed shape oprl knows)"
            )
        self._start(self._seed)
        first = self.sim.observe(self._state, 0, self._trace)
        keys = tuple(first) if observation_keys is None else tuple(observation_keys)
        unknown = [k for k in keys if k not in first]
        if unknown:
            raise ValueError(f"observation_keys: unknown {unknown}; allowed {sorted(first)}")
        self.observation_keys = keys
        self._shapes = {k: tuple(first[k].shape[1:]) for k in keys}
        self.single_observation_space = spaces.Dict(
            {k: spaces.Box(-np.inf, np.inf, shape, np.float32) for k, shape in self._shapes.items()}
        )
        self.single_action_space = single_action
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, self.num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(single_action, self.num_envs)
        self._needs_reset = False

    def _start(self, seed: int) -> None:
        self._trace = self.sim.sample_trace(self.num_envs, self.horizon, seed=seed, device=self.device)
        self._state = self.sim.reset(self._trace)
        self._t = 0

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.sim.observe(self._state, self._t, self._trace)
        out = {}
        for k in self.observation_keys:
            value = obs[k]
            if tuple(value.shape[1:]) != self._shapes[k]:
                raise ValueError(f"observation {k!r}: shape changed from {self._shapes[k]} to "
                                 f"{tuple(value.shape[1:])}; pick fixed-shape observation_keys")
            out[k] = value.detach().to("cpu", torch.float32).numpy()
        return out

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A fresh trace (``seed`` restarts the episode count from it)."""
        if seed is not None:
            self._seed, self._episode = int(seed), 0
        else:
            self._episode += 1
        self._start(self._seed + self._episode)
        self._needs_reset = False
        return self._observation(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:  # NEXT_STEP autoreset: this step's actions are ignored
            obs, info = self.reset()
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), zeros, zeros.copy(), info
        action = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.device)
        expected = (self.num_envs, *self.single_action_space.shape)
        if tuple(action.shape) != expected:
            raise ValueError(f"actions: expected shape {expected}, got {tuple(action.shape)}")
        with torch.no_grad():
            self._state, reward, info = self.sim.step(self._state, action, self._t, self._trace)
        if reward.shape != (self.num_envs,):
            raise ValueError(f"reward: the simulator returned shape {tuple(reward.shape)}; the "
                             f"adapter needs one reward per episode ({self.num_envs},)")
        self._t += 1
        done = self._t >= self.horizon
        self._needs_reset = done
        truncated = np.full(self.num_envs, done)
        obs = self._observation()  # after the last period: the state the horizon ends in
        metrics = {k: v.detach().cpu().numpy() for k, v in info.items()
                   if isinstance(v, torch.Tensor) and v.shape[:1] == (self.num_envs,)}
        return (obs, reward.detach().cpu().double().numpy(), np.zeros(self.num_envs, dtype=bool),
                truncated, metrics)
