"""oprl: batched differentiable simulators, learned policies and solver references."""

from oprl.core import Rollout, Simulator, Trace, rollout
from oprl.registry import SCENARIOS, make

__all__ = ["SCENARIOS", "Rollout", "Simulator", "Trace", "make", "rollout", "train", "benchmark",
           "load_policy"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # train/benchmark pull in the solvers and torch-geometric: import them on first use
    if name in ("train", "benchmark"):
        from oprl import api

        return getattr(api, name)
    if name == "load_policy":  # a run's policy acting on plain states (docs/deploy.md)
        from oprl.deploy import load_policy

        return load_policy
    raise AttributeError(name)
