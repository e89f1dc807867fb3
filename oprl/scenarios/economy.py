"""The tax-economy scenarios (docs/economy.md)."""

from __future__ import annotations

from oprl.registry import Scenario

_ECO = "oprl.simulators.economy:"
_HEUR = "oprl.policies.economy:economy_heuristics"
_REF = "oprl.solvers.economy:references"
_POLICIES = {"gnn": "oprl.policies.economy:economy_policy"}
_TWO_LEVEL = "oprl.algorithms.two_level:train_two_level"
# two_level: GNN agents learn (pathwise, with self-imitation of better random hours) while the
# planner learns (risk-seeking policy gradient); the one-step economy keeps a pool of 8
# candidate schedules, settles the agents to all of them and picks the best on dev;
# two_level_br: the same planner learning against the agents' exact best response
_ALGORITHMS = {"two_level": _TWO_LEVEL, "two_level_br": _TWO_LEVEL}
_ALGO_DEFAULTS = {"two_level_br": {"agent_learning": "best_response", "steps": 1000}}
_DYNAMIC_DEFAULTS = {"two_level_br": {"agent_learning": "best_response", "steps": 300}}
_SHARED = {"policies": _POLICIES, "algorithms": _ALGORITHMS, "algorithm": "two_level",
           "policy": "gnn", "heuristics": _HEUR, "references": _REF,
           "bench_algorithms": ("two_level", "two_level_br"),
           "algorithm_defaults": _ALGO_DEFAULTS}
_BENCH = {"eval_episodes": 16, "tune_episodes": 4, "tune_horizon": 1}

SCENARIOS = [
    Scenario("economy/one_step", _ECO + "one_step",
             "one tax period: N agents choose hours under a 7-bracket schedule; optimum: "
             "bilevel MILP on the 5% grid",
             train_defaults={"steps": 1500, "batch_size": 128, "agent_updates": 3,
                             "settle_phase": 0.15, "imitation": 10.0, "candidates": 8},
             bench_defaults=_BENCH, **_SHARED),
    Scenario("economy/dynamic", _ECO + "dynamic",
             "several tax periods with savings; the planner sets the schedule every period",
             train_defaults={"steps": 400, "batch_size": 64, "eval_every": 50,
                             "agent_updates": 3, "settle_phase": 0.15, "imitation": 10.0},
             bench_defaults=_BENCH, **{**_SHARED, "algorithm_defaults": _DYNAMIC_DEFAULTS}),
]
