"""Optima and bounds for the fishery scenarios, on the simulator's own timing (harvest, then
growth with noise, then the extinction check with its time-dependent penalty).

The action is written as an escapement ``s`` (what is left after the harvest), so the
Bellman maximum over a grid is a running (prefix) maximum: one pass per year, Gauss-Hermite
quadrature over the noise (docs/fishery.md, "Escapement DP"). `single_species_dp` is model
1's DP (its discretisation error estimated by halving the grid; "optimal" only within a
tolerance), `grid_dp_3d` the same recursion on a 3-D grid for models 2-4 (a feasible grid
policy), `perfect_information_dp` the per-trace hindsight optimum (an upper bound), and
`references` what `oprl bench` reports (with the certified LP bound of `solvers.fishery_bound`).
Everything runs batched in torch on the trace's device.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace
from oprl.result import SolverResult
from oprl.simulators.fishery import (
    FisheryParams,
    FisherySimulator,
    extinction_penalty,
    growth,
    survival_probability,
)
from oprl.solvers.fishery_bound import relaxation_bound


def gauss_hermite(nodes: int, dtype=torch.float64, device="cpu") -> tuple[Tensor, Tensor]:
    """Nodes and weights (summing to 1) for expectations over a standard normal."""
    if nodes < 1:
        raise ValueError(f"nodes: must be >= 1, got {nodes}")
    z, w = np.polynomial.hermite_e.hermegauss(int(nodes))
    w = w / w.sum()
    return (torch.as_tensor(z, dtype=dtype, device=device),
            torch.as_tensor(w, dtype=dtype, device=device))


def interp1(values: Tensor, x: Tensor, x_max: float) -> Tensor:
    """Linear interpolation of ``values [..., N]`` (on a uniform grid over [0, x_max]) at
    points ``x [..., M]`` (same leading dims); clamped to the grid's ends."""
    n = values.shape[-1]
    pos = (x / x_max * (n - 1)).clamp(0, n - 1)
    lo = pos.floor().long().clamp(max=n - 2)
    frac = pos - lo
    v_lo = torch.gather(values, -1, lo)
    v_hi = torch.gather(values, -1, lo + 1)
    return v_lo + frac * (v_hi - v_lo)


def _check_single(sim: FisherySimulator, solver: str) -> FisheryParams:
    p = sim.params
    if p.model != "single":
        raise ValueError(f"{solver}: needs the one-species model (fishery/model1); "
                         f"scenario {sim.name!r} has {p.n_species} species")
    return p


def _continuation(p: FisheryParams, nxt: Tensor, value_next: Tensor, t: int,
                  x_max: float) -> Tensor:
    """Value after growth: V_{t+1}(x') if every stock stays above the threshold, else the
    extinction penalty of year t."""
    alive = nxt > p.threshold
    return torch.where(alive, interp1(value_next, nxt, x_max), extinction_penalty(p, t))


def _extend_below_threshold(value: Tensor, axes: list[Tensor], threshold: float) -> Tensor:
    """Grid points with a stock at or below the threshold are never alive states; give them
    the value of the first live point on that axis, so interpolating at a live stock just
    above the threshold does not mix in a meaningless dead-state value (death itself is
    decided exactly, on the continuous next state). ``value [..., n_1, ..., n_d]``."""
    d = len(axes)
    for k, axis in enumerate(axes):
        first = int((axis <= threshold).sum())
        if 0 < first < len(axis):
            dim = value.dim() - d + k
            edge = value.narrow(dim, first, 1)
            value = torch.cat([edge.expand_as(value.narrow(dim, 0, first)),
                               value.narrow(dim, first, len(axis) - first)], dim)
    return value


