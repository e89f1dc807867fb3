"""Write `weekly_demand.csv`: a synthetic three-year weekly demand history for 60 products.

The series are made to look like a retailer's: levels from a few units a month to hundreds a
week (log-uniform), yearly seasonality of random strength and phase, a mild trend, and a third
of the products intermittent (demand in only some weeks, in lumps). Negative binomial noise
makes the spread grow with the level. Fixed seed: running this again gives the same file.

    python examples/demand/make_weekly_demand.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PRODUCTS, WEEKS, SEED = 60, 156, 2026
START = "2023-01-02"  # a Monday


def weekly_demand(products: int = PRODUCTS, weeks: int = WEEKS, seed: int = SEED) -> pd.DataFrame:
    """Long format: one row per (product, date) with the week's demand."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks)
    rows = []
    for k in range(products):
        level = np.exp(rng.uniform(np.log(0.5), np.log(300.0)))
        season = rng.uniform(0.0, 0.6) * np.sin(2 * np.pi * (t / 52.0 + rng.uniform()))
        trend = rng.uniform(-0.15, 0.25) * t / weeks
        mean = level * np.exp(season + trend)
        intermittent = k % 3 == 2
        if intermittent:  # demand in some weeks only, in lumps of several units
            occurs = rng.uniform(size=weeks) < rng.uniform(0.15, 0.5)
            mean = np.where(occurs, mean * rng.uniform(2.0, 4.0), 0.0)
        dispersion = rng.uniform(2.0, 10.0)  # negative binomial: variance = m + m^2 / r
        p = dispersion / (dispersion + np.maximum(mean, 1e-9))
        demand = np.where(mean > 0, rng.negative_binomial(dispersion, p), 0)
        kind = "intermittent" if intermittent else "smooth"
        name = f"P{k:02d}-{kind}"
        dates = pd.date_range(START, periods=weeks, freq="7D")
        rows += [(name, d.date().isoformat(), int(v)) for d, v in zip(dates, demand)]
    return pd.DataFrame(rows, columns=["product", "date", "demand"])


if __name__ == "__main__":
    out = Path(__file__).with_name("weekly_demand.csv")
    weekly_demand().to_csv(out, index=False)
    print(f"wrote {out}")
