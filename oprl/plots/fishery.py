"""Fishery figures: each policy's harvest as a function of the stock, in a few years, beside
the DP policy (model 1) or the grid-DP policy (models 2-4, the other stocks held fixed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from oprl.core import Policy
from oprl.plots import pyplot
from oprl.runs import atomic_write


def harvest_curve(policy: Policy, stocks: Tensor, year: int, horizon: int,
                  others: Sequence[float] = (), species: int = 0) -> Tensor:
    """Harvest of ``species`` (stock times mortality) for each value of its stock ``[M]``,
    the other stocks fixed at ``others``, in year ``year`` of ``horizon``."""
    m = stocks.shape[0]
    if others:
        pop = torch.tensor(list(others), dtype=torch.float32).repeat(m, 1)
        pop[:, species] = stocks
    else:
        pop = stocks[:, None].float()
    obs = {"pop": pop, "time": torch.full((m, 1), year / horizon), "alive": torch.ones(m, 1)}
    with torch.no_grad():
        mortality = policy(obs)
    return (pop[:, species] * mortality[:, 0]).cpu()


def policy_map(policies: Mapping[str, Policy], path: str | Path, *, horizon: int = 200,
               years: Sequence[int] = (0, 100, 190, 199), x_max: float = 1.2,
               others: Sequence[float] = (), title: str = "") -> None:
    """One panel per year: harvest of the first harvested species against its stock, one
    line per policy (e.g. the learned policy beside the DP policy)."""
    plt = pyplot()
    stocks = torch.linspace(0.0, x_max, 241)
    fig, axes = plt.subplots(1, len(years), figsize=(3.2 * len(years), 3.2), sharey=True)
    for ax, year in zip(list(axes) if len(years) > 1 else [axes], years):
        for name, pol in policies.items():
            style = "--" if "DP" in name else "-"
            ax.plot(stocks, harvest_curve(pol, stocks, year, horizon, others), style, label=name)
        ax.set_title(f"year {year}")
        ax.set_xlabel("stock X" + (f" (Y, Z = {others[1]:.2g}, {others[2]:.2g})" if others else ""))
    axes_list = list(axes) if len(years) > 1 else [axes]
    axes_list[0].set_ylabel("harvest")
    axes_list[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