def _prefix_max(g: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    return torch.cummax(g, dim=dim)


def solve_single_species(
    p: FisheryParams, horizon: int, *, grid: int = 1601, x_max: float | None = None,
    nodes: int = 64, device: str | torch.device = "cpu",
) -> dict[str, Tensor]:
    """Backward induction for model 1: values ``V [T+1, N]`` and escapement gains
    ``G [T, N]`` on the grid ``x [N]`` (float64)."""
    if grid < 3:
        raise ValueError(f"grid: must be >= 3 points, got {grid}")
    x_max = float(x_max if x_max is not None else 1.5 * p.K)
    x = torch.linspace(0.0, x_max, grid, dtype=torch.float64, device=device)
    z, w = gauss_hermite(nodes, device=device)
    values = torch.zeros(horizon + 1, grid, dtype=torch.float64, device=device)
    gains = torch.zeros(horizon, grid, dtype=torch.float64, device=device)
    for t in reversed(range(horizon)):
        nxt = growth(p, x[:, None], t, z[None, :]).clamp(max=x_max)  # [N, Q]
        cont = _continuation(p, nxt, values[t + 1].expand(grid, -1), t, x_max)
        gains[t] = cont @ w - x
        values[t] = _extend_below_threshold(x + _prefix_max(gains[t])[0], [x], p.threshold)
    return {"x": x, "V": values, "G": gains, "x_max": torch.tensor(x_max)}


class EscapementTablePolicy(nn.Module):
    """Executes a DP solution: in year t, choose the escapement s <= x maximising the tabled
    gain G_t(s) (every grid point below x, through the running maximum of G_t, or x itself:
    no harvest), then harvest (x - s) / x. The year comes from ``obs['time']`` times the
    table's horizon."""

    def __init__(self, grid_x: Tensor, gains: Tensor, x_max: float) -> None:
        super().__init__()
        best, arg = torch.cummax(gains, dim=-1)
        self.register_buffer("grid_x", grid_x.float())
        self.register_buffer("gains", gains.float())
        self.register_buffer("best", best.float())
        self.register_buffer("arg", arg)
        self.x_max = float(x_max)

    def year(self, obs: Observation) -> int:
        t = int(round(float(obs["time"][0, 0]) * self.gains.shape[0]))
        return min(t, self.gains.shape[0] - 1)

    def forward(self, obs: Observation) -> Tensor:
        x = obs["pop"][:, :1]
        t = self.year(obs)
        n = self.grid_x.shape[0]
        below = (x / self.x_max * (n - 1)).floor().long().clamp(0, n - 1).squeeze(-1)
        keep = interp1(self.gains[t].expand(x.shape[0], -1), x, self.x_max).squeeze(-1)
        s = torch.where(keep >= self.best[t, below], x.squeeze(-1),
                        self.grid_x[self.arg[t, below]])
        return ((x.squeeze(-1) - s) / x.squeeze(-1).clamp_min(1e-9)).clamp(0, 1).unsqueeze(-1)


def grid_change(
    p: FisheryParams, horizon: int, x0: Tensor, *, grid: int, nodes: int, x_max: float | None,
    value: Tensor,
) -> float:
    """Discretisation error estimate of the DP value ``value [B]`` at starting stocks ``x0``:
    the largest change of the value from a grid of ``(grid - 1) // 2 + 1`` points (every other
    point) to ``grid`` points. The value converges about linearly in the grid step (the
    escapement rule has kinks), so the fine grid's own error is about this change too."""
    coarse = solve_single_species(p, horizon, grid=(grid - 1) // 2 + 1, x_max=x_max,
                                  nodes=nodes, device=x0.device)
    at = interp1(coarse["V"][0].expand(len(x0), -1), x0[:, None], float(coarse["x_max"]))
    return float((value.mean() - at.mean()).abs())


def single_species_dp(
    sim: FisherySimulator, trace: Trace | None = None, *, horizon: int | None = None,
    grid: int = 1601, nodes: int = 64, x_max: float | None = None, tolerance: float = 1e-3,
) -> SolverResult:
    """Model 1's expected total reward under the DP policy: the DP value at the trace's
    starting stocks (or the nominal start), with the policy attached to simulate on the same
    traces. Kind 'optimal' only when halving the grid changes the value by at most
    ``tolerance`` (relative; `grid_change`), else 'best_known'; the status states the change."""
    p = _check_single(sim, "single_species_dp")
    if grid < 5:
        raise ValueError(f"grid: must be >= 5 points (its refinement check halves it), got {grid}")
    start = time.perf_counter()
    device = trace.device if trace is not None else "cpu"
    horizon = int(horizon or (trace.horizon if trace is not None else p.eval_horizon))
    sol = solve_single_species(p, horizon, grid=grid, x_max=x_max, nodes=nodes, device=device)
    x0 = (sim.initial_stocks(trace)[:, 0].double() if trace is not None
          else torch.tensor([p.initial[0]], dtype=torch.float64, device=device))
    per_start = interp1(sol["V"][0].expand(len(x0), -1), x0[:, None], float(sol["x_max"]))
    value = float(per_start.mean())
    change = grid_change(p, horizon, x0, grid=grid, nodes=nodes, x_max=x_max, value=per_start)
    relative = change / max(abs(value), 1e-12)
    policy = EscapementTablePolicy(sol["x"], sol["G"], float(sol["x_max"]))
    return SolverResult(
        "stochastic DP", value, "optimal" if relative <= tolerance else "best_known",
        f"grid-refined: {(grid - 1) // 2 + 1} -> {grid} points changes the value by "
        f"{change:.1e} ({relative:.1e} relative, tolerance {tolerance:.0e})",
        time.perf_counter() - start, policy=policy,
        details={"grid": grid, "nodes": nodes, "x_max": float(sol["x_max"]), "horizon": horizon,
                 "expected_at_start": per_start.float().cpu(), "grid_change": change},
    )


def perfect_information_dp(
    sim: FisherySimulator, trace: Trace, *, grid: int = 3201, x_max: float | None = None,
) -> SolverResult:
    """Per-episode optimum when the whole noise path is known in advance (model 1): the same
    prefix-max recursion, deterministic, batched over episodes. Bounds every non-anticipative
    policy from above (up to the grid's interpolation error, stated in the status)."""
    p = _check_single(sim, "perfect_information_dp")
    start = time.perf_counter()
    x_max = float(x_max if x_max is not None else 1.5 * p.K)
    b, horizon = trace.batch, trace.horizon
    x = torch.linspace(0.0, x_max, grid, dtype=torch.float64, device=trace.device)
    eps = trace["eps"][..., 0].double()
    value = torch.zeros(b, grid, dtype=torch.float64, device=trace.device)
    for t in reversed(range(horizon)):
        nxt = growth(p, x[None, :], t, eps[:, t : t + 1]).clamp(max=x_max)  # [B, N]
        gain = _continuation(p, nxt, value, t, x_max) - x
        value = _extend_below_threshold(x + _prefix_max(gain)[0], [x], p.threshold)
    x0 = sim.initial_stocks(trace)[:, :1].double()
    per_trace = interp1(value, x0, x_max).squeeze(-1)
    return SolverResult(
        "perfect information", float(per_trace.mean()), "upper_bound",
        f"optimal (grid of {grid} points, h={x_max / (grid - 1):.2g})",
        time.perf_counter() - start, per_trace=per_trace.float().cpu(),
    )



# -- three species: a 3-D grid -----------------------------------------------------------------


def interp3(values: Tensor, pts: Tensor, axes: Tensor) -> Tensor:
    """Trilinear interpolation of ``values [..., n, n, n]`` on the grid ``axes [3, n]``
    (increasing, any spacing) at points ``pts [..., M, 3]``; leading dims of both must match
    (or values has none). Points outside the grid take the value at its edge."""
    n = values.shape[-1]
    lo_idx, frac = [], []
    for d in range(3):
        axis = axes[d].to(pts.dtype)
        x = pts[..., d].clamp(axis[0], axis[-1])
        i = (torch.searchsorted(axis, x.contiguous(), right=True) - 1).clamp(0, n - 2)
        lo_idx.append(i)
        frac.append(((x - axis[i]) / (axis[i + 1] - axis[i])).clamp(0, 1))
    flat = values.reshape(*values.shape[:-3], n**3)
    out = torch.zeros(pts.shape[:-1], dtype=values.dtype, device=values.device)
    for corner in range(8):
        bits = [(corner >> d) & 1 for d in range(3)]
        idx = ((lo_idx[0] + bits[0]) * n + lo_idx[1] + bits[1]) * n + lo_idx[2] + bits[2]
        weight = torch.ones_like(out)
        for d in range(3):
            weight = weight * (frac[d] if bits[d] else 1 - frac[d])
        if flat.dim() == 1:
            out = out + weight * flat[idx]
        else:
            out = out + weight * torch.gather(flat, -1, idx.reshape(flat.shape[0], -1)).view_as(idx)
    return out


def grid_axes(p: FisheryParams, n: int, maxes: tuple[float, float, float], device="cpu") -> Tensor:
    """``[3, n]`` grid axes from the threshold (stocks below it are dead) to ``maxes``, points
    denser near the threshold (quadratic spacing), where a starved predator or a fished-down
    stock decides survival."""
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=device)
    return torch.stack([p.threshold + (m - p.threshold) * u**2 for m in maxes])


