"""The fishery scenarios (docs/fishery.md; Montealegre-Mora et al. 2023)."""

from __future__ import annotations

from oprl.registry import Scenario

_FISH = "oprl.simulators.fishery:"
_HEUR = "oprl.policies.fishery:fishery_heuristics"
_REF = "oprl.solvers.fishery:references"
_POLICIES = {"mlp": "oprl.policies.fishery:FisheryMLP", "gnn": "oprl.policies.fishery:FisheryGNN",
             "choice": "oprl.policies.fishery:FisheryChoicePolicy"}
# tscac / rcpo need the discrete menu: --policy choice --set menu=K (survival constraint)
_ALGORITHMS = {"hdpo": "oprl.algorithms.hdpo:train_hdpo",
               "tscac": "oprl.algorithms.constrained_ac:train_tscac",
               "rcpo": "oprl.algorithms.constrained_ac:train_rcpo"}
# 200-year episodes: ~0.3 s per HDPO step at batch 128 on a quiet 2-core CPU (3-5 s while
# the machine was shared 4-8 ways); the dev reward stops improving after ~200 steps
_TRAIN = {"steps": 300, "batch_size": 128, "lr": 3e-3, "eval_every": 20}
_PER_ALGO = {"hdpo": {"lr_final_fraction": 0.05, "dev_scenarios": 256},
             "tscac": {"steps": 300, "dev_episodes": 256, "eval_every": 20},
             "rcpo": {"steps": 300, "dev_episodes": 256, "eval_every": 20}}
_BENCH = {"eval_episodes": 100, "tune_episodes": 64, "tune_horizon": 200}
_SHARED = {"policies": _POLICIES, "algorithms": _ALGORITHMS, "train_defaults": _TRAIN,
           "algorithm_defaults": _PER_ALGO, "bench_defaults": _BENCH}

SCENARIOS = [
    Scenario("fishery/model1", _FISH + "model1",
             "one species with a predation tipping point; optimum: stochastic DP",
             _HEUR, _REF, **_SHARED),
    Scenario("fishery/model2", _FISH + "model2",
             "prey, competitor, predator; prey harvested; reference: 3-D grid DP",
             _HEUR, _REF, **_SHARED),
    Scenario("fishery/model3", _FISH + "model3",
             "prey, competitor, predator; prey and competitor harvested; reference: 3-D grid DP",
             _HEUR, _REF, **_SHARED),
    Scenario("fishery/model4", _FISH + "model4",
             "model 3 with the prey's growth rate drifting from 1 to 1/2; ref.: 3-D grid DP",
             _HEUR, _REF, **_SHARED),
]
