"""Certified per-trace upper bound for the fishery models: a linear relaxation of the
perfect-information problem (the noise path known in advance), one LP per episode.

Each growth equation is replaced by linear inequalities every true transition satisfies
(tangent lines and lifted concave hulls above concave terms, McCormick envelopes on per-year
state boxes for products), and the extinction rule is dropped; an episode that dies is
matched by an LP point that harvests everything at death, so the LP optimum bounds every
policy, even one knowing the future. Proof, how loose it is and why: docs/fishery.md,
"Certified LP bound"; measurements in benchmarks/RESULTS.md.

`relaxation_bound` solves the LPs with HiGHS (``highspy``, the sparse matrix passed directly:
building the rows in Pyomo costs ~10x the solve) or OR-Tools GLOP (``backend='glop'``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from oprl.core import Trace
from oprl.result import SolverResult
from oprl.simulators.fishery import FisheryParams, FisherySimulator

BACKENDS = ("highs", "glop")


@dataclass(frozen=True)
class LinearProgram:
    """maximise ``cost @ x`` subject to ``row_lo <= matrix @ x <= row_hi`` and
    ``col_lo <= x <= col_hi`` (infinite entries: no bound); the columns listed in
    ``integer`` are integers (then it is a MILP)."""

    cost: np.ndarray
    matrix: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


@dataclass(frozen=True)
class Lines:
    """Lines ``a + b s``, one per cut."""

    a: np.ndarray
    b: np.ndarray

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """The lower envelope ``min_k a_k + b_k s`` at points ``s``."""
        s = np.asarray(s, dtype=float)
        return (self.a[:, None] + self.b[:, None] * s.reshape(1, -1)).min(0).reshape(s.shape)

    def negated(self) -> Lines:
        return Lines(-self.a, -self.b)


# -- cuts ----------------------------------------------------------------------------------------


def phi(s: np.ndarray, c: float) -> np.ndarray:
    """Type III predation response ``s^2 / (c^2 + s^2)``."""
    return s**2 / (c**2 + s**2)


def upper_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the upper concave hull of points sorted by ``x`` (monotone chain)."""
    keep: list[int] = []
    for i in range(len(x)):
        while len(keep) >= 2:
            j, k = keep[-2], keep[-1]
            # drop k if it lies on or below the segment from j to i
            if (y[k] - y[j]) * (x[i] - x[j]) <= (y[i] - y[j]) * (x[k] - x[j]):
                keep.pop()
            else:
                break
        keep.append(i)
    return x[keep], y[keep]


def concave_cuts(f: Callable[[np.ndarray], np.ndarray], concavity: float, lo: float, hi: float,
                 *, points: int = 801, max_cuts: int = 24) -> Lines:
    """Lines whose minimum lies above ``f`` everywhere on ``[lo, hi]``: facets of the concave
    hull of ``points`` samples lifted by ``concavity * h^2 / 8`` (the most a function with
    ``f'' >= -concavity`` can exceed its piecewise-linear interpolation between samples ``h``
    apart); any subset of facets still lies above the hull, so at most ``max_cuts`` are kept."""
    if not hi > lo:
        raise ValueError(f"concave_cuts: need hi > lo, got [{lo}, {hi}]")
    if concavity < 0 or points < 2 or max_cuts < 1:
        raise ValueError("concave_cuts: concavity >= 0, points >= 2 and max_cuts >= 1 required")
    x = np.linspace(lo, hi, points)
    h = (hi - lo) / (points - 1)
    y = np.asarray(f(x), dtype=float) + concavity * h * h / 8 + 1e-12 * (1 + np.abs(f(x)))
    vx, vy = upper_hull(x, y)
    if len(vx) == 1:
        return Lines(np.array([vy[0]]), np.array([0.0]))
    b = np.diff(vy) / np.diff(vx)
    a = vy[:-1] - b * vx[:-1]
    # the facets under ``max_cuts`` evenly spaced points: a long chord (across a convex
    # stretch) is kept once, steep short facets are not kept at the expense of the chord
    targets = np.linspace(lo, hi, max_cuts)
    pick = np.unique(np.clip(np.searchsorted(vx, targets, side="right") - 1, 0, len(b) - 1))
    return Lines(a[pick], b[pick])


def logistic_tangents(K: float, hi: float, cuts: int = 32) -> Lines:
    """Tangents of the concave ``s (1 - s/K)`` at ``cuts`` points spread over ``[0, hi]``:
    each lies above it everywhere (exactly, no sampling)."""
    m = np.linspace(0.0, hi, cuts)
    return Lines(m**2 / K, 1.0 - 2.0 * m / K)


