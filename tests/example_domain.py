"""The smallest oprl domain: a newsvendor, one independent order per period.

Everything a domain adds lives in this file (docs/architecture.md, "Adding a domain"): the
``Params`` dataclass, the `Simulator` subclass, a scenario factory, a policy, a heuristic,
a closed-form reference and the `Scenario`, registered through `oprl.registry.register`.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from oprl.core import Metric, Observation, Simulator, State, Trace, fixed, trace_size
from oprl.registry import Scenario, register
from oprl.result import SolverResult

NAME = "example/newsvendor"


@dataclass(frozen=True)
class NewsvendorParams:
    """Normal demand each period; ``underage`` per unit short, ``overage`` per unit left."""

    mean: float = 10.0
    std: float = 2.0
    underage: float = 4.0
    overage: float = 1.0
    horizon: int = 8
    warmup: int = 0
    eval_horizon: int = 64
    eval_warmup: int = 0
    name: str = fixed(default=NAME)

    def __post_init__(self) -> None:
        for key in ("std", "underage", "overage"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be > 0, got {getattr(self, key)}")


class NewsvendorSimulator(Simulator):
    """Order ``q`` each period, then demand ``D`` arrives; cost ``cu (D-q)+ + co (q-D)+``."""

    Params = NewsvendorParams
    metric = Metric("cost/period", minimise=True)
    action_shape = (1,)
    action_bounds = (0.0, math.inf)

    def __init__(self, params: NewsvendorParams) -> None:
        self.params, self.name = params, params.name

    def sample_trace(self, batch: int, horizon: int | None = None, *, seed: int,
                     device: str | torch.device = "cpu") -> Trace:
        batch, horizon = trace_size(batch, horizon, self.horizon)
        gen = torch.Generator().manual_seed(int(seed))
        demand = self.params.mean + self.params.std * torch.randn(batch, horizon, generator=gen)
        return Trace({"demand": demand.to(device)}, seed=seed)

    def reset(self, trace: Trace) -> State:
        return {"ones": torch.ones(trace.batch, 1, device=trace.device)}

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        return {"ones": state["ones"]}

    def step(self, state: State, action: Tensor, t: int, trace: Trace):
        order, demand = action.reshape(-1), trace["demand"][:, t]
        p = self.params
        cost = p.underage * (demand - order).clamp_min(0) + p.overage * (order - demand).clamp_min(0)
        return state, -cost, {}

    def episode_metric(self, rewards: Tensor, warmup: int) -> Tensor:
        return -rewards[:, warmup:].mean(dim=1)


def newsvendor(**kw) -> NewsvendorSimulator:
    """Scenario factory: every `NewsvendorParams` field is a parameter."""
    return NewsvendorSimulator(NewsvendorParams(**kw))


class ConstantOrder(nn.Module):
    """Orders the same quantity every period; learnable (starts at the mean demand)."""

    def __init__(self, sim: NewsvendorSimulator, order: float | None = None) -> None:
        super().__init__()
        self.order = nn.Parameter(torch.tensor(float(sim.params.mean if order is None else order)))

    def forward(self, obs: Observation) -> Tensor:
        return self.order * obs["ones"]


def heuristics(sim: NewsvendorSimulator, trace: Trace, warmup: int) -> dict:
    """Order the mean demand (ignores the cost asymmetry)."""
    return {"order the mean": (ConstantOrder(sim), "mean demand")}


def critical_fractile(p: NewsvendorParams) -> tuple[float, float]:
    """The optimal order ``mean + std z`` with ``Phi(z) = cu / (cu + co)`` and its expected
    cost ``(cu + co) std phi(z)``."""
    unit = statistics.NormalDist()
    z = unit.inv_cdf(p.underage / (p.underage + p.overage))
    return p.mean + p.std * z, (p.underage + p.overage) * p.std * unit.pdf(z)


def references(sim: NewsvendorSimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    start = time.perf_counter()
    order, cost = critical_fractile(sim.params)
    return [SolverResult("critical_fractile", cost, "optimal", "optimal (closed form)",
                         time.perf_counter() - start, policy=ConstantOrder(sim, order))]


SCENARIO = Scenario(
    NAME, f"{__name__}:newsvendor", "one order per period against Normal demand; optimum: "
    "critical fractile", f"{__name__}:heuristics", f"{__name__}:references",
    algorithm="hdpo", policy="constant",
    policies={"constant": f"{__name__}:ConstantOrder"},
    algorithms={"hdpo": "oprl.algorithms.hdpo:train_hdpo"},
    train_defaults={"steps": 100, "batch_size": 64, "lr": 0.1, "lr_final_fraction": 0.05,
                    "eval_every": 10, "dev_scenarios": 256},
    bench_defaults={"eval_episodes": 512, "tune_episodes": 8, "tune_horizon": 8},
)


def ensure_registered() -> Scenario:
    """Register the scenario once per process (`register` refuses a second time)."""
    from oprl.registry import SCENARIOS

    return SCENARIOS.get(NAME) or register(SCENARIO)
