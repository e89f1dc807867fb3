"""The simulator contract: exogenous traces, deterministic dynamics, and `rollout`.

Every simulator draws all the randomness of a batch of episodes up front into a `Trace`
(tensors shaped ``[batch, horizon, ...]``).  Given a trace the dynamics are deterministic, so
the same trace can be replayed by the batched torch simulator, a solver computing a hindsight
bound, and the simpy event-driven twin: every comparison between them is paired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Observation = Mapping[str, Tensor]
State = dict[str, Tensor]
Policy = Callable[[Observation], Tensor]


class LazyDict(Mapping[str, Tensor]):
    """A read-only dict whose expensive entries are built on first access, then cached.

    Observations: a base-stock rule reads two small tensors, a neural policy the full feature
    tensors, and neither pays for what it does not read. Step metrics: built only when a
    rollout keeps them."""

    def __init__(self, values: dict[str, Tensor], builders: dict[str, Callable[[], Tensor]]) -> None:
        self._values = dict(values)
        self._builders = {k: f for k, f in builders.items() if k not in values}

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._values:
            if key not in self._builders:
                raise KeyError(key)
            self._values[key] = self._builders.pop(key)()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._values) + list(self._builders)

    def __len__(self) -> int:
        return len(self._values) + len(self._builders)

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._builders


@dataclass(frozen=True)
class Trace:
    """All exogenous randomness of ``batch`` episodes of ``horizon`` periods.

    ``data`` maps names to tensors whose first two dimensions are ``[batch, horizon]``.
    """

    data: Mapping[str, Tensor]
    seed: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("trace: data must hold at least one tensor")
        shapes = {name: tuple(t.shape[:2]) for name, t in self.data.items()}
        if len(set(shapes.values())) != 1 or any(t.dim() < 2 for t in self.data.values()):
            raise ValueError(f"trace: every tensor must be [batch, horizon, ...] alike, got {shapes}")

    def __getitem__(self, name: str) -> Tensor:
        return self.data[name]

    @property
    def batch(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def horizon(self) -> int:
        return next(iter(self.data.values())).shape[1]

    @property
    def device(self) -> torch.device:
        return next(iter(self.data.values())).device

    def to(self, device: str | torch.device) -> Trace:
        return Trace({k: v.to(device) for k, v in self.data.items()}, self.seed, self.meta)

    def select(self, index: slice | Tensor) -> Trace:
        """A sub-batch (e.g. one episode for a solver or the simpy twin)."""
        return Trace({k: v[index] for k, v in self.data.items()}, self.seed, self.meta)


@runtime_checkable
class Simulator(Protocol):
    """What every domain provides; see docs/architecture.md."""

    name: str

    def sample_trace(
        self, batch: int, horizon: int, *, seed: int, device: str | torch.device = "cpu"
    ) -> Trace: ...

    def reset(self, trace: Trace) -> State: ...

    def observe(self, state: State, t: int, trace: Trace) -> Observation: ...

    def step(
        self, state: State, action: Tensor, t: int, trace: Trace
    ) -> tuple[State, Tensor, dict[str, Tensor]]: ...


@dataclass(frozen=True)
class Rollout:
    """Per-period rewards ``[batch, horizon]`` and per-period metrics of one rollout."""

    rewards: Tensor
    metrics: dict[str, Tensor]

    def mean_reward(self, warmup: int = 0) -> Tensor:
        """Mean reward per period of each episode, ignoring the first ``warmup`` periods."""
        if not 0 <= warmup < self.rewards.shape[1]:
            raise ValueError(
                f"warmup: must lie in [0, horizon={self.rewards.shape[1]}), got {warmup}"
            )
        return self.rewards[:, warmup:].mean(dim=1)


def rollout(
    sim: Simulator,
    policy: Policy,
    trace: Trace,
    *,
    keep_metrics: bool = False,
) -> Rollout:
    """Run ``policy`` on every episode of ``trace`` at once; loops over time only.

    Gradients flow through the simulator when the caller has autograd enabled (HDPO).
    """
    state = sim.reset(trace)
    rewards: list[Tensor] = []
    metrics: dict[str, list[Tensor]] = {}
    for t in range(trace.horizon):
        obs = sim.observe(state, t, trace)
        action = policy(obs)
        state, reward, info = sim.step(state, action, t, trace)
        rewards.append(reward)
        if keep_metrics:
            for k, v in info.items():
                metrics.setdefault(k, []).append(v)
    return Rollout(
        rewards=torch.stack(rewards, dim=1),
        metrics={k: torch.stack(v, dim=1) for k, v in metrics.items()},
    )


def trace_size(batch: int, horizon: int | None, default_horizon: int) -> tuple[int, int]:
    """The validated ``(batch, horizon)`` of a trace to sample (``horizon=None``: the
    scenario's default); shared by every simulator's ``sample_trace``."""
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    horizon = default_horizon if horizon is None else int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon: must be >= 1, got {horizon}")
    return int(batch), horizon


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks CUDA when present; an unavailable CUDA request is a clear error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available; use 'cpu'")
    return dev