@dataclass(frozen=True)
class Cuts:
    """The trace-independent cut families of a batch: model 1's growth, one family per piece
    of ``[0, domain]`` split at ``edges`` (one piece: an LP; more: a MILP choosing the piece
    each year), or, for three species, the predation response of X and Y from below and
    above and the logistic tangents."""

    growth: tuple[Lines, ...]
    edges: tuple[float, ...]
    logistic: tuple[Lines, ...]
    phi_below: tuple[Lines, ...]
    phi_above: tuple[Lines, ...]


def make_cuts(p: FisheryParams, domain: np.ndarray, *, max_cuts: int = 24,
              tangents: int = 32, breakpoints: tuple[float, ...] = ()) -> Cuts:
    """Cuts valid on ``[0, domain[i]]`` for each prey species ``i`` (X, and Y if present);
    model 1's growth hull taken piece by piece between ``breakpoints``."""
    curv_phi = 2.0 / p.c**2  # max |phi''| (at s = 0)
    if p.model == "single":
        if p.drift_years > 0:
            raise ValueError("relaxation_bound: model 1 with a drifting growth rate "
                             "(drift_years > 0) is not supported")
        def g(s):
            return p.r * s * (1 - s / p.K) - p.beta * p.predator * phi(s, p.c)
        concavity = 2 * p.r / p.K + p.beta * p.predator * curv_phi
        edges = (0.0, *sorted(b for b in breakpoints if 0 < b < domain[0]), float(domain[0]))
        growth = tuple(concave_cuts(g, concavity, lo, hi, max_cuts=max_cuts)
                       for lo, hi in zip(edges[:-1], edges[1:]))
        return Cuts(growth, edges, (), (), ())
    if breakpoints:
        raise ValueError("breakpoints: only model 1 (one species) has a piecewise hull")
    ks = (p.K, p.k_y)
    below = tuple(concave_cuts(lambda s: -phi(s, p.c), curv_phi, 0.0, float(domain[i]),
                               max_cuts=max_cuts).negated() for i in range(2))
    above = tuple(concave_cuts(lambda s: phi(s, p.c), curv_phi, 0.0, float(domain[i]),
                               max_cuts=max_cuts) for i in range(2))
    logistic = tuple(logistic_tangents(ks[i], float(domain[i]), tangents) for i in range(2))
    return Cuts((), (), logistic, below, above)


# -- boxes ---------------------------------------------------------------------------------------


def _prey_max(a: np.ndarray, r: float, K: float, hi: np.ndarray) -> np.ndarray:
    """max over s in [0, hi] of ``a s + r s (1 - s/K)`` (predation and competition dropped)."""
    if r == 0:
        return np.maximum(a, 0.0) * hi
    s = np.clip((a + r) * K / (2 * r), 0.0, hi)
    return np.maximum((a + r) * s - r * s * s / K, 0.0)


