"""Inventory on a recorded demand history, split by date into train, dev and test blocks.

The periods of the history are cut in three consecutive blocks (default: the last 30% test,
the 20% before it dev, the rest train). Training windows come from the train block only;
checkpoint selection scores the dev block and evaluation the test block, each as one episode
per series that first replays the periods before the block as an uncounted warm-up (so demand
lags and pipelines are those of real history, never zero padding). Each series is scaled by its
train-block level, carried in every trace as ``scale``, so one policy serves slow and fast
movers alike (docs/inventory.md, "Real demand histories").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from oprl.core import DataSplits, Trace, check_split
from oprl.simulators.inventory import (
    SUPPLIER,
    Demand,
    InventoryParams,
    InventorySimulator,
    Network,
    load_demand_series,
    series_trace,
)


@dataclass(frozen=True)
class HistoryBlocks:
    """Where the train, dev and test blocks of ``periods`` periods end, and how many periods
    before a block its episodes replay uncounted (``prefix``)."""

    periods: int
    train_end: int
    dev_end: int
    prefix: int

    @staticmethod
    def of(periods: int, dev_fraction: float, test_fraction: float, prefix: int) -> HistoryBlocks:
        """Blocks by date: the last ``test_fraction`` of the periods test, the
        ``dev_fraction`` before it dev, the rest train."""
        for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name}: must lie in (0, 1), got {value}")
        test = max(1, round(periods * float(test_fraction)))
        dev = max(1, round(periods * float(dev_fraction)))
        train_end = periods - test - dev
        if train_end < 1:
            raise ValueError(f"dev_fraction, test_fraction: leave no training periods of "
                             f"{periods} (dev {dev}, test {test})")
        if not 0 <= prefix < train_end:
            raise ValueError(f"eval_warmup: the {prefix} warm-up periods before the dev block "
                             f"must lie in the {train_end} training periods")
        return HistoryBlocks(periods, train_end, train_end + dev, prefix)

    def bounds(self, purpose: str) -> tuple[int, int]:
        """The periods ``[start, stop)`` of block ``purpose``."""
        starts = {"train": 0, "dev": self.train_end, "test": self.dev_end}
        stops = {"train": self.train_end, "dev": self.dev_end, "test": self.periods}
        return starts[check_split(purpose)], stops[purpose]

    def episode(self, purpose: str) -> tuple[int, int, int]:
        """The periods ``[start, stop)`` one ``purpose`` episode replays and its uncounted
        warm-up: the ``prefix`` periods before the block (the train block, which has none
        before it, counts from ``prefix`` on)."""
        first, stop = self.bounds(purpose)
        start = max(first - self.prefix, 0)
        return start, stop, first - start if first else self.prefix


def series_levels(series: torch.Tensor, train_end: int) -> torch.Tensor:
    """Each series' mean demand over the train block ``[products]``, at least one unit over the
    block (a series silent in training still gets a finite scale)."""
    return series[:, :train_end].float().mean(1).clamp_min(1.0 / train_end)


class SeriesInventorySimulator(InventorySimulator, DataSplits):
    """One store per product replaying a demand history; `sample_trace` draws training windows
    of the train block, `holdout` the dev and test episodes."""

    def __init__(self, params: InventoryParams, blocks: HistoryBlocks) -> None:
        super().__init__(params)
        self.blocks = blocks

    def holdout(self, purpose: str, device: str | torch.device = "cpu") -> tuple[Trace, int]:
        start, stop, warmup = self.blocks.episode(purpose)
        d = self.params.demand
        demand = d.series[:, start:stop].float().unsqueeze(-1)
        return series_trace(demand, d.level, seed=None, device=device), warmup


def real_data(
    path: str | Path | None = None, lead_time: int = 4, penalty: float = 9.0, holding: float = 1.0,
    lost_sales: bool = True, demand_lags: int = 8, horizon: int = 52, warmup: int = 12,
    dev_fraction: float = 0.2, test_fraction: float = 0.3, **kw,
) -> SeriesInventorySimulator:
    """One store per product on the demand history in ``path``, split by date into train, dev
    and test blocks; ``eval_warmup`` (default: demand lags + 2 lead times + 1) periods before
    a dev or test block are replayed uncounted."""
    if path is None:
        raise ValueError("path: inventory/real_data needs --set path=FILE.csv (or .parquet)")
    if "eval_horizon" in kw:
        raise ValueError("eval_horizon: fixed by the test block (set test_fraction instead)")
    series = load_demand_series(path)
    explicit = "eval_warmup" in kw
    prefix = int(kw.pop("eval_warmup", demand_lags + 2 * int(lead_time) + 1))
    try:
        blocks = HistoryBlocks.of(series.shape[1], dev_fraction, test_fraction, prefix)
    except ValueError as err:
        if explicit or not str(err).startswith("eval_warmup:"):
            raise
        raise ValueError(  # the default warm-up follows the lead time: name what the user set
            f"lead_time: {lead_time} periods is not shorter than the history allows: the "
            f"warm-up of demand_lags + 2 x lead_time + 1 = {prefix} periods must fit in the "
            f"training block ({err})") from None
    if horizon > blocks.train_end:
        raise ValueError(f"horizon: training windows of {horizon} periods do not fit in the "
                         f"{blocks.train_end} training periods; lower horizon")
    level = series_levels(series, blocks.train_end)
    start, stop, _ = blocks.episode("test")
    params = InventoryParams(
        network=Network(("store",), ((SUPPLIER, 0),)),
        demand=Demand("series", level, series=series, window=(0, blocks.train_end), level=level),
        lead_time=lead_time, holding=holding, penalty=penalty, order_cost=0.0,
        lost_sales=lost_sales, demand_lags=demand_lags, horizon=horizon, warmup=warmup,
        eval_horizon=stop - start, eval_warmup=prefix,
        name="inventory/real_data", extras={"path": str(path)}, **kw,
    )
    return SeriesInventorySimulator(params, blocks)