def _harvest_max(gain: Tensor, harvested: tuple[int, ...]) -> Tensor:
    """max over escapements below the state on each harvested axis: running maxima."""
    for axis in harvested:
        gain = torch.cummax(gain, dim=gain.dim() - 3 + axis)[0]
    return gain


def solve_three_species(
    p: FisheryParams, horizon: int, *, grid: int = 16, maxes=(1.2, 1.2, 2.0), nodes: int = 3,
    device: str | torch.device = "cpu",
) -> dict[str, Tensor]:
    """Backward induction on a ``grid``^3 grid (`grid_axes`): post-harvest expected values
    ``W [T, n, n, n]`` (indexed by escapements and the unharvested stocks) and the values
    ``V [n, n, n]`` at year 0. The extinction probability is exact (normal tails); the value
    of surviving is averaged over ``nodes``^3 Gauss-Hermite nodes."""
    if p.model != "three":
        raise ValueError("grid_dp_3d: needs a three-species model (fishery/model2-4)")
    if grid < 3:
        raise ValueError(f"grid: must be >= 3 points per axis, got {grid}")
    axes = grid_axes(p, grid, maxes, device)
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [N, 3]
    z, w = gauss_hermite(nodes, device=device)
    zz = torch.stack(torch.meshgrid(z, z, z, indexing="ij"), -1).reshape(-1, 3)  # [Q, 3]
    ww = (w[:, None, None] * w[None, :, None] * w[None, None, :]).reshape(-1)
    gained = pts[:, list(p.harvested)].sum(-1).view(grid, grid, grid)  # stock paid on the way in
    value = torch.zeros(grid, grid, grid, dtype=torch.float64, device=device)
    tables = torch.zeros(horizon, grid, grid, grid, dtype=torch.float32, device=device)
    for t in reversed(range(horizon)):
        expected = torch.zeros(pts.shape[0], dtype=torch.float64, device=device)
        for chunk in torch.arange(pts.shape[0], device=device).split(4096):
            nxt = growth(p, pts[chunk, None, :], t, zz[None])  # [C, Q, 3]
            alive = survival_probability(p, pts[chunk], t)
            expected[chunk] = (alive * (interp3(value, nxt, axes) @ ww)
                               + (1 - alive) * extinction_penalty(p, t))
        w_t = expected.view(grid, grid, grid)
        tables[t] = w_t.float()
        value = gained + _harvest_max(w_t - gained, p.harvested)
    return {"W": tables, "V0": value, "axes": axes}