def propagate(p: FisheryParams, eps_t: np.ndarray, lo_t: np.ndarray, hi_t: np.ndarray, t: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One year of interval propagation over a batch: from boxes ``lo_t, hi_t [B, S]`` of
    the stocks in year ``t`` and that year's noise ``eps_t [B, S]`` to ``lo, hi, free [B, S]``
    in year ``t+1``, whatever the harvest (``free``: before the clip at ``max_stock``)."""
    sig = np.asarray(p.sigma, dtype=float)
    lo = np.zeros_like(lo_t)
    free = np.zeros_like(hi_t)
    rates = [(p.r_x(t), p.K)] if p.model == "single" else [(p.r_x(t), p.K), (p.r_y, p.k_y)]
    for i, (r, k) in enumerate(rates):
        free[:, i] = _prey_max(1 + sig[i] * eps_t[:, i], r, k, hi_t[:, i])
    if p.model == "three":
        a = 1 - p.alpha * p.d_z + p.alpha * sig[2] * eps_t[:, 2]
        grow = a + p.alpha * p.b * (hi_t[:, 0] + p.D * hi_t[:, 1])
        free[:, 2] = hi_t[:, 2] * np.maximum(grow, 0.0)
        lo[:, 2] = np.minimum(lo_t[:, 2] * np.maximum(a, 0.0), p.max_stock)
    return lo, np.minimum(free, p.max_stock), free


def state_boxes(p: FisheryParams, eps: np.ndarray, x0: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-year boxes ``lo, hi [B, T+1, S]`` holding every reachable stock of each episode
    (whatever the harvest), and ``free [B, T+1, S]``: the upper bound before the clip at
    ``max_stock`` (where it is <= max_stock, the clip never binds)."""
    b, horizon, n = eps.shape
    lo = np.zeros((b, horizon + 1, n))
    hi = np.zeros((b, horizon + 1, n))
    lo[:, 0] = hi[:, 0] = x0
    free = hi.copy()
    for t in range(horizon):
        lo[:, t + 1], hi[:, t + 1], free[:, t + 1] = propagate(p, eps[:, t], lo[:, t], hi[:, t], t)
    return lo, hi, free


# -- the LP --------------------------------------------------------------------------------------


class _Builder:
    """Columns and sparse rows of an LP, added a few at a time."""

    def __init__(self) -> None:
        self.col_lo: list[float] = []
        self.col_hi: list[float] = []
        self.cost: list[float] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []
        self.integer: list[int] = []

    def col(self, lo: float = -math.inf, hi: float = math.inf, cost: float = 0.0,
            integer: bool = False) -> int:
        if integer:
            self.integer.append(len(self.cost))
        self.col_lo.append(lo)
        self.col_hi.append(hi)
        self.cost.append(cost)
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lo: float = -math.inf,
            hi: float = math.inf) -> None:
        i = len(self.row_lo)
        for j, v in terms:
            if v != 0.0:
                self.rows.append(i)
                self.cols.append(j)
                self.vals.append(float(v))
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    def product(self, w: int, z: int, zl: float, zh: float, q: int, ql: float, qh: float) -> None:
        """McCormick envelope of ``w = z q`` on the box ``[zl, zh] x [ql, qh]``."""
        self.row([(w, 1), (q, -zl), (z, -ql)], lo=-zl * ql)
        self.row([(w, 1), (q, -zh), (z, -qh)], lo=-zh * qh)
        self.row([(w, 1), (q, -zh), (z, -ql)], hi=-zh * ql)
        self.row([(w, 1), (q, -zl), (z, -qh)], hi=-zl * qh)

    def below(self, u: int, s: int, lines: Lines, scale: float = 1.0) -> None:
        """``u <= scale * (a_k + b_k s)`` for every line."""
        for a, b in zip(lines.a, lines.b):
            self.row([(u, 1), (s, -scale * b)], hi=scale * a)

    def pieces(self, u: int, s: int, families: tuple[Lines, ...], edges: tuple[float, ...]
               ) -> None:
        """``u <= f(s)`` with f's hull taken on each piece ``[edges[j], edges[j+1]]``: a
        binary picks the piece (the disjunction's convex-hull formulation: ``s`` and ``u``
        split into per-piece parts, each piece's lines in perspective form)."""
        ys, ss, us = [], [], []
        for j, lines in enumerate(families):
            y, sj, uj = self.col(0.0, 1.0, integer=True), self.col(0.0), self.col()
            self.row([(sj, 1), (y, -edges[j + 1])], hi=0.0)
            self.row([(sj, 1), (y, -edges[j])], lo=0.0)
            for a, b in zip(lines.a, lines.b):
                self.row([(uj, 1), (y, -a), (sj, -b)], hi=0.0)
            ys.append(y)
            ss.append(sj)
            us.append(uj)
        self.row([(y, 1) for y in ys], lo=1.0, hi=1.0)
        self.row([(s, 1)] + [(v, -1) for v in ss], lo=0.0, hi=0.0)
        self.row([(u, 1)] + [(v, -1) for v in us], lo=0.0, hi=0.0)

    def above(self, u: int, s: int, lines: Lines) -> None:
        """``u >= a_k + b_k s`` for every line."""
        for a, b in zip(lines.a, lines.b):
            self.row([(u, 1), (s, -b)], lo=a)

    def build(self) -> LinearProgram:
        shape = (len(self.row_lo), len(self.cost))
        matrix = sp.csr_matrix((self.vals, (self.rows, self.cols)), shape=shape)
        return LinearProgram(np.array(self.cost), matrix, np.array(self.row_lo),
                             np.array(self.row_hi), np.array(self.col_lo), np.array(self.col_hi),
                             np.array(self.integer, dtype=int))


