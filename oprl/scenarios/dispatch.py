"""The ride-hailing dispatch scenario (DESIGN.md, "Ride-hailing dispatch")."""

from __future__ import annotations

from oprl.registry import Scenario

# measured on the shared 2-core CPU (benchmarks/RESULTS.md): one OSPO step (4 episodes x 30
# minutes, 2 PPO epochs) takes 4-12 s, so 12 steps train in about 2 minutes and
# `oprl bench dispatch/manhattan` (OSPO, GRPO, 2 rules, 2 bounds on 8 episodes) takes ~5 minutes
# GRPO's discount per one-minute step: with 0.9 a vehicle's reward-to-go is dominated by the
# orders it serves long after the matched one and GRPO's dev reward fell for 12 steps (10,105 ->
# 9,710, seed 0); with 0.5 it rose like OSPO's (10,105 -> 10,536). OSPO ignores gamma.
_TRAIN = {"steps": 12, "batch_size": 4, "lr": 3e-3, "temperature": 0.05, "epochs": 2,
          "dev_scenarios": 4, "eval_every": 4, "gamma": 0.5}

SCENARIOS = [
    Scenario(
        "dispatch/manhattan", "simulators.dispatch:manhattan",
        "69 Manhattan taxi zones, 1,000 vehicles, ~4,000 requests in a 30-minute evening peak; "
        "exact per-step matching; bound: hindsight min-cost flow",
        "policies.dispatch:dispatch_heuristics", "solvers.dispatch:references",
        algorithm="ospo", policy="mlp",
        policies={"mlp": "policies.dispatch:PairMLP", "gnn": "policies.dispatch:ZoneGNN"},
        algorithms={"ospo": "oprl.algorithms.ospo:train_ospo",
                    "grpo": "oprl.algorithms.ospo:train_grpo"},
        bench_algorithms=("ospo", "grpo"),
        bench_defaults={"eval_episodes": 8, "tune_episodes": 1, "tune_horizon": 30},
        train_defaults=_TRAIN,
        common_params=tuple(
            "horizon warmup eval_horizon eval_warmup start_minute expiry candidates "
            "street_factor trip_length_km peak_amplitude initial_busy initial_busy_max "
            "base_reward km_reward pickup_cost timeout_cost late_cost late_threshold_min "
            "score_resolution matcher trip_file trip_start capacity detour_cost".split()),
    ),
]
