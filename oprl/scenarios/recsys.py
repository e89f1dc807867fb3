"""The recommendation scenarios (DESIGN.md, "Recommendation")."""

from __future__ import annotations

from oprl.registry import Scenario

_SIM = "simulators.recsys:"
_HEUR = "policies.recsys:recsys_heuristics"
_REF = "solvers.recsys:references"
_POLICIES = {"mlp": "policies.recsys:mlp_policy", "gnn": "policies.recsys:gnn_policy"}
_ALGORITHMS = {"tscac": "oprl.algorithms.constrained_ac:train_tscac",
               "rcpo": "oprl.algorithms.constrained_ac:train_rcpo"}
_COMMON = ("horizon", "warmup", "eval_horizon", "eval_warmup")
_SHARED = {"policies": _POLICIES, "algorithms": _ALGORITHMS, "common_params": _COMMON,
           "algorithm": "tscac", "policy": "mlp", "bench_algorithms": ("tscac", "rcpo")}

SCENARIOS = [
    Scenario("recsys/tabular", _SIM + "tabular",
             "finite CMDP (3 user types x 3 engagement levels, 4 item kinds); optimum: "
             "occupancy-measure LP", _HEUR, _REF,
             train_defaults={"steps": 150, "batch_size": 512, "eval_every": 10,
                             "dev_episodes": 2048},
             policy_kwargs={"hidden": (32, 32)},
             bench_defaults={"eval_episodes": 4096, "tune_episodes": 1024, "tune_horizon": 120},
             **_SHARED),
    Scenario("recsys/short_video", _SIM + "short_video",
             "KuaiRand-calibrated short-video feed: max watch time s.t. follow/like/comment/"
             "share per session", _HEUR, _REF,
             train_defaults={"steps": 70, "batch_size": 128, "eval_every": 10,
                             "dev_episodes": 256},
             policy_kwargs={"hidden": (32, 32)},
             bench_defaults={"eval_episodes": 2048, "tune_episodes": 512, "tune_horizon": 60},
             **_SHARED),
]
