"""Demand-history files: long format with dates, and the mistakes a history file can hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from oprl.simulators.inventory import load_demand_series

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demand" / "weekly_demand.csv"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "history.csv"
    path.write_text(text)
    return path


def test_dated_long_format_is_ordered_by_date(tmp_path):
    path = write(tmp_path, "store,date,demand\nb,2024-01-15,3\na,2024-01-08,1\na,2024-01-01,5\n"
                           "b,2024-01-01,0\na,2024-01-15,2\nb,2024-01-08,7\n")
    assert load_demand_series(path).tolist() == [[5.0, 1.0, 2.0], [0.0, 7.0, 3.0]]


@pytest.mark.parametrize("text, message", [
    ("store,date,demand\na,2024-01-01,1\na,2024-01-08,2\na,2024-01-22,3\n", "not evenly spaced"),
    ("store,date,demand\na,2024-01-01,1\na,someday,2\n", "'someday' is not a date"),
    ("store,date,demand\na,2024-01-01,1\nb,2024-01-08,2\n", "missing (NaN) for product"),
    ("store,date,demand\na,2024-01-01,1\na,2024-01-08,lots\n", "is not a number"),
    ("store,date,demand\na,2024-01-01,1\na,2024-01-01,2\n", "more than one demand row"),
])
def test_a_bad_history_is_one_error_naming_the_file(tmp_path, text, message):
    with pytest.raises(ValueError, match="history.csv") as info:
        load_demand_series(write(tmp_path, text))
    assert message in str(info.value)


def test_the_shipped_example_history_loads():
    series = load_demand_series(EXAMPLE)
    assert series.shape == (60, 156)
    means = series.mean(1)
    assert means.max() / means.min() > 100  # slow and fast movers alike
    assert ((series == 0).float().mean(1) > 0.5).sum() >= 10  # intermittent series
