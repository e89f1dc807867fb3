"""Exact optima and certified bounds for the inventory scenarios, on the simulator's own timing
(an order placed in period t on an edge of lead time L is available before demand of t + L).

- `base_stock_optimum`, `lost_sales_dp`, `echelon_base_stock_optimum`: exact optima of the
  single backlogged store, the single lost-sales store and the serial system;
- `pooled_newsvendor_bound`, `balanced_allocation_bound`, `decoupled_*_bound`: lower bounds;
- `perfect_information_lp`: any network, the hindsight LP per trace (Pyomo + HiGHS; GLOP twin);
- `references`: the right reference(s) for a scenario, used by ``oprl bench``.

Demand is discretised on a fine grid and convolved with FFTs, so the optima are numerical,
not Monte Carlo. Derivations: docs/inventory.md, "References and bounds".
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy.signal import fftconvolve
from scipy.stats import norm, poisson
from torch import Tensor, nn

from oprl.core import Observation, Trace
from oprl.result import SolverResult
from oprl.simulators.inventory import SUPPLIER, InventorySimulator
from oprl.simulators.inventory_rules import BaseStock, EchelonBaseStock

# -- shared checks -----------------------------------------------------------------------------


def _scalar_params(sim: InventorySimulator, solver: str) -> None:
    """Closed forms and DPs need one value per edge/node, not per-sample tensors."""
    p = sim.params
    for name in ("lead_time", "holding", "penalty", "order_cost"):
        if getattr(p, name).dim() != 1:
            raise ValueError(
                f"{solver}: per-sample {name} ([batch, ...]) is not supported; build one "
                f"simulator per parameter setting"
            )


def _single_store(sim: InventorySimulator, solver: str, *, lost: bool, demand: str) -> None:
    net, p = sim.network, sim.params
    if net.n_nodes != 1 or net.n_edges != 1:
        raise ValueError(
            f"{solver}: needs a single store fed by the supplier (e.g. "
            f"{'inventory/one_store_lost' if lost else 'inventory/one_store_backlog'}); "
            f"got scenario {sim.name!r} with {net.n_nodes} locations"
        )
    if p.lost_sales != lost:
        raise ValueError(
            f"{solver}: needs a {'lost-sales' if lost else 'backlogged'} store; scenario "
            f"{sim.name!r} is {'lost-sales' if p.lost_sales else 'backlogged'}"
        )
    if p.demand.kind != demand:
        raise ValueError(f"{solver}: needs {demand} demand; scenario {sim.name!r} has {p.demand.kind!r}")
    _scalar_params(sim, solver)


# -- discretised demand ------------------------------------------------------------------------


def _clipped_normal_cells(mean: np.ndarray, std: np.ndarray, delta: float, n: int) -> np.ndarray:
    """Mass of max(N(mean, std), 0) in the cells [k - 1/2, k + 1/2) * delta, k = 0..n-1; the
    atom at 0 and the lower tail land in cell 0. Vectorised over leading dims of mean/std."""
    edges = (np.arange(n) + 0.5) * delta
    std = np.maximum(np.asarray(std, dtype=float), 1e-12)
    cdf = norm.cdf((edges - np.asarray(mean, dtype=float)[..., None]) / std[..., None])
    cells = np.diff(cdf, axis=-1, prepend=0.0)
    cells[..., -1] += 1.0 - cdf[..., -1]
    return cells


def _fft_len(n: int) -> int:
    return 1 << max(int(n - 1).bit_length(), 0)


def _convolve_power(pmf: np.ndarray, k: int, size: int) -> np.ndarray:
    """pmf^{*k} on ``size`` grid points (k = 0 is the point mass at 0)."""
    out = np.zeros(size)
    if k == 0:
        out[0] = 1.0
        return out
    m = _fft_len(size + len(pmf))
    res = np.clip(np.fft.irfft(np.fft.rfft(pmf, m) ** k, m)[:size], 0.0, None)
    return res / res.sum()  # FFT round-off leaves tiny negatives; callers size the grid


def _expect_shift(f: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    """g[k] = sum_j pmf[j] * f[k - j]: E[f(z - D)] on the grid; f is extended to the left
    linearly (every cost-to-go here is linear below zero, where demand cannot push it back)."""
    m = len(pmf)
    if m == 1:
        return f * pmf[0]
    slope = f[1] - f[0]
    left = f[0] + slope * np.arange(-(m - 1), 0)
    return fftconvolve(np.concatenate([left, f]), pmf, mode="valid")


def _trim(pmf: np.ndarray, tol: float = 1e-15) -> np.ndarray:
    last = np.nonzero(pmf > tol)[0]
    return pmf[: int(last[-1]) + 1] if len(last) else pmf[:1]


# -- 1. single backlogged store -------------------------------------------------------------


def base_stock_optimum(sim: InventorySimulator, *, delta: float | None = None) -> SolverResult:
    """Optimal base-stock level for a single backlogged store with clipped-normal demand.

    The level is the p/(p+h) quantile of demand over L+1 periods (the inventory position after
    ordering covers the L periods in transit and the period of arrival); its expected cost is
    integrated on a grid of step ``delta`` (default std/100) with the clipping atom kept exactly.
    """
    start = time.perf_counter()
    _single_store(sim, "base_stock_optimum", lost=False, demand="normal")
    p = sim.params
    lead = int(p.lead_time[0])
    h, b, c = float(p.holding[0]), float(p.penalty[0]), float(p.order_cost[0])
    mean, std = float(p.demand.mean[0]), float(p.demand.std[0])
    delta = delta or max(std, 1e-3) / 100
    level, cost, mu1 = _single_stage(mean, std, lead + 1, h, b, delta)
    cost += c * mu1  # every unit demanded is ordered once in steady state
    return SolverResult(
        name="base_stock_optimum", objective=cost, kind="optimal",
        status=f"closed form (grid step {delta:.3g})", wall_s=time.perf_counter() - start,
        policy=BaseStock(sim, level),
        details={"level": level, "critical_ratio": b / (b + h), "periods": lead + 1},
    )


def _single_stage(
    mean: float, std: float, periods: int, h: float, b: float, delta: float
) -> tuple[float, float, float]:
    """(quantile level, expected newsvendor cost, per-period mean) for the sum of ``periods``
    clipped normals."""
    pmf, single = _clipped_normal_sum(mean, std, periods, delta)
    grid = np.arange(len(pmf)) * delta
    cdf = np.cumsum(pmf)
    ratio = b / (b + h)
    k = int(np.searchsorted(cdf, ratio))
    # the grid cell's mass is spread uniformly over it: interpolate the CDF inside the cell
    lo = cdf[k - 1] if k > 0 else 0.0
    frac = (ratio - lo) / max(pmf[k], 1e-300)
    level = float(grid[k] + (frac - 0.5) * delta) if k > 0 else float(grid[0])
    cost = _newsvendor_cost(pmf, delta, level, h, b)
    mu1 = float((single * np.arange(len(single)) * delta).sum())
    return level, cost, mu1


def _clipped_normal_sum(
    mean: float, std: float, periods: int, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """(pmf of the sum of ``periods`` iid clipped normals, pmf of one) on a grid of ``delta``."""
    n1 = int(math.ceil((mean + 12 * std) / delta)) + 2
    single = _clipped_normal_cells(np.array(mean), np.array(std), delta, n1)
    return _trim(_convolve_power(single, periods, periods * n1)), single


def _newsvendor_cost(pmf: np.ndarray, delta: float, level: float, h: float, b: float) -> float:
    """E[h (y - D)^+ + b (D - y)^+] with D's cell mass spread uniformly over each cell."""
    centres = np.arange(len(pmf)) * delta
    lo, hi = centres - delta / 2, centres + delta / 2
    lo[0] = hi[0] = 0.0  # cell 0 is (almost all) the atom at 0
    # E[(y - U)^+] for U uniform on [lo, hi]
    width = np.maximum(hi - lo, 1e-300)
    inside = (level - lo).clip(0, None) ** 2 / (2 * width)
    over = np.where(level >= hi, level - (lo + hi) / 2, np.where(level <= lo, 0.0, inside))
    over = np.where(hi == lo, np.clip(level - lo, 0, None), over)
    e_over = float((pmf * over).sum())
    e_under = e_over - level + float((pmf * centres).sum())
    return h * e_over + b * e_under


