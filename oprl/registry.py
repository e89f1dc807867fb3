"""Scenario names -> simulator factory, heuristics, reference solvers and training defaults.

Domain modules are imported lazily so `oprl list` stays fast and one domain's optional
dependency never breaks another.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scenario:
    """How to build, benchmark and train one named scenario.

    ``factory``, ``heuristics`` and ``references`` are "module:function" paths:
    ``heuristics(sim, trace, warmup) -> dict[name, policy]`` fits classical policies on training
    traces; ``references(sim, trace, warmup) -> list[SolverResult]`` computes optima or bounds on
    the evaluation trace itself.
    """

    name: str
    factory: str
    description: str
    heuristics: str
    references: str
    algorithm: str = "hdpo"
    policy: str = "mlp"
    train_defaults: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, **params: Any):
        factory = load(self.factory)
        allowed = _parameters(factory)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )
        try:
            return factory(**params)
        except TypeError as err:  # e.g. a string where a number belongs
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None
        except RuntimeError as err:  # torch's complaint about a malformed value
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None

    def parameters(self) -> dict[str, Any]:
        return _parameters(load(self.factory))


def load(path: str) -> Callable:
    """The object a "module:attribute" path names (imported on first use)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


_COMMON = ("horizon", "warmup", "eval_horizon", "eval_warmup", "initial_onhand", "demand_lags")


def _parameters(factory: Callable) -> dict[str, Any]:
    """Named parameters of a factory with their defaults; pass-through ``**kw`` adds the
    common scenario fields."""
    sig = inspect.signature(factory)
    out = {
        n: (None if p.default is inspect.Parameter.empty else p.default)
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        for name in _COMMON:
            out.setdefault(name, None)
    return out


_INV = "simulators.inventory:"
_INV_HEUR = "policies.heuristics:inventory_heuristics"
_INV_REF = "solvers.inventory:references"
# measured on 2 CPU cores (benchmarks/RESULTS.md): ~0.3 s per MLP step at batch 256
_ONE_STORE = {"steps": 600, "batch_size": 256, "lr": 3e-3, "lr_final_fraction": 0.05}
_NETWORK = {"steps": 300, "batch_size": 64, "lr": 3e-3, "lr_final_fraction": 0.1,
            "dev_scenarios": 128}
_SMALL_GNN = {"hidden": 32, "layers": 2}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("inventory/one_store_backlog", _INV + "one_store_backlog",
                 "one store, backlogged Normal(5,1.6) demand; optimum: base-stock", _INV_HEUR,
                 _INV_REF, train_defaults=_ONE_STORE),
        Scenario("inventory/one_store_lost", _INV + "one_store_lost",
                 "one store, lost sales, Poisson(5) demand; optimum: dynamic programme",
                 _INV_HEUR, _INV_REF, train_defaults=_ONE_STORE),
        Scenario("inventory/serial", _INV + "serial",
                 "4-location serial system, backlog; optimum: echelon base-stock", _INV_HEUR,
                 _INV_REF, train_defaults=_ONE_STORE),
        Scenario("inventory/transshipment", _INV + "transshipment",
                 "transshipment centre and stores; bound: pooled newsvendor", _INV_HEUR,
                 _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN),
        Scenario("inventory/one_warehouse", _INV + "one_warehouse",
                 "one warehouse, many lost-sales stores; bound: perfect-information LP",
                 _INV_HEUR, _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN),
        Scenario("inventory/many_warehouses", _INV + "many_warehouses",
                 "several warehouses, per-edge lead times and costs; bound: perfect-info LP",
                 _INV_HEUR, _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN),
        Scenario("inventory/real_data", _INV + "real_data",
                 "per-product demand series from a CSV/Parquet file; ceiling: perfect foresight",
                 _INV_HEUR, _INV_REF,
                 train_defaults={"steps": 300, "batch_size": 128, "lr": 3e-3,
                                 "lr_final_fraction": 0.05}),
    ]
}


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {name!r}; available: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name]


def make(name: str, **params: Any):
    """Build the simulator of a named scenario, e.g. ``make('inventory/serial', penalty=19)``."""
    return get(name).build(**params)