def relaxation_lp(p: FisheryParams, eps: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  free: np.ndarray, cuts: Cuts) -> LinearProgram:
    """The LP of one episode: ``eps [T, S]`` its noise, ``lo, hi, free [T+1, S]`` its boxes
    (`state_boxes`; year 0's box is the starting stocks, ``lo[0] = hi[0]``), ``cuts`` from
    `make_cuts` on a domain containing ``hi``. Its optimum bounds the episode's reward from
    above. Columns ``t * S + i`` hold stock ``i`` in year ``t``."""
    horizon, n = eps.shape
    lp = _Builder()
    sig = np.asarray(p.sigma, dtype=float)
    harvested = set(p.harvested)
    x = [[lp.col(float(lo[t, i]), float(hi[t, i])) for i in range(n)] for t in range(horizon + 1)]
    esc = []  # per year: the post-harvest stock column of each species
    for t in range(horizon):
        row = []
        for i in range(n):
            if i in harvested:
                s = lp.col(0.0, float(hi[t, i]), cost=-1.0)
                lp.cost[x[t][i]] += 1.0
                lp.row([(s, 1), (x[t][i], -1)], hi=0.0)
                row.append(s)
            else:
                row.append(x[t][i])
        esc.append(row)
    for t in range(horizon):
        s = esc[t]
        if p.model == "single":
            u = lp.col()
            if len(cuts.growth) == 1:
                lp.below(u, s[0], cuts.growth[0])
            else:
                lp.pieces(u, s[0], cuts.growth, cuts.edges)
            lp.row([(x[t + 1][0], 1), (s[0], -(1 + sig[0] * eps[t, 0])), (u, -1)], hi=0.0)
            continue
        z, zl, zh = s[2], float(lo[t, 2]), float(hi[t, 2])
        box = [float(hi[t, 0]), float(hi[t, 1])]
        v = lp.col()
        lp.product(v, s[0], 0.0, box[0], s[1], 0.0, box[1])
        w, q = [], []
        for i in range(2):
            pi = lp.col(0.0, float(phi(box[i], p.c)))
            lp.above(pi, s[i], cuts.phi_below[i])
            lp.below(pi, s[i], cuts.phi_above[i])
            w.append(lp.col())
            lp.product(w[i], z, zl, zh, pi, 0.0, float(phi(box[i], p.c)))
            q.append(lp.col())
            lp.product(q[i], z, zl, zh, s[i], 0.0, box[i])
        preds = (p.beta, p.D * p.beta)
        rates = (p.r_x(t), p.r_y)
        for i in range(2):
            lin = 1 + sig[i] * eps[t, i]
            if i in harvested:  # x' <= upper estimate (free disposal)
                u = lp.col()
                lp.below(u, s[i], cuts.logistic[i], rates[i])
                lp.row([(x[t + 1][i], 1), (s[i], -lin), (u, -1), (w[i], preds[i]),
                        (v, p.c_xy)], hi=0.0)
            elif free[t + 1, i] <= p.max_stock:  # x' >= lower estimate (chord of the logistic)
                chord = rates[i] * (1 - box[i] / (p.K, p.k_y)[i])
                lp.row([(x[t + 1][i], 1), (s[i], -(lin + chord)), (w[i], preds[i]),
                        (v, p.c_xy)], lo=0.0)
        a = 1 - p.alpha * p.d_z + p.alpha * sig[2] * eps[t, 2]
        terms = [(x[t + 1][2], 1), (z, -a), (q[0], -p.alpha * p.b), (q[1], -p.alpha * p.b * p.D)]
        lp.row(terms, lo=0.0 if free[t + 1, 2] <= p.max_stock else -math.inf,
               hi=0.0 if a >= 0 else math.inf)
    return lp.build()



# -- solving -------------------------------------------------------------------------------------


