"""What every trainer shares: seeds that are pure functions of (seed, step), so a resumed run
continues exactly, and the checkpoint callback of the registry's trainer contract."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

DEV_SEED_OFFSET = 1_000_003


STEP_SEED_STRIDE = 7_919


def step_seed(seed: int, step: int) -> int:
    """Seed of the training batch of ``step``: a pure function, so resuming is exact."""
    return (int(seed) * 1_000_000_007 + (step + 1) * STEP_SEED_STRIDE) % (2**62)


def invoke_callback(callback: Callable[..., Any], step: int, policy: nn.Module,
                    optimizer: torch.optim.Optimizer, history: list,
                    snapshot: Callable[[], dict[str, Any]]) -> None:
    """Call ``callback(step, policy, optimizer, history)``, adding ``state=snapshot()`` (a dict
    that resumes the run exactly) when the callback accepts it; the snapshot is built only then."""
    sig = inspect.signature(callback)
    takes_state = "state" in sig.parameters or any(
        p.kind == p.VAR_KEYWORD for p in sig.parameters.values()
    )
    if takes_state:
        callback(step, policy, optimizer, history, state=snapshot())
    else:
        callback(step, policy, optimizer, history)