# -- 2. single lost-sales store: relative value iteration ------------------------------------


class LostSalesTablePolicy(nn.Module):
    """Looks up the DP's optimal order from (on-hand, pipeline by arrival slot).

    Continuous states are rounded to integers and clamped to the table; a state whose
    inventory position exceeds the table's bound orders nothing (the optimal policy never
    raises the position above Morton's bound, so such states only occur off the optimal path).
    """

    def __init__(self, sim: InventorySimulator, table: Tensor, max_position: int) -> None:
        super().__init__()
        self.lead = int(sim.params.lead_time[0])
        self.register_buffer("table", table.float())
        self.max_position = max_position
        self.layout = sim.node_layout

    def forward(self, obs: Observation) -> Tensor:
        node = obs["nodes"][:, 0]
        stock = node[:, self.layout["onhand"]].squeeze(-1)
        # pipeline slots 0..L-2 hold the outstanding orders (slot L-1 is empty at ordering time)
        slots = node[:, self.layout["pipeline"]][:, : self.lead - 1]
        onhand = stock.round().clamp(0, self.table.shape[0] - 1).long()
        pipe = slots.round().clamp_min(0).long()
        idx = (onhand,) + tuple(
            pipe[:, j].clamp_max(self.table.shape[j + 1] - 1) for j in range(self.lead - 1)
        )
        order = self.table[idx]
        position = stock + slots.sum(-1)
        order = torch.where(position > self.max_position + 0.5, torch.zeros_like(order), order)
        return order.unsqueeze(-1)


def _lost_sales_newsvendor(sim: InventorySimulator, h: float, b: float, c: float, lam: float,
                           start: float) -> SolverResult:
    """Lead time 0: what is ordered arrives before demand and what is left stays below the
    level, so order-up-to the Poisson p/(p+h) quantile every period is optimal (the
    newsvendor); its cost per period is h E(S-D)^+ + b E(D-S)^+ (+ c per unit sold)."""
    level = int(poisson.ppf(b / (b + h), lam))
    d = np.arange(level + 1)
    pmf = poisson.pmf(d, lam)
    under = float(((level - d) * pmf).sum())  # E(S - D)^+
    over = under - (level - lam)  # E(D - S)^+ = E(S - D)^+ - (S - E D)
    sold = lam - over
    return SolverResult(
        name="lost_sales_dp", objective=h * under + b * over + c * sold, kind="optimal",
        status="closed form (lead time 0: newsvendor)", wall_s=time.perf_counter() - start,
        policy=BaseStock(sim, float(level)), details={"level": level, "lead_time": 0},
    )