def highs_model(lp: LinearProgram):
    """A ``highspy.Highs`` holding the LP (maximisation), not yet solved."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    model = highspy.HighsLp()
    csc = lp.matrix.tocsc()
    model.num_col_, model.num_row_ = lp.matrix.shape[1], lp.matrix.shape[0]
    model.col_cost_ = lp.cost
    model.col_lower_ = np.where(np.isinf(lp.col_lo), -highspy.kHighsInf, lp.col_lo)
    model.col_upper_ = np.where(np.isinf(lp.col_hi), highspy.kHighsInf, lp.col_hi)
    model.row_lower_ = np.where(np.isinf(lp.row_lo), -highspy.kHighsInf, lp.row_lo)
    model.row_upper_ = np.where(np.isinf(lp.row_hi), highspy.kHighsInf, lp.row_hi)
    model.sense_ = highspy.ObjSense.kMaximize
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = csc.indptr
    model.a_matrix_.index_ = csc.indices
    model.a_matrix_.value_ = csc.data
    if len(lp.integer):
        kinds = np.full(model.num_col_, highspy.HighsVarType.kContinuous)
        kinds[lp.integer] = highspy.HighsVarType.kInteger
        model.integrality_ = list(kinds)
    h.passModel(model)
    return h


def solve_highs(lp: LinearProgram, *, time_limit: float = 60.0, mip_gap: float = 1e-3
                ) -> tuple[str, float]:
    """HiGHS on the matrix (dual simplex; branch and bound for a MILP); returns its status
    and the optimum. For a MILP the value is HiGHS's dual bound, an upper bound on the MILP
    optimum (hence still on the fishery) even when ``time_limit`` stops the search."""
    h = highs_model(lp)
    if len(lp.integer):
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.run()
    status = h.modelStatusToString(h.getModelStatus()).lower()
    info = h.getInfo()
    if len(lp.integer):
        value = info.mip_dual_bound
        return status, float(value) if math.isfinite(value) else math.nan
    value = info.objective_function_value if status == "optimal" else math.nan
    return status, float(value)


def solve_glop(lp: LinearProgram) -> tuple[str, float]:
    """The same LP through OR-Tools GLOP (row by row; for cross-checks on small instances)."""
    from ortools.linear_solver import pywraplp

    if len(lp.integer):
        raise ValueError("backend: GLOP solves LPs only; this relaxation has binaries")
    solver = pywraplp.Solver.CreateSolver("GLOP")
    inf = solver.infinity()

    def fin(v: float) -> float:
        return inf if v == math.inf else (-inf if v == -math.inf else float(v))

    xs = [solver.NumVar(fin(lo), fin(hi), "") for lo, hi in zip(lp.col_lo, lp.col_hi)]
    m = lp.matrix
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        con = solver.RowConstraint(fin(lp.row_lo[i]), fin(lp.row_hi[i]), "")
        for j, v in zip(m.indices[lo:hi], m.data[lo:hi]):
            con.SetCoefficient(xs[j], float(v))
    objective = solver.Objective()
    for j, c in enumerate(lp.cost):
        if c:
            objective.SetCoefficient(xs[j], float(c))
    objective.SetMaximization()
    code = solver.Solve()
    if code != pywraplp.Solver.OPTIMAL:
        return f"glop status {code}", math.nan
    return "optimal", float(objective.Value())


def relaxation_bound(sim: FisherySimulator, trace: Trace, *, backend: str = "highs",
                     max_cuts: int = 32, tangents: int = 32,
                     breakpoints: tuple[float, ...] = (), time_limit: float = 60.0
                     ) -> SolverResult:
    """Per-episode upper bound on the total reward of any policy, even one knowing the
    episode's noise in advance: the LP relaxation of `relaxation_lp`, one per episode
    (``per_trace``). Kind ``upper_bound``; status ``optimal`` when every LP solved.

    Model 1 with ``breakpoints`` (e.g. ``(0.29,)``, where the growth leaves the tipping
    point's trap) takes the growth hull piece by piece, a binary a year choosing the piece:
    a MILP, much tighter (the hull no longer bridges the trap), seconds to a minute per
    episode; its value is HiGHS's dual bound (valid even at ``time_limit``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r}; allowed {BACKENDS}")
    start = time.perf_counter()
    p = sim.params
    sim.check_trace(trace)
    eps = trace["eps"].detach().double().cpu().numpy()
    x0 = sim.initial_stocks(trace).detach().double().cpu().numpy()
    lo, hi, free = state_boxes(p, eps, x0)
    domain = hi.max(axis=(0, 1))
    cuts = make_cuts(p, domain, max_cuts=max_cuts, tangents=tangents, breakpoints=breakpoints)
    milp = len(cuts.growth) > 1
    if backend == "highs":
        def solve(lp):
            return solve_highs(lp, time_limit=time_limit)
    else:
        solve = solve_glop
    values, statuses = [], []
    for k in range(trace.batch):
        status, value = solve(relaxation_lp(p, eps[k], lo[k], hi[k], free[k], cuts))
        statuses.append(status)
        values.append(value)
    per_trace = np.array(values)
    ok = all(s == "optimal" for s in statuses)
    what = (f"MILP relaxation, growth hull in {len(cuts.growth)} pieces split at "
            f"{list(cuts.edges[1:-1])}, value = HiGHS dual bound" if milp else
            "LP relaxation: tangent/hull cuts, McCormick on per-year boxes")
    status = ("optimal" if ok else "; ".join(sorted(set(statuses)))) + (
        f" ({what}; perfect information, extinction dropped; {backend})")
    usable = bool(np.isfinite(per_trace).all()) and (ok or milp)  # a dual bound stays valid
    return SolverResult(
        f"{'MILP' if milp else 'LP'} bound[{backend}]",
        float(per_trace.mean()) if usable else math.nan, "upper_bound",
        status, time.perf_counter() - start,
        per_trace=torch.as_tensor(per_trace, dtype=torch.float64),
        details={"n_episodes": trace.batch, "horizon": trace.horizon,
                 "max_box": [float(v) for v in domain]},
    )
