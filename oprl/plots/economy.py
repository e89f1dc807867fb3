"""Tax schedules side by side: the marginal rate of every bracket under each policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from oprl.plots import pyplot
from oprl.runs import atomic_write


def bracket_labels(cutoffs: Sequence[float]) -> list[str]:
    """'0-9.7', ..., '510.3+' (thousands of coin)."""
    ends = [f"{c:g}" for c in cutoffs]
    return [f"{a}-{b}" for a, b in zip(ends, ends[1:])] + [f"{ends[-1]}+"]


def schedules_figure(schedules: Mapping[str, Sequence[float]], cutoffs: Sequence[float],
                     path: str | Path, values: Mapping[str, float] | None = None) -> None:
    """Grouped bars: one group per bracket, one bar per schedule; ``values`` (e.g. equality x
    productivity) go into the legend."""
    plt = pyplot()
    names = list(schedules)
    k = len(cutoffs)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * k), 3.8))
    for n, name in enumerate(names):
        rates = [100.0 * float(r) for r in schedules[name]]
        if len(rates) != k:
            raise ValueError(f"schedules[{name!r}]: {len(rates)} rates for {k} brackets")
        label = name if values is None or name not in values else f"{name} ({values[name]:.1f})"
        ax.bar([i + (n - (len(names) - 1) / 2) * width for i in range(k)], rates, width,
               label=label)
    ax.set_xticks(range(k), bracket_labels(cutoffs), rotation=20)
    ax.set_xlabel("income bracket (thousands)")
    ax.set_ylabel("marginal rate (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