class GridDPPolicy(nn.Module):
    """Executes a 3-D grid DP: in year t, among escapements on the grid below each harvested
    stock (or the stock itself: no harvest) pick the one with the highest tabled W_t minus
    the stock left in the water."""

    def __init__(self, tables: Tensor, axes: Tensor, harvested: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("tables", tables.float())
        self.register_buffer("axes", axes.float())
        self.harvested = tuple(harvested)

    def forward(self, obs: Observation) -> Tensor:
        pop = obs["pop"]
        b = pop.shape[0]
        horizon = self.tables.shape[0]
        t = min(int(round(float(obs["time"][0, 0]) * horizon)), horizon - 1)
        options = []  # per harvested species: [B, n+1] candidate escapements
        for d in self.harvested:
            stock = pop[:, d : d + 1]
            cand = torch.cat([self.axes[d].expand(b, -1), stock], -1)
            options.append(torch.where(cand <= stock, cand, stock))
        mesh = torch.meshgrid(*[torch.arange(o.shape[1], device=pop.device) for o in options],
                              indexing="ij")
        combos = [m.reshape(-1) for m in mesh]  # C combinations
        pts = pop[:, None, :].expand(b, combos[0].numel(), 3).clone()
        for o, idx, d in zip(options, combos, self.harvested):
            pts[..., d] = o[:, idx]
        gain = interp3(self.tables[t], pts, self.axes) - pts[..., list(self.harvested)].sum(-1)
        best = pts[torch.arange(b, device=pop.device), gain.argmax(-1)]
        keep = best[:, list(self.harvested)]
        stock = pop[:, list(self.harvested)]
        return ((stock - keep) / stock.clamp_min(1e-9)).clamp(0.0, 1.0)


def grid_dp_3d(
    sim: FisherySimulator, trace: Trace | None = None, *, horizon: int | None = None,
    grid: int = 16, nodes: int = 3, maxes=(1.2, 1.2, 2.0), check_grid: int | None = None,
) -> SolverResult:
    """Models 2-4: the grid DP's policy, to be simulated on the evaluation traces (a feasible
    policy, so its mean reward is a lower bound on the optimum, whatever the grid); the DP's
    own estimate of its value is in ``details``. With ``check_grid`` (a coarser grid) the DP
    is solved on it too and the change of the estimate, a discretisation error estimate, is
    in the status and ``details['grid_change']`` (the default skips it: it costs a solve)."""
    p = sim.params
    start = time.perf_counter()
    device = trace.device if trace is not None else "cpu"
    horizon = int(horizon or (trace.horizon if trace is not None else p.eval_horizon))
    x0 = (sim.initial_stocks(trace).double() if trace is not None
          else torch.tensor([p.initial], dtype=torch.float64, device=device))

    def estimate_on(n: int) -> tuple[dict[str, Tensor], float]:
        sol = solve_three_species(p, horizon, grid=n, maxes=maxes, nodes=nodes, device=device)
        return sol, float(interp3(sol["V0"], x0, sol["axes"]).mean())

    sol, estimate = estimate_on(grid)
    change = None if check_grid is None else abs(estimate - estimate_on(check_grid)[1])
    steps = (sol["axes"][:, 1:] - sol["axes"][:, :-1]).float()
    checked = ("not refined" if change is None else
               f"{check_grid}^3 -> {grid}^3 changes it by {change:.1e}")
    return SolverResult(
        "grid DP", estimate, "lower_bound",
        f"grid policy, feasible ({grid}^3 grid from the threshold to {tuple(maxes)}, quadratic "
        f"spacing h={float(steps.min()):.2g}..{float(steps.max()):.2g}; {nodes}^3 Gauss-Hermite "
        f"nodes; the grid's own value estimate {estimate:.2f}, {checked}, is "
        f"interpolation-biased: the simulated policy is the reference)",
        time.perf_counter() - start,
        policy=GridDPPolicy(sol["W"], sol["axes"], p.harvested),
        details={"grid": grid, "nodes": nodes, "maxes": list(maxes), "dp_estimate": estimate,
                 "grid_change": change},
    )


def references(sim: FisherySimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """Model 1: the exact stochastic DP (its policy simulated on the trace), the
    perfect-information DP and the LP bound (`solvers.fishery_bound`); models 2-4: the 3-D
    grid DP policy and the LP bound (certified upper bounds; a model-1 variant with a
    drifting growth rate, not one of the four scenarios, gets none)."""
    if warmup != 0:
        raise ValueError(f"eval_warmup: fishery references count whole episodes; got {warmup}")
    if sim.params.model == "single":
        refs = [single_species_dp(sim, trace), perfect_information_dp(sim, trace)]
        return refs + ([relaxation_bound(sim, trace)] if sim.params.drift_years <= 0 else [])
    return [grid_dp_3d(sim, trace), relaxation_bound(sim, trace)]
