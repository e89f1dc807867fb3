"""The inventory scenarios (docs/inventory.md)."""

from __future__ import annotations

from typing import Any

from oprl.registry import Scenario

_INV = "oprl.simulators.inventory:"
_INV_HEUR = "oprl.policies.inventory_heuristics:inventory_heuristics"
_INV_REF = "oprl.solvers.inventory:references"
# measured on 2 CPU cores (benchmarks/RESULTS.md): ~0.3 s per MLP step at batch 256.
# dev_windows: dev episodes long enough for 45 lead-time windows (L=20: 985 periods, L=1:
# 130 instead of the training 100), so the kept weights are the best ones, not the dev set's luckiest
# (`oprl.algorithms.hdpo.lead_time_dev_horizon`)
_ONE_STORE = {"steps": 600, "batch_size": 256, "lr": 3e-3, "lr_final_fraction": 0.05,
              "dev_windows": 45}
_NETWORK = {"steps": 300, "batch_size": 64, "lr": 3e-3, "lr_final_fraction": 0.1,
            "dev_scenarios": 128}
_SMALL_GNN = {"hidden": 32, "layers": 2}
_POLICIES = {"mlp": "oprl.policies.inventory_mlp:InventoryMLP", "gnn": "oprl.policies.inventory_gnn:InventoryGNN"}
_ALGORITHMS = {"hdpo": "oprl.algorithms.hdpo:train_hdpo"}
_HEURISTICS = ("newsvendor", "newsvendor (adaptive)", "base-stock", "capped base-stock",
               "echelon base-stock")
_REFERENCES = ("base_stock_optimum", "lost_sales_dp", "echelon_base_stock_optimum",
               "pooled_newsvendor_bound", "decoupled_base_stock_bound", "balanced_allocation_bound",
               "decoupled_newsvendor_bound", "perfect_information_lp[highs]",
               "perfect_information_lp[glop]")
_SHARED = {"policies": _POLICIES, "algorithms": _ALGORITHMS,
           "heuristic_names": _HEURISTICS, "reference_names": _REFERENCES}

SCENARIOS = [
    Scenario("inventory/one_store_backlog", _INV + "one_store_backlog",
             "one store, backlogged Normal(5,1.6) demand; optimum: base-stock", _INV_HEUR,
             _INV_REF, train_defaults=_ONE_STORE, **_SHARED),
    Scenario("inventory/one_store_lost", _INV + "one_store_lost",
             "one store, lost sales, Poisson(5) demand; optimum: dynamic programme",
             _INV_HEUR, _INV_REF, train_defaults=_ONE_STORE, **_SHARED),
    Scenario("inventory/serial", _INV + "serial",
             "4-location serial system, backlog; optimum: echelon base-stock", _INV_HEUR,
             _INV_REF, train_defaults=_ONE_STORE, **_SHARED),
    Scenario("inventory/transshipment", _INV + "transshipment",
             "transshipment centre and stores; bound: balance relaxation", _INV_HEUR,
             _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN, **_SHARED),
    Scenario("inventory/one_warehouse", _INV + "one_warehouse",
             "one warehouse, many lost-sales stores; bound: perfect-information LP",
             _INV_HEUR, _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN, **_SHARED),
    Scenario("inventory/many_warehouses", _INV + "many_warehouses",
             "several warehouses, per-edge lead times and costs; bound: perfect-info LP",
             _INV_HEUR, _INV_REF, policy="gnn", train_defaults=_NETWORK, policy_kwargs=_SMALL_GNN, **_SHARED),
    Scenario("inventory/network", "oprl.simulators.inventory_network:network",
             "your own supply network from a YAML/JSON file (docs/network-files.md)",
             _INV_HEUR, _INV_REF, train_defaults=_NETWORK,
             param_defaults="oprl.scenarios.inventory:network_training", **_SHARED),
    Scenario("inventory/real_data", "oprl.simulators.inventory_data:real_data",
             "per-product demand series from a CSV/Parquet file; ceiling: perfect foresight",
             _INV_HEUR, _INV_REF,
             train_defaults={"steps": 300, "batch_size": 128, "lr": 3e-3,
                             "lr_final_fraction": 0.05}, **_SHARED),
]




def network_training(params: dict[str, Any]) -> dict[str, Any]:
    """A network file with one store fed along a chain trains like the single-store scenarios
    (long dev episodes, larger batches); anything wider like the built-in networks."""
    from oprl.simulators.network_file import load_network_file

    if not params.get("file"):
        return {}
    spec = load_network_file(params["file"])
    inbound = [sum(link.target == loc.name for link in spec.links)
               for loc in spec.locations if loc.kind != "supplier"]
    return dict(_ONE_STORE) if len(spec.stores) == 1 and max(inbound) == 1 else {}
