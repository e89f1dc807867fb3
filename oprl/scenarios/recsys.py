"""The recommendation scenarios (docs/recsys.md)."""

from __future__ import annotations

from oprl.registry import Scenario

_SIM = "oprl.simulators.recsys:"
_HEUR = "oprl.policies.recsys:recsys_heuristics"
_REF = "oprl.solvers.recsys:references"
_POLICIES = {"mlp": "oprl.policies.recsys:mlp_policy", "gnn": "oprl.policies.recsys:gnn_policy"}
_ALGORITHMS = {"tscac": "oprl.algorithms.constrained_ac:train_tscac",
               "rcpo": "oprl.algorithms.constrained_ac:train_rcpo"}
_SHARED = {"policies": _POLICIES, "algorithms": _ALGORITHMS,
           "algorithm": "tscac", "policy": "mlp", "bench_algorithms": ("tscac", "rcpo")}

# tabular: selection and multipliers on SAMPLED estimates only (the exact evaluator is reported,
# never read): dev = 65,536 Monte-Carlo episodes every 5 steps, a threshold counts as met when
# the estimate less 1.5 standard errors reaches it; the multipliers follow a fresh on-policy
# sample of 4,096 episodes per step aiming 1.5% above each threshold; the kept policy is the
# moving average (decay 0.9) of the actor's weights. TSCAC: 37 stage-one steps per signal,
# critics re-estimated for the current actor in the last half of stage two; stage two moves
# 30% of the way each step. RCPO: PID-style multipliers (proportional term 1.0).
_TABULAR_SELECTION = {"dual_source": "sample", "dual_episodes": 4096, "margin": 0.015,
                      "dev_episodes": 65536, "dev_z": 1.5, "tolerance": 0.0, "eval_every": 5,
                      "average": 0.9, "critic_iters": 60, "critic_lr": 3e-3}
_TABULAR_ALGOS = {
    "tscac": {**_TABULAR_SELECTION, "steps": 300, "stage1_fraction": 0.5, "stage1_tau": 0.02,
              "damping": 0.3, "reeval_fraction": 0.5},
    "rcpo": {**_TABULAR_SELECTION, "steps": 200, "explore": 0.25, "mu_kp": 1.0},
}

SCENARIOS = [
    Scenario("recsys/tabular", _SIM + "tabular",
             "finite CMDP (3 user types x 3 engagement levels, 4 item kinds); optimum: "
             "occupancy-measure LP", _HEUR, _REF,
             train_defaults={"steps": 150, "batch_size": 512, "eval_every": 10,
                             "dev_episodes": 2048},
             algorithm_defaults=_TABULAR_ALGOS,
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