def lost_sales_dp(
    sim: InventorySimulator,
    *,
    max_order: int | None = None,
    tol: float = 1e-6,
    max_iter: int = 5000,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> SolverResult:
    """Average-cost optimal policy of the single lost-sales store (Poisson demand, lead L >= 1)
    by relative value iteration, every Bellman update one batched tensor operation.

    State: on-hand after arrivals x and the L-1 outstanding orders by arrival slot.
    Truncation: (i) the inventory position after ordering is capped at Morton's (1969) bound,
    the p/(p+h) quantile S of Poisson demand over L+1 periods -- the optimal lost-sales policy
    never orders above it, so this loses nothing; it also bounds x <= S. (ii) single orders are
    capped at ``max_order``; by default it starts at the 0.99 quantile of one period's demand
    plus one and is widened until no admissible state orders the cap (so nothing is lost);
    an explicit ``max_order`` is kept and `details['cap_binding']` says whether it binds.
    """
    start = time.perf_counter()
    _single_store(sim, "lost_sales_dp", lost=True, demand="poisson")
    p = sim.params
    lead = int(p.lead_time[0])
    h, b, c = float(p.holding[0]), float(p.penalty[0]), float(p.order_cost[0])
    lam = float(p.demand.mean[0])
    if lead == 0:
        return _lost_sales_newsvendor(sim, h, b, c, lam, start)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    top = int(poisson.ppf(b / (b + h), lam * (lead + 1)))  # Morton's bound on the position
    qmax = min(top, int(max_order if max_order is not None else poisson.ppf(0.99, lam) + 1))

    x = np.arange(top + 1)
    pmf = poisson.pmf(x, lam)
    e_over = np.array([(np.clip(k - x[:k], 0, None) * pmf[:k]).sum() for k in x])  # E[(x-D)^+]
    cost_x = h * e_over + b * (lam - x + e_over)
    # M[x, y] = P((x - D)^+ = y)
    trans = np.zeros((top + 1, top + 1))
    diff = x[:, None] - x[None, :]
    trans[diff >= 0] = pmf[diff[diff >= 0]]
    trans[:, 0] = poisson.sf(x - 1, lam)

    model = (torch.tensor(trans, device=dev, dtype=dtype), torch.tensor(cost_x, device=dev, dtype=dtype))
    while True:  # widen the order cap until it no longer binds in any admissible state
        gain, span, it, orders, position = _rvi(model, lead, top, qmax, c, tol, max_iter)
        binding = bool(((orders == qmax) & (position + qmax <= top)).any()) and qmax < top
        if not binding or max_order is not None:
            break
        qmax = min(top, qmax + max(2, qmax // 2))
    converged = span < tol
    return SolverResult(
        name="lost_sales_dp", objective=gain, kind="optimal" if converged else "best_known",
        status=(f"converged (span {span:.1e} after {it} iterations)" if converged
                else f"not converged (span {span:.1e} after {it} iterations)"),
        wall_s=time.perf_counter() - start,
        policy=LostSalesTablePolicy(sim, orders.cpu(), top),
        details={"max_position": top, "max_order": qmax, "states": int(orders.numel()),
                 "cap_binding": binding, "gain_bounds": (gain - span / 2, gain + span / 2)},
    )


def _rvi(
    model: tuple[Tensor, Tensor], lead: int, top: int, qmax: int, c: float, tol: float,
    max_iter: int,
) -> tuple[float, float, int, Tensor, Tensor]:
    """Relative value iteration on the truncated grid; returns (gain, span, iterations,
    optimal order of every state, inventory position of every state)."""
    trans, cost_x = model
    dev, dtype = trans.device, trans.dtype
    q = torch.arange(qmax + 1, device=dev)
    state_shape = (top + 1,) + (qmax + 1,) * (lead - 1)
    position = _position_grid(state_shape, dev)
    allowed = (position.unsqueeze(-1) + q <= top) | (q == 0)
    inf = torch.tensor(float("inf"), device=dev, dtype=dtype)
    penalty_q = torch.where(allowed, c * q.to(dtype), inf)  # [state..., action]
    # next on-hand z = leftover y + next arrival q1 (the new order itself when L = 1)
    y = torch.arange(top + 1, device=dev)
    z = (y[:, None] + q[None, :]).clamp_max(top)
    values = torch.zeros(state_shape, device=dev, dtype=dtype)
    span, gain, it = float("inf"), float("nan"), 0
    while it < max_iter:
        it += 1
        new, _ = _bellman(values, trans, z, penalty_q, cost_x, lead)
        diff = new - values
        lo, hi = float(diff.min()), float(diff.max())
        span, gain = hi - lo, (hi + lo) / 2
        values = new - new.flatten()[0]
        if span < tol:
            break
    _, orders = _bellman(values, trans, z, penalty_q, cost_x, lead)
    return gain, span, it, orders, position


def _position_grid(shape: tuple[int, ...], dev: torch.device) -> Tensor:
    pos = torch.zeros(shape, dtype=torch.long, device=dev)
    for dim, size in enumerate(shape):
        view = [1] * len(shape)
        view[dim] = size
        pos = pos + torch.arange(size, device=dev).view(view)
    return pos


def _bellman(
    values: Tensor, trans: Tensor, z: Tensor, penalty_q: Tensor, cost_x: Tensor, lead: int,
    chunk_elems: int = 1 << 24,
) -> tuple[Tensor, Tensor]:
    """One Bellman update: V'(x, q1..q_{L-1}) = c(x) + min_q E_D V((x-D)^+ + q1, q2, .., q),
    computed in chunks of the next-arrival dimension to bound memory at long lead times."""
    n_x, n_y = trans.shape
    step = z.shape[1] if lead == 1 else max(1, chunk_elems // (n_y * values[0].numel()))
    bests, args = [], []
    for lo in range(0, z.shape[1], step):
        shifted = values[z[:, lo : lo + step]]  # [y, q1, q2.., q]: next state after leftover y
        expect = (trans @ shifted.reshape(n_y, -1)).reshape((n_x,) + shifted.shape[1:])
        best, arg = (expect + penalty_q[:, lo : lo + step]).min(dim=-1)
        bests.append(best)
        args.append(arg)
    if len(bests) == 1:  # always so at L = 1, where the state is on-hand alone
        best, arg = bests[0], args[0]
    else:
        best, arg = torch.cat(bests, dim=1), torch.cat(args, dim=1)
    view = (-1,) + (1,) * (lead - 1)
    return cost_x.view(view) + best, arg


# -- 3. serial system: Clark-Scarf ------------------------------------------------------------


def _serial_chain(sim: InventorySimulator, solver: str) -> list[int]:
    """Locations from the most upstream to the store; a ValueError unless the network is a
    backlogged path supplier -> ... -> store with normal demand."""
    net, p = sim.network, sim.params
    chain, node = [], SUPPLIER
    while True:
        nxt = [d for s, d in net.edges if s == node]
        if not nxt:
            break
        if len(nxt) != 1:
            chain = []
            break
        chain.append(nxt[0])
        node = nxt[0]
    if (len(chain) != net.n_nodes or net.n_edges != net.n_nodes
            or net.kinds[chain[-1]] != "store" or len(net.stores) != 1):
        raise ValueError(
            f"{solver}: needs a serial system supplier -> ... -> one store (e.g. "
            f"inventory/serial); scenario {sim.name!r} is not a path"
        )
    if p.lost_sales or p.demand.kind != "normal":
        raise ValueError(f"{solver}: needs backlogged normal demand; scenario {sim.name!r} has "
                         f"{'lost sales' if p.lost_sales else p.demand.kind + ' demand'}")
    _scalar_params(sim, solver)
    return chain


def echelon_base_stock_optimum(
    sim: InventorySimulator, *, delta: float | None = None
) -> SolverResult:
    """Exact optimal echelon base-stock levels and cost of a serial backlogged system.

    Clark-Scarf recursion with echelon holding e_j = h_j - h_upstream(j): stage 1 (the store)
    G_1(y) = e_1 (y - E D[L_1+1]) + (p + h_1) E(D[L_1+1] - y)^+,  S_1 = argmin G_1;
    stage j > 1:  G_j(y) = e_j (y - E D[L_j+1]) + E G_{j-1}(min(S_{j-1}, y - D[L_j])),
    where D[k] is demand over k periods, on a grid of step ``delta`` (default std/50).
    The simulator charges no holding on stock in transit whereas the echelon costs do (at the
    sending location's rate), so that constant, sum_j h_up(j) L_j E[D], is subtracted.
    """
    start = time.perf_counter()
    chain = _serial_chain(sim, "echelon_base_stock_optimum")
    p = sim.params
    mean, std = float(p.demand.mean[0]), float(p.demand.std[0])
    delta = delta or max(std, 1e-3) / 50
    lead_of = {dst: int(p.lead_time[e]) for e, (_, dst) in enumerate(sim.network.edges)}
    cost_of = {dst: float(p.order_cost[e]) for e, (_, dst) in enumerate(sim.network.edges)}
    hold = [float(p.holding[n]) for n in chain]
    leads = [lead_of[n] for n in chain]
    total = sum(leads) + len(chain)
    n1 = int(math.ceil((mean + 12 * std) / delta)) + 2
    single = _clipped_normal_cells(np.array(mean), np.array(std), delta, n1)
    mu1 = float((single * np.arange(n1) * delta).sum())
    lo_steps = int(math.ceil(2 * std / delta)) + 2
    size = int(math.ceil((total * mean + 12 * std * math.sqrt(total) + 4 * std) / delta))
    z = (np.arange(lo_steps + size) - lo_steps) * delta  # the grid starts below 0
    pmfs = {k: _trim(_convolve_power(single, k, k * n1 + 1)) for k in set(leads) | {leads[-1] + 1}}

    store = len(chain) - 1
    echelon = [hold[i] - (hold[i - 1] if i > 0 else 0.0) for i in range(len(chain))]
    b = float(p.penalty[0])
    levels: list[float] = [0.0] * len(chain)
    g = echelon[store] * (z - (leads[store] + 1) * mu1) + (b + hold[store]) * _expect_shift(
        np.maximum(-z, 0.0), pmfs[leads[store] + 1]
    )
    for i in range(store, -1, -1):
        k = int(np.argmin(g))
        if k in (0, len(z) - 1):
            raise RuntimeError("echelon_base_stock_optimum: optimum hit the grid edge")
        levels[i] = float(z[k])
        if i == 0:
            break
        capped = np.where(z <= z[k], g, g[k])
        g = echelon[i - 1] * (z - (leads[i - 1] + 1) * mu1) + _expect_shift(capped, pmfs[leads[i - 1]])
    transit = sum((hold[i - 1] if i > 0 else 0.0) * leads[i] * mu1 for i in range(len(chain)))
    cost = float(g.min()) - transit + sum(cost_of.values()) * mu1
    node_levels = torch.zeros(sim.network.n_nodes)
    node_levels[chain] = torch.tensor(levels, dtype=torch.float32)
    return SolverResult(
        name="echelon_base_stock_optimum", objective=cost, kind="optimal",
        status=f"Clark-Scarf recursion (grid step {delta:.3g})", wall_s=time.perf_counter() - start,
        policy=EchelonBaseStock(sim, node_levels),
        details={"levels": node_levels.tolist(), "echelon_holding": echelon, "chain": chain},
    )


# -- 4. transshipment: pooled newsvendor ------------------------------------------------------


def _transshipment_layout(sim: InventorySimulator, solver: str) -> tuple[int, int, int]:
    """(centre node, its lead time, the stores' common lead time) of a transshipment system,
    or a ValueError naming what the bound needs."""
    net, p = sim.network, sim.params
    centres = [n for n, k in enumerate(net.kinds) if k == "transship"]
    ok = (len(centres) == 1 and net.n_nodes == len(net.stores) + 1
          and sorted(net.children(centres[0])) == net.stores
          and [net.edges[k][0] for k in net.inbound(centres[0])] == [SUPPLIER]
          and all(len(net.inbound(s)) == 1 for s in net.stores))
    if not ok or p.lost_sales or p.demand.kind != "normal":
        raise ValueError(
            f"{solver}: needs one transshipment centre fed by the supplier and feeding every "
            f"backlogged store with normal demand (e.g. inventory/transshipment); got {sim.name!r}"
        )
    _scalar_params(sim, solver)
    centre = centres[0]
    store_leads = {int(p.lead_time[net.inbound(s)[0]]) for s in net.stores}
    if len(store_leads) != 1:
        raise ValueError(f"{solver}: stores must share one lead time, got {sorted(store_leads)}")
    return centre, int(p.lead_time[net.inbound(centre)[0]]), store_leads.pop()


def _pooled_demand(
    mean: np.ndarray, std: np.ndarray, rho: float, periods: int, quadrature: int, grid: int
) -> tuple[np.ndarray, float, bool]:
    """(pmf, grid step, exact) of the stores' total demand over ``periods`` periods.

    Per period, stores are independent given the equicorrelation's common factor
    (Gauss-Hermite over it), clipped normals are kept clipped, and the periods are convolved by
    FFT. Negative rho falls back to the unclipped normal sum with variance
    S sigma^2 (1 + (S-1) rho) per period (``exact`` False).
    """
    total_std = math.sqrt(max(float((std**2).sum() + rho * (std.sum() ** 2 - (std**2).sum())), 1e-12))
    span = periods * (mean.sum() + 10 * total_std) + 10 * total_std * math.sqrt(periods)
    delta = min(span / grid / periods, float(std.min()) / 10 if std.min() > 0 else 1.0)
    size = int(math.ceil(span / delta)) + 2
    exact = rho >= 0
    if exact:
        nodes, weights = np.polynomial.hermite_e.hermegauss(quadrature if rho > 0 else 1)
        weights = weights / weights.sum()
        n1 = int(math.ceil((mean.sum() + 10 * total_std + 10 * std.sum()) / delta)) + 2
        m = _fft_len(size + n1)
        per_period = np.zeros(m // 2 + 1, dtype=complex)
        for c, w in zip(nodes, weights):  # loop over quadrature nodes only; stores vectorised
            cells = _clipped_normal_cells(
                mean + std * math.sqrt(rho) * c, std * math.sqrt(1 - rho), delta, n1
            )
            per_period += w * np.prod(np.fft.rfft(cells, m, axis=-1), axis=0)
        pmf = np.clip(np.fft.irfft(per_period**periods, m)[:size], 0.0, None)
    else:
        var = periods * total_std**2
        edges = (np.arange(size) + 0.5) * delta
        cdf = norm.cdf((edges - periods * mean.sum()) / math.sqrt(var))
        pmf = np.diff(cdf, prepend=0.0)
    return pmf / pmf.sum(), delta, exact


def _transshipment_order_cost(sim: InventorySimulator, centre: int) -> float:
    """Ordering cost per period: every unit demanded crosses every edge once in steady state."""
    p, net = sim.params, sim.network
    if float(p.order_cost.abs().sum()) == 0:
        return 0.0
    mean = p.demand.mean.double().numpy()
    return float(p.order_cost[net.inbound(centre)[0]]) * float(mean.sum()) + float(
        (p.order_cost[[net.inbound(s)[0] for s in net.stores]].double().numpy() * mean).sum()
    )


def _newsvendor_on_grid(pmf: np.ndarray, delta: float, h: float, b: float):
    """(grid points z_k = k delta, E[h (z_k - D)^+ + b (D - z_k)^+]) for D on that grid."""
    idx = np.arange(len(pmf))
    z = idx * delta
    tail_mass = pmf[::-1].cumsum()[::-1] - pmf  # P(D > z_k)
    tail_first = (pmf * idx)[::-1].cumsum()[::-1] - pmf * idx
    e_under = (tail_first - idx * tail_mass) * delta  # E(D - z_k)^+
    return z, h * (z - float((pmf * z).sum())) + (h + b) * e_under


def pooled_newsvendor_bound(
    sim: InventorySimulator, *, quadrature: int = 40, grid: int = 4000
) -> SolverResult:
    """Lower bound on the expected cost per store-period of a transshipment system: one pooled
    newsvendor over the combined lead time ``K = L_w + L_s + 1``.

    Valid because the centre holds no stock, so everything in the system reaches the stores
    within K periods and the stores' sublinear cost is at least the cost of their pooled
    position (proof: docs/inventory.md, "Pooled newsvendor bound"). With unequal costs the
    smallest h and p are used (still a bound)."""
    start = time.perf_counter()
    p, net = sim.params, sim.network
    centre, lw, ls = _transshipment_layout(sim, "pooled_newsvendor_bound")
    periods = lw + ls + 1 + (1 if lw == 0 else 0)
    h, b = float(p.holding[net.stores].min()), float(p.penalty.min())
    mean, std = p.demand.mean.double().numpy(), p.demand.std.double().numpy()
    rho, n_st = float(p.demand.correlation), len(net.stores)
    pmf, delta, exact = _pooled_demand(mean, std, rho, periods, quadrature, grid)
    zgrid, cost = _newsvendor_on_grid(pmf, delta, h, b)
    k = int(np.argmin(cost))
    return SolverResult(
        name="pooled_newsvendor_bound",
        objective=(float(cost[k]) + _transshipment_order_cost(sim, centre)) / n_st,
        kind="lower_bound",
        status=f"pooled newsvendor over {periods} periods (grid step {delta:.3g})",
        wall_s=time.perf_counter() - start,
        details={"pooled_level": float(zgrid[k]), "periods": periods, "exact": exact,
                 "stores": n_st, "correlation": rho},
    )


def balanced_allocation_bound(
    sim: InventorySimulator, *, quadrature: int = 40, grid: int = 4000, store_cells: int = 100
) -> SolverResult:
    """Lower bound for a transshipment centre with identical stores: the balance relaxation
    (Eppen & Schrage 1981; Federgruen & Zipkin 1984).

    Allowing the centre to rebalance the stores' positions freely makes every real policy
    feasible, and for identical stores the balanced allocation is optimal (Jensen), so each
    period costs at least ``min_y E G((y - D_total) / n)`` per store (proof: docs/inventory.md,
    "Balance relaxation"). Tighter than the pooled newsvendor (it charges the stores' own risk)
    and the decoupled base-stock bound (it charges the centre's lead time). ``G`` is integrated on
    a grid of std/``store_cells``."""
    start = time.perf_counter()
    solver = "balanced_allocation_bound"
    p, net = sim.params, sim.network
    centre, lw, ls = _transshipment_layout(sim, solver)
    stores = net.stores
    mean, std = p.demand.mean.double().numpy(), p.demand.std.double().numpy()
    h_all, b_all = p.holding[stores].double().numpy(), p.penalty.double().numpy()
    if not all(np.ptp(v) == 0 for v in (mean, std, h_all, b_all)):
        raise ValueError(f"{solver}: needs identical stores (same demand, holding and penalty)")
    n_st, rho = len(stores), float(p.demand.correlation)
    h, b, mu, sd = float(h_all[0]), float(b_all[0]), float(mean[0]), float(std[0])
    # G on a grid: one store's demand over its L_s + 1 periods
    delta_s = max(sd, 1e-3) / store_cells
    store_pmf, _ = _clipped_normal_sum(mu, sd, ls + 1, delta_s)
    xs, g_grid = _newsvendor_on_grid(store_pmf, delta_s, h, b)
    mean_store = float((store_pmf * xs).sum())

    def g(x: np.ndarray) -> np.ndarray:  # linear beyond the grid: p (mu - x) below 0, h above
        inside = np.interp(x, xs, g_grid)
        return np.where(x < 0, b * (mean_store - x), np.where(x > xs[-1], h * (x - mean_store), inside))

    periods = max(lw, 1)
    pooled, delta_w, exact = _pooled_demand(mean, std, rho, periods, quadrature, grid)
    keep = pooled > 1e-300
    dw, pw = (np.arange(len(pooled)) * delta_w)[keep], pooled[keep]

    def cost(level: float) -> float:
        return float((pw * g((level - dw) / n_st)).sum())

    # cost is convex in the level: golden-section search over a bracket wide enough for the
    # total mean demand over the centre's lead time plus every store's critical quantile
    lo, hi = 0.0, float(dw[-1]) + n_st * float(xs[-1])
    ratio = (math.sqrt(5) - 1) / 2
    a, c = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fc = cost(a), cost(c)
    while hi - lo > delta_s * 1e-2:
        if fa <= fc:
            hi, c, fc = c, a, fa
            a = hi - ratio * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, c, fc
            c = lo + ratio * (hi - lo)
            fc = cost(c)
    level = (lo + hi) / 2
    value = cost(level) + _transshipment_order_cost(sim, centre) / n_st
    return SolverResult(
        name=solver, objective=value, kind="lower_bound",
        status=(f"balance relaxation: centre lead {periods}, stores {ls + 1} periods "
                f"(grid steps {delta_w:.3g} / {delta_s:.3g})"),
        wall_s=time.perf_counter() - start,
        details={"system_level": level, "exact": exact, "stores": n_st, "correlation": rho},
    )


# -- 5. perfect-information LP ---------------------------------------------------------------


class _PyomoLP:
    """Backend building the hindsight LP in Pyomo; demand is a mutable Param so one model is
    re-solved for every trace by the persistent APPSI HiGHS interface."""

    def __init__(self, n_stores: int, horizon: int) -> None:
        import pyomo.environ as pyo

        self.pyo = pyo
        self.m = pyo.ConcreteModel()
        self.m.demand = pyo.Param(range(n_stores), range(horizon), mutable=True, initialize=0.0)
        self.m.cons = pyo.ConstraintList()
        self._n = 0

    def vars(self, n: int, free: bool = False) -> list:
        name = f"v{self._n}"
        self._n += 1
        domain = self.pyo.Reals if free else self.pyo.NonNegativeReals
        self.m.add_component(name, self.pyo.Var(range(n), domain=domain))
        var = getattr(self.m, name)
        return [var[i] for i in range(n)]

    def demand(self, s: int, t: int):
        return self.m.demand[s, t]

    def add(self, expr) -> None:
        self.m.cons.add(expr)

    def total(self, terms: list):
        return self.pyo.quicksum(terms)

    def minimize(self, expr) -> None:
        self.m.obj = self.pyo.Objective(expr=expr)


class _GlopLP:
    """The same LP through OR-Tools GLOP, with demand as plain numbers (one model per trace)."""

    def __init__(self, demand: np.ndarray) -> None:
        from ortools.linear_solver import pywraplp

        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        self.values = demand  # [horizon, stores]
        self.inf = self.solver.infinity()

    def vars(self, n: int, free: bool = False) -> list:
        lb = -self.inf if free else 0.0
        return [self.solver.NumVar(lb, self.inf, "") for _ in range(n)]

    def demand(self, s: int, t: int) -> float:
        return float(self.values[t, s])

    def add(self, expr) -> None:
        self.solver.Add(expr)

    def total(self, terms: list):
        return self.solver.Sum(terms)

    def minimize(self, expr) -> None:
        self.solver.Minimize(expr)


def _check_lp_inputs(sim: InventorySimulator, trace: Trace, warmup: int) -> None:
    _scalar_params(sim, "perfect_information_lp")
    sim.check_trace(trace)
    if not 0 <= warmup < trace.horizon:
        raise ValueError(f"warmup: must lie in [0, horizon={trace.horizon}), got {warmup}")


def _build_lp(sim: InventorySimulator, lp: Any, horizon: int, warmup: int) -> None:
    """Hindsight LP with the simulator's dynamics: ship[e,t] is what leaves on edge e at t;
    stock[n,t] the on-hand at the start of t (after arrivals). Lost sales: sales <= demand and
    <= stock; backlog: net stock = pos - neg. Costs count for t >= warmup."""
    net, p = sim.network, sim.params
    n, e = net.n_nodes, net.n_edges
    lead = [int(v) for v in p.lead_time]
    hold = [float(v) for v in p.holding]
    pen = [float(v) for v in p.penalty]
    ocost = [float(v) for v in p.order_cost]
    init = [0.0] * n if p.initial_onhand is None else [float(v) for v in p.initial_onhand]
    store_idx = {node: i for i, node in enumerate(net.stores)}
    out_edges = [[k for k, (src, _) in enumerate(net.edges) if src == node] for node in range(n)]
    in_edges = [net.inbound(node) for node in range(n)]
    cost_terms: list = []
    stock = [lp.vars(n, free=not p.lost_sales)]
    for node in range(n):
        lp.add(stock[0][node] == init[node])
    ships: list[list] = []
    for t in range(horizon):
        ship = lp.vars(e)
        ships.append(ship)
        counted = t >= warmup
        nxt = lp.vars(n, free=not p.lost_sales) if t + 1 < horizon else None
        for node in range(n):
            out = [ship[k] for k in out_edges[node]]
            if out:
                total_out = lp.total(out)
                if net.kinds[node] == "transship":
                    lp.add(total_out == stock[t][node])
                else:
                    lp.add(total_out <= stock[t][node])
            now = [ship[k] for k in in_edges[node] if lead[k] == 0]
            level = stock[t][node] - (lp.total(out) if out else 0) + (lp.total(now) if now else 0)
            if node in store_idx:
                s = store_idx[node]
                d = lp.demand(s, t)
                if p.lost_sales:
                    sales = lp.vars(1)[0]
                    lp.add(sales <= d)
                    lp.add(sales <= level)
                    end = level - sales
                    if counted:
                        cost_terms += [hold[node] * end, pen[s] * (d - sales)]
                else:
                    pos, neg = lp.vars(2)
                    lp.add(pos - neg == level - d)
                    end = pos - neg
                    if counted:
                        cost_terms += [hold[node] * pos, pen[s] * neg]
            else:
                end = level
                if counted and hold[node]:
                    cost_terms.append(hold[node] * end)
            if nxt is not None:
                arriving = [ships[t - lead[k] + 1][k] for k in in_edges[node]
                            if lead[k] >= 1 and t - lead[k] + 1 >= 0]
                lp.add(nxt[node] == end + (lp.total(arriving) if arriving else 0))
        if counted:
            cost_terms += [ocost[k] * ship[k] for k in range(e) if ocost[k]]
        if nxt is not None:
            stock.append(nxt)
    lp.minimize(lp.total(cost_terms))


def perfect_information_lp(
    sim: InventorySimulator, trace: Trace, warmup: int, *, backend: str = "highs"
) -> SolverResult:
    """Per-trace hindsight optimum (all demand known in advance): a lower bound on the cost of
    any non-anticipative policy on the same trace, since every such policy's shipments are a
    feasible point of this LP (sales are relaxed to <= min(stock, demand)).

    Dynamics run from t = 0 with the simulator's initial state; costs count for t >= warmup.
    ``per_trace``: cost per store-period of each episode. One Pyomo model is built and
    re-solved with each trace's demand (APPSI persistent HiGHS); ``backend='glop'`` solves the
    same LP with OR-Tools GLOP instead (used to cross-check HiGHS).
    """
    start = time.perf_counter()
    _check_lp_inputs(sim, trace, warmup)
    demand = trace["demand"].detach().double().cpu().numpy()  # [B, T, S]
    batch, horizon, n_st = demand.shape
    per_trace, statuses = [], []
    if backend == "highs":
        from pyomo.contrib.appsi.solvers import Highs

        lp = _PyomoLP(n_st, horizon)
        _build_lp(sim, lp, horizon, warmup)
        build_s = time.perf_counter() - start
        opt = Highs()  # persistent: later solves only push the changed right-hand sides
        opt.config.load_solution = False
        for i in range(batch):
            lp.m.demand.store_values(
                {(s, t): float(demand[i, t, s]) for t in range(horizon) for s in range(n_st)}
            )
            res = opt.solve(lp.m)
            status = str(res.termination_condition).split(".")[-1]
            statuses.append(status)
            per_trace.append(float(res.best_feasible_objective) if status == "optimal" else math.nan)
    elif backend == "glop":
        build_s = 0.0
        for i in range(batch):
            lp = _GlopLP(demand[i])
            _build_lp(sim, lp, horizon, warmup)
            code = lp.solver.Solve()
            status = "optimal" if code == lp.solver.OPTIMAL else f"glop status {code}"
            statuses.append(status)
            per_trace.append(lp.solver.Objective().Value() if code == lp.solver.OPTIMAL else math.nan)
    else:
        raise ValueError(f"backend: {backend!r}; allowed 'highs', 'glop'")
    counted = n_st * (horizon - warmup)
    values = torch.tensor(per_trace, dtype=torch.float64) / counted
    all_ok = all(s == "optimal" for s in statuses)
    return SolverResult(
        name=f"perfect_information_lp[{backend}]",
        objective=float(values.mean()) if all_ok else math.nan,
        kind="lower_bound",
        status="optimal" if all_ok else "; ".join(sorted(set(statuses))),
        wall_s=time.perf_counter() - start, per_trace=values,
        details={"episodes": list(range(batch)), "horizon": horizon, "warmup": warmup, "build_s": build_s},
    )


# -- 5b. decoupled-store bound ------------------------------------------------------------------


def decoupled_newsvendor_bound(sim: InventorySimulator) -> SolverResult:
    """Lower bound for any network of Normal-demand stores: the sum over stores of the
    newsvendor cost with instant, unlimited, free supply.

    Why it is valid: give every store a zero lead time, an upstream that never runs short and
    free shipping. Upstream holding and order costs are dropped (both >= 0), and a store with
    instant supply can replay the arrival stream of any policy of the real network, so its
    optimal cost is no higher. With instant supply, ordering up to the p/(p+h) quantile every
    period is optimal (inventory only carries over, never needs to), costing the single-period
    newsvendor cost each period. Loose when lead times are long; it ignores correlation, which
    the real network cannot exploit to go below it either.
    """
    start = time.perf_counter()
    _scalar_params(sim, "decoupled_newsvendor_bound")
    demand = sim.params.demand
    if demand.kind != "normal":
        raise ValueError("decoupled_newsvendor_bound: needs Normal store demand")
    mu, sigma = demand.mean.double().numpy(), demand.std.double().numpy()
    stores = sim.network.stores
    h = sim.params.holding.double().numpy()[stores]
    p = sim.params.penalty.double().numpy()
    total = 0.0
    for m, sd, hold, pen in zip(mu, sigma, h, p):
        total += _clipped_normal_newsvendor(float(m), float(sd), float(hold), float(pen))
    objective = total / len(stores)
    return SolverResult(
        "decoupled_newsvendor_bound", objective, "lower_bound", "exact (closed form)",
        time.perf_counter() - start, details={"per_store": "instant unlimited supply"},
    )


def decoupled_base_stock_bound(sim: InventorySimulator) -> SolverResult:
    """Lower bound for a backlogged network of Normal-demand stores: the mean over stores of
    each store's optimal single-store base-stock cost over its own (shortest) inbound lead time.

    Why it is valid: give each store an upstream that never runs short. Upstream holding and
    order costs are dropped (both >= 0) and the store keeps its own lead time, so every
    allocation the real network makes is still committed L periods before the demand it
    meets; a store alone with a perfect upstream is a single backlogged store, whose optimum is
    base-stock over L+1 periods. Unlike the pooled bound it charges each store the demand
    uncertainty no upstream reallocation can remove; `references` reports both and the
    evaluation uses the tighter one.
    """
    start = time.perf_counter()
    _scalar_params(sim, "decoupled_base_stock_bound")
    p, net = sim.params, sim.network
    if p.lost_sales or p.demand.kind != "normal":
        raise ValueError("decoupled_base_stock_bound: needs backlogged stores with Normal demand")
    total = 0.0
    for i, store in enumerate(net.stores):
        lead = min(int(p.lead_time[e]) for e in net.inbound(store))
        mean, std = float(p.demand.mean[i]), float(p.demand.std[i])
        _, cost, _ = _single_stage(mean, std, lead + 1, float(p.holding[store]),
                                   float(p.penalty[i]), max(std, 1e-3) / 100)
        total += cost
    return SolverResult(
        "decoupled_base_stock_bound", total / len(net.stores), "lower_bound",
        "exact (closed form per store)", time.perf_counter() - start,
        details={"per_store": "perfect upstream, own lead time"},
    )


def _clipped_normal_newsvendor(mu: float, sigma: float, h: float, p: float) -> float:
    """min_S E[h (S - D)^+ + p (D - S)^+] for D = max(Normal(mu, sigma), 0), in closed form."""
    if sigma == 0.0:
        return 0.0
    ratio = p / (p + h)
    zero_mass = norm.cdf(-mu / sigma)
    if ratio <= zero_mass:  # order nothing: every unit held would cost more than it saves
        return p * (mu * norm.cdf(mu / sigma) + sigma * norm.pdf(mu / sigma))
    level = mu + sigma * norm.ppf(ratio)
    z = (level - mu) / sigma
    over_level = sigma * (norm.pdf(z) - z * (1 - norm.cdf(z)))  # E(D - S)^+
    mean_clipped = mu * norm.cdf(mu / sigma) + sigma * norm.pdf(mu / sigma)
    under_level = level - mean_clipped + over_level  # E(S - D)^+
    return h * under_level + p * over_level


# -- 6. dispatch ------------------------------------------------------------------------------

LP_EPISODES = 4
LP_PERIODS = 500


def references(sim: InventorySimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """The reference optimum or bound of a scenario, on (a part of) the evaluation trace.

    The perfect-information LP runs on the first ``LP_EPISODES`` episodes and, when the trace
    is longer, on its first ``LP_PERIODS`` periods with the warm-up cut to the same fraction
    (a Pyomo model of 1,000 periods x 10 stores takes ~10 s to build and ~3 s per solve on
    2 cores); `details['subset']` says what was used. `per_trace` (paired gaps on those
    episodes) is given only when the LP covers the evaluation's periods; on a shorter window
    the bound is one number compared unpaired (its values in `details['window_values']`).
    With zero ordering costs and a warm-up longer than the lead times, hindsight
    orders match demand exactly and the bound is 0 (`details['trivial']`).
    """
    name = sim.name
    if name == "inventory/one_store_backlog":
        return [base_stock_optimum(sim)]
    if name == "inventory/one_store_lost":
        return [lost_sales_dp(sim)]
    if name == "inventory/serial":
        return [echelon_base_stock_optimum(sim)]
    if name == "inventory/transshipment":
        results = [pooled_newsvendor_bound(sim), decoupled_base_stock_bound(sim)]
        try:
            results.append(balanced_allocation_bound(sim))
        except ValueError:  # unequal stores: the two bounds above still hold
            pass
        return results
    if name in ("inventory/one_warehouse", "inventory/many_warehouses", "inventory/real_data"):
        return _lp_references(sim, trace, warmup)
    if name == "inventory/network":
        return network_references(sim, trace, warmup)
    raise ValueError(
        f"references: no inventory reference for scenario {name!r}; known: "
        "inventory/one_store_backlog, one_store_lost, serial, transshipment, one_warehouse, "
        "many_warehouses, real_data, network"
    )


def network_references(sim: InventorySimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """References of a network file, chosen by its structure: the exact optimum where one
    applies (a single backlogged Normal store, a single lost-sales Poisson store, a serial
    backlogged Normal chain, none with link capacities or shipping or in-transit costs), else the
    perfect-information LP and decoupled newsvendor bounds. Those bounds leave out link
    capacities, in-transit holding and the allocation rule: relaxing constraints and dropping
    non-negative costs keeps them lower bounds."""
    p = sim.params
    plain = (p.capacity is None and p.transit_holding is None
             and not bool((p.order_cost != 0).any()))
    if plain:
        for solver in (base_stock_optimum, lost_sales_dp, echelon_base_stock_optimum):
            try:
                return [solver(sim)]
            except ValueError:  # the structure does not fit this optimum
                continue
    return _lp_references(sim, trace, warmup)


def _lp_references(sim: InventorySimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """The perfect-information LP on a subset of the trace, plus the decoupled newsvendor bound
    for Normal demand (see `references`)."""
    episodes = min(trace.batch, LP_EPISODES)
    periods = min(trace.horizon, LP_PERIODS)
    lp_warmup = warmup if periods == trace.horizon else int(warmup * periods / trace.horizon)
    sub = Trace({k: v[:episodes, :periods] for k, v in trace.data.items()}, trace.seed)
    res = perfect_information_lp(sim, sub, lp_warmup)
    # per-episode values pair with the policies' only when they cover the same periods;
    # on a shorter window the bound is compared as one number (unpaired)
    paired = periods == trace.horizon
    details = dict(res.details, subset=f"episodes [0, {episodes}), periods [0, {periods}), "
                   f"costs counted from period {lp_warmup}",
                   trivial=bool(abs(res.objective) < 1e-9), paired=paired,
                   window_values=res.per_trace.tolist())
    results = [SolverResult(res.name, res.objective, res.kind, res.status, res.wall_s,
                            per_trace=res.per_trace if paired else None, details=details)]
    if sim.params.demand.kind == "normal":
        results.append(decoupled_newsvendor_bound(sim))
    return results
