"""What every solver returns: an objective with its kind and the solver's own status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from oprl.core import Policy

KINDS = ("optimal", "lower_bound", "upper_bound", "best_known")


@dataclass(frozen=True)
class SolverResult:
    """A reference for scoring policies.

    ``objective`` is in the scenario's natural metric (e.g. expected cost per store-period).
    ``per_trace`` holds that metric for every episode of the evaluation trace when the solver
    works per trace (hindsight bounds); ``policy`` is an executable optimal policy when the
    solver yields one, so it can be simulated on exactly the same traces as everything else.
    A status other than 'optimal' is reported as it is, never silently used as optimal.
    """

    name: str
    objective: float
    kind: str
    status: str
    wall_s: float
    per_trace: Tensor | None = None
    policy: Policy | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r}; allowed {KINDS}")
