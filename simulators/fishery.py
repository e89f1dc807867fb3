"""Batched, differentiable fishery models (Montealegre-Mora et al. 2023, "Pretty darn good control").

Each year: observe the stocks -> harvest a fraction (the action, a mortality in [0, 1]) of each
harvested species -> the stocks grow with multiplicative noise from the trace -> if any stock
is at or below the extinction threshold, the episode ends with a penalty ``-penalty / (t + 1)``.
Reward = harvested biomass (plus that penalty). Model 1 is one species with a predation
tipping point; models 2-4 are prey, competitor and predator (equations in docs/fishery.md).

Extinction has no pathwise gradient, so with autograd recording (HDPO) survival is a smooth
surrogate ``prod_i sigmoid((x_i - threshold) / temperature)``; evaluation applies the exact
rule (``relaxation`` forces either). ``menu=k > 0`` makes the action a choice among k
mortality levels for the constrained actor-critic, with ``survival_signal`` 'years' (default)
or 'episode'; why, and the surrogate's bias: docs/fishery.md, "What is relaxed".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from oprl.core import (
    Constrained,
    Metric,
    Observation,
    Rollout,
    Simulator,
    State,
    Trace,
    fixed,
    trace_size,
)

MODELS = ("single", "three")
RELAXATIONS = ("auto", "exact", "smooth")
SURVIVAL_SIGNALS = {"episode": "episode_survival", "years": "years_alive"}
SPECIES = {"single": ("X",), "three": ("X", "Y", "Z")}
# species-interaction graph of the three-species model: (source, target, kind)
# kinds: 0 competition (X <-> Y), 1 predation (Z eats X and Y)
INTERACTIONS = ((0, 1, 0), (2, 0, 1), (2, 1, 1))


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


@dataclass(frozen=True)
class FisheryParams:
    """Everything that defines a fishery scenario; validated on construction.

    ``r``/``K`` belong to X (the only species of model 1); ``r_y``/``k_y`` to the competitor.
    ``sigma`` is one noise scale per species (a scalar broadcasts). ``drift_years > 0`` makes
    r_X(t) = r * max(1 - t / drift_years, drift_floor) (model 4: 200 and 0.5).
    """

    model: str = fixed(default="single")
    harvested: tuple[int, ...] = fixed(default=(0,))
    r: float = 1.0
    K: float = 1.0
    beta: float = 0.23
    c: float = 0.1
    predator: float = 1.0  # H, the constant predator density of model 1
    r_y: float = 1.0
    k_y: float = 1.0
    c_xy: float = 0.1
    b: float = 0.1
    D: float = 1.1
    d_z: float = 0.1
    alpha: float = 1.0
    sigma: float | tuple[float, ...] = 0.1
    drift_years: float = 0.0
    drift_floor: float = 0.5
    threshold: float = 0.05
    penalty: float = 100.0
    initial: tuple[float, ...] = (0.7,)
    init_sigma: float = 0.02
    max_stock: float = 10.0  # stocks are clipped here: keeps a runaway policy finite
    temperature: float = 0.005
    relaxation: str = "auto"
    menu: int = 0  # > 0: discrete mortality levels per harvested species (constrained AC)
    survival_target: float = 0.9  # the constrained AC's minimum share of surviving episodes
    survival_signal: str = "years"  # the constrained AC's signal: SURVIVAL_SIGNALS
    horizon: int = 200
    warmup: int = 0
    eval_horizon: int = 200
    eval_warmup: int = 0
    name: str = fixed(default="fishery/custom")

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model: {self.model!r}; allowed {MODELS}")
        n = len(SPECIES[self.model])
        for name in ("r", "K", "beta", "c", "predator", "r_y", "k_y", "c_xy", "b", "D", "d_z",
                     "alpha", "drift_years", "drift_floor", "threshold", "penalty", "init_sigma",
                     "max_stock", "temperature"):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        for name in ("r", "beta", "predator", "r_y", "c_xy", "b", "D", "d_z", "alpha",
                     "drift_years", "drift_floor", "penalty", "init_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("K", "k_y", "c", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 < self.threshold < self.K:
            raise ValueError(f"threshold: must lie in (0, K={self.K}), got {self.threshold}")
        if self.max_stock <= self.K:
            raise ValueError(f"max_stock: must exceed K={self.K}, got {self.max_stock}")
        sigma = self.sigma if isinstance(self.sigma, (tuple, list)) else (self.sigma,) * n
        sigma = tuple(_finite("sigma", s) for s in sigma)
        if len(sigma) != n or any(s < 0 for s in sigma):
            raise ValueError(f"sigma: {n} non-negative noise scale(s) required, got {self.sigma}")
        object.__setattr__(self, "sigma", sigma)
        initial = tuple(_finite("initial", x) for x in self.initial)
        if len(initial) != n or any(x <= self.threshold for x in initial):
            raise ValueError(
                f"initial: {n} starting stock(s) above the threshold {self.threshold} required, "
                f"got {self.initial}"
            )
        object.__setattr__(self, "initial", initial)
        harvested = tuple(int(i) for i in self.harvested)
        if not harvested or len(set(harvested)) != len(harvested) or not all(
            0 <= i < n for i in harvested
        ):
            raise ValueError(f"harvested: distinct species indices in [0, {n}) required, "
                             f"got {self.harvested}")
        object.__setattr__(self, "harvested", harvested)
        if int(self.menu) < 0 or int(self.menu) == 1:
            raise ValueError(f"menu: 0 (continuous) or >= 2 levels required, got {self.menu}")
        object.__setattr__(self, "menu", int(self.menu))
        if not 0 < _finite("survival_target", self.survival_target) <= 1:
            raise ValueError(f"survival_target: must lie in (0, 1], got {self.survival_target}")
        if self.survival_signal not in SURVIVAL_SIGNALS:
            raise ValueError(f"survival_signal: {self.survival_signal!r}; allowed "
                             f"{tuple(SURVIVAL_SIGNALS)}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation: {self.relaxation!r}; allowed {RELAXATIONS}")
        for name in ("horizon", "eval_horizon"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup < self.horizon:
            raise ValueError(f"warmup: must lie in [0, horizon={self.horizon})")
        if not 0 <= self.eval_warmup < self.eval_horizon:
            raise ValueError(f"eval_warmup: must lie in [0, eval_horizon={self.eval_horizon})")

    @property
    def n_species(self) -> int:
        return len(SPECIES[self.model])

    def r_x(self, t: int) -> float:
        """Growth rate of X in year ``t`` (drifts down in model 4)."""
        if self.drift_years <= 0:
            return self.r
        return self.r * max(1.0 - t / self.drift_years, self.drift_floor)


def growth(p: FisheryParams, pop: Tensor, t: int, eps: Tensor | None = None) -> Tensor:
    """Next year's stocks ``[..., S]`` from post-harvest stocks ``pop`` and standard normal
    noise ``eps`` (None: the deterministic skeleton). Clipped to [0, max_stock]."""
    sigma = pop.new_tensor(p.sigma)
    noise = 0.0 if eps is None else sigma * pop * eps
    if p.model == "single":
        x = pop
        nxt = x + p.r * x * (1 - x / p.K) - p.beta * p.predator * x**2 / (p.c**2 + x**2) + noise
        return nxt.clamp(0.0, p.max_stock)
    x, y, z = pop.unbind(-1)
    c2 = p.c**2
    gx = p.r_x(t) * x * (1 - x / p.K) - p.beta * z * x**2 / (c2 + x**2) - p.c_xy * x * y
    gy = p.r_y * y * (1 - y / p.k_y) - p.D * p.beta * z * y**2 / (c2 + y**2) - p.c_xy * x * y
    gz = p.alpha * z * (p.b * (x + p.D * y) - p.d_z)
    drift = torch.stack([gx, gy, gz], dim=-1)
    if eps is not None:
        noise = noise * pop.new_tensor([1.0, 1.0, p.alpha])
    return (pop + drift + noise).clamp(0.0, p.max_stock)


def survival_probability(p: FisheryParams, pop: Tensor, t: int) -> Tensor:
    """P(every stock stays above the threshold after this year's growth) from post-harvest
    stocks ``pop [..., S]``, exactly: each next stock is normal given ``pop`` (independent
    noise per species) and the clip at ``max_stock > threshold`` does not change the event."""
    mean = growth(p, pop, t)
    scale = pop.new_tensor(p.sigma) * (pop.new_tensor([1.0, 1.0, p.alpha])
                                       if p.model == "three" else 1.0)
    sd = pop * scale
    z = (mean - p.threshold) / sd.clamp_min(1e-12)
    per_species = torch.where(sd > 0, torch.special.ndtr(z), (mean > p.threshold).to(pop.dtype))
    return per_species.prod(-1)


def extinction_penalty(p: FisheryParams, t: int) -> float:
    """Reward added in the year ``t`` (0-based) a stock falls to the threshold."""
    return -p.penalty / (t + 1)


class FisherySimulator(Simulator, Constrained):
    """Batched fishery; see the module docstring for the order of events."""

    Params = FisheryParams
    metric = Metric("reward/episode")
    action_bounds = (0.0, 1.0)  # mortalities, or probabilities over the menu

    def __init__(self, params: FisheryParams) -> None:
        self.params = params
        self.name = params.name
        self.n_species = params.n_species
        self.harvested = torch.tensor(params.harvested, dtype=torch.long)
        self.n_actions = len(params.harvested)
        self.choices = menu_levels(params.menu, self.n_actions) if params.menu else None
        self.action_shape = (self.n_actions,) if self.choices is None else (len(self.choices),)

    @property
    def constraint_signals(self) -> tuple[str, ...]:
        return (SURVIVAL_SIGNALS[self.params.survival_signal],)

    @property
    def constraint_thresholds(self) -> tuple[float, ...]:
        return (self.params.survival_target,)

    # -- contract -------------------------------------------------------------------------
    def graph(self):
        """Species-interaction graph (competition, predation); model 1 has one self-loop."""
        from torch_geometric.data import Data

        index, kind = species_edges(self.params)
        return Data(edge_index=index, edge_kind=kind, num_nodes=self.n_species)

    def sample_trace(
        self, batch: int, horizon: int | None = None, *, seed: int, device="cpu"
    ) -> Trace:
        """``eps``: the growth noise ``[B, T, S]``; ``init``: standard normals ``[B, T, S]`` of
        which year 0 perturbs the starting stocks (the rest is unused)."""
        batch, horizon = trace_size(batch, horizon, self.params.horizon)
        gen = torch.Generator().manual_seed(int(seed))
        s = self.n_species
        eps = torch.randn(batch, horizon, s, generator=gen)
        init = torch.zeros(batch, horizon, s)
        init[:, 0] = torch.randn(batch, s, generator=gen)
        data = {"eps": eps.to(device), "init": init.to(device)}
        if self.params.menu:
            data["u"] = torch.rand(batch, horizon, generator=gen).to(device)
        return Trace(data, seed=seed)

    def check_trace(self, trace: Trace) -> None:
        for key in ("eps", "init"):
            if key not in trace.data:
                raise ValueError(f"trace.{key}: required [batch, horizon, {self.n_species}]; "
                                 f"trace holds {sorted(trace.data)}")
            x = trace[key]
            if x.dim() != 3 or x.shape[-1] != self.n_species:
                raise ValueError(f"trace.{key}: expected [batch, horizon, {self.n_species}], "
                                 f"got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError(f"trace.{key}: must be finite (no NaN or inf)")

    def initial_stocks(self, trace: Trace) -> Tensor:
        p = self.params
        start = trace["init"].new_tensor(p.initial)
        return (start + p.init_sigma * trace["init"][:, 0]).clamp(p.threshold + 1e-3, p.max_stock)

    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        return {"pop": self.initial_stocks(trace),
                "alive": torch.ones(trace.batch, device=trace.device)}

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """Stocks ``[B, S]``, the year as a fraction of the horizon and the years left
        (this one included) ``[B, 1]``, alive ``[B, 1]``."""
        b = state["pop"].shape[0]
        dev = state["pop"].device
        frac = torch.full((b, 1), t / trace.horizon, device=dev)
        left = torch.full((b, 1), float(trace.horizon - t), device=dev)
        return {"pop": state["pop"], "time": frac, "years_left": left,
                "alive": state["alive"].unsqueeze(-1)}

    def smooth(self, action: Tensor) -> bool:
        mode = self.params.relaxation
        if mode != "auto":
            return mode == "smooth"
        return torch.is_grad_enabled() and action.requires_grad

    def draw(self, probs: Tensor, t: int, trace: Trace) -> tuple[Tensor, Tensor]:
        """Menu mode: the executed choice ``[B]`` (inverse CDF at the trace's uniform) and its
        mortalities ``[B, A]``."""
        n = self.choices.shape[0]
        if probs.shape != (probs.shape[0], n):
            raise ValueError(f"action: expected probabilities over the {n} menu choices "
                             f"[batch, {n}], got {tuple(probs.shape)}")
        if "u" not in trace.data:
            raise ValueError("trace.u: menu mode needs the uniforms [batch, horizon]")
        cdf = probs.clamp_min(0).cumsum(-1)
        u = trace["u"][:, t : t + 1] * cdf[:, -1:]
        index = (cdf < u).sum(-1).clamp(max=n - 1)
        return index, self.choices.to(probs.device)[index]

    def step(
        self, state: State, action: Tensor, t: int, trace: Trace
    ) -> tuple[State, Tensor, dict[str, Tensor]]:
        p = self.params
        pop, alive = state["pop"], state["alive"]
        b = pop.shape[0]
        index = None
        if self.choices is not None:
            index, action = self.draw(action, t, trace)
        if action.shape != (b, self.n_actions):
            raise ValueError(f"action: expected mortalities [batch={b}, harvested="
                             f"{self.n_actions}], got {tuple(action.shape)}")
        if not action.is_cuda and not torch.isfinite(action).all():
            raise ValueError("action: mortalities must be finite (no NaN or inf)")
        idx = self.harvested.to(pop.device)
        caught = pop[:, idx] * action.clamp(0.0, 1.0)
        escaped = pop.index_add(1, idx, -caught)
        nxt = growth(p, escaped, t, trace["eps"][:, t])
        if self.smooth(action):
            survive = torch.sigmoid((nxt - p.threshold) / p.temperature).prod(-1)
        else:
            survive = (nxt > p.threshold).all(-1).to(pop.dtype)
        new_alive = alive * survive
        harvest = caught.sum(-1)
        reward = alive * harvest + (alive - new_alive) * extinction_penalty(p, t)
        last = float(t == trace.horizon - 1)
        info = {"harvest": alive * harvest, "alive": alive, "survival": new_alive * last,
                "years_alive": new_alive / trace.horizon}
        if index is not None:  # the constrained AC's signals and expectations
            info["action_index"] = index
            first = float(t == 0)
            info["episode_survival"] = first * alive - (alive - new_alive)
            if p.survival_signal == "episode":  # its conditional expectations (see above)
                dies = alive * (1 - survival_probability(p, escaped, t))
                info["expected_episode_survival"] = first * alive - dies
                info["expected_reward"] = alive * harvest + dies * extinction_penalty(p, t)
        return {"pop": nxt, "alive": new_alive}, reward, info

    # -- metrics ----------------------------------------------------------------------------
    def episode_metric(self, rewards: Tensor, warmup: int) -> Tensor:
        """Total reward of each episode after ``warmup`` years ``[B]``."""
        return rewards[:, warmup:].sum(dim=1)

    def episode_metrics(self, result: Rollout, warmup: int) -> dict[str, Tensor]:
        """Share of episodes ending with every stock above the threshold, and the harvest
        without the penalty."""
        return {"survival": result.metrics["survival"].sum(1),
                "harvest": result.metrics["harvest"][:, warmup:].sum(1)}


def menu_levels(levels: int, actions: int) -> Tensor:
    """Every combination of ``levels`` evenly spaced mortalities in [0, 1] for ``actions``
    harvested species ``[levels**actions, actions]``."""
    grid = torch.linspace(0.0, 1.0, levels)
    return torch.cartesian_prod(*[grid] * actions).reshape(-1, actions)


def species_edges(p: FisheryParams) -> tuple[Tensor, Tensor]:
    """``edge_index [2, E]`` and interaction kind ``[E]`` (0 competition, 1 predation,
    2 self-regulation) of the species graph."""
    if p.model == "single":
        return torch.tensor([[0], [0]]), torch.tensor([2])
    edges = torch.tensor([[s for s, _, _ in INTERACTIONS], [d for _, d, _ in INTERACTIONS]])
    return edges, torch.tensor([k for _, _, k in INTERACTIONS])


# -- scenarios ---------------------------------------------------------------------------------


def _sigma(sigma: float | Sequence[float]) -> float | tuple[float, ...]:
    return tuple(sigma) if isinstance(sigma, (list, tuple)) else sigma


def model1(beta: float = 0.23, c: float = 0.1, r: float = 1.0, K: float = 1.0,
           sigma: float = 0.1, initial: float = 0.7, temperature: float = 0.0025,
           **kw) -> FisherySimulator:
    """One species with a predation tipping point; exact optimum by stochastic DP (beta=0.23
    reproduces the published optimum 5.70). The optimal last-year escapement sits just above
    the threshold, so the surrogate is sharper than the default (compared in RESULTS.md)."""
    return FisherySimulator(FisheryParams(
        model="single", harvested=(0,), r=r, K=K, beta=beta, c=c, sigma=_sigma(sigma),
        initial=(initial,), temperature=temperature, name="fishery/model1", **kw))


def _three(name: str, harvested: tuple[int, ...], drift_years: float, beta: float, c: float,
           sigma: float | Sequence[float], initial: Sequence[float], kw: dict) -> FisherySimulator:
    return FisherySimulator(FisheryParams(
        model="three", harvested=harvested, beta=beta, c=c, sigma=_sigma(sigma),
        initial=tuple(initial), drift_years=kw.pop("drift_years", drift_years), name=name, **kw))


def model2(beta: float = 0.3, c: float = 0.3, sigma: float = 0.1,
           initial: Sequence[float] = (0.7, 0.6, 1.0), **kw) -> FisherySimulator:
    """Prey, competitor and predator; only the prey X is harvested."""
    return _three("fishery/model2", (0,), 0.0, beta, c, sigma, initial, kw)


def model3(beta: float = 0.3, c: float = 0.3, sigma: float = 0.1,
           initial: Sequence[float] = (0.7, 0.6, 1.0), **kw) -> FisherySimulator:
    """Prey, competitor and predator; X and Y are harvested."""
    return _three("fishery/model3", (0, 1), 0.0, beta, c, sigma, initial, kw)


def model4(beta: float = 0.3, c: float = 0.3, sigma: float = 0.1,
           initial: Sequence[float] = (0.7, 0.6, 1.0), **kw) -> FisherySimulator:
    """Model 3 with X's growth rate drifting down: r_X(t) = max(1 - t/200, 1/2)."""
    return _three("fishery/model4", (0, 1), 200.0, beta, c, sigma, initial, kw)
