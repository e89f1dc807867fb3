"""Every scenario parameter, fed values of every wrong kind, gives a valid simulator or a
ValueError naming the parameter (docs/errors.md); never another exception, a hang or an
allocation that cannot fit (a huge valid value is refused by the size guards)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oprl.core import Simulator
from oprl.registry import SCENARIOS

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# parameters a scenario needs to be built at all (short windows: the tiny history has 15
# training periods)
BASE = {
    "inventory/real_data": {"path": str(DATA / "tiny_demand.csv"), "lead_time": 1,
                            "demand_lags": 2, "horizon": 8, "warmup": 2},
    "inventory/network": {"file": str(EXAMPLES / "networks" / "serial.yaml")},
}

NUMBERS = st.one_of(
    st.integers(-3, 30), st.integers(10**6, 10**12), st.integers(-(10**12), -(10**6)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([2.5, -0.5, 0.0, 1e-12]),
)
VALUES = st.one_of(
    NUMBERS, st.booleans(), st.none(), st.text(max_size=6),
    st.lists(NUMBERS, max_size=4), st.lists(st.text(max_size=3), min_size=1, max_size=2),
)


def _cases():
    for name, spec in sorted(SCENARIOS.items()):
        for param in spec.parameters():
            if param not in BASE.get(name, {}):
                yield name, param


def _build_or_refuse(scenario: str, param: str, value) -> None:
    spec = SCENARIOS[scenario]
    try:
        sim = spec.build(**{**BASE.get(scenario, {}), param: value})
    except ValueError as err:
        assert param in str(err), f"{scenario} {param}={value!r}: {err}"
        return
    assert isinstance(sim, Simulator)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_values_give_a_simulator_or_a_value_error_naming_the_parameter(scenario, data):
    params = [p for s, p in _cases() if s == scenario]
    param = data.draw(st.sampled_from(params), label="parameter")
    value = data.draw(VALUES, label="value")
    _build_or_refuse(scenario, param, value)


@pytest.mark.parametrize("scenario,param", list(_cases()))
def test_each_parameter_refuses_a_string_and_nan(scenario, param):
    """Every parameter at least once: a word and a NaN (no example left to chance)."""
    for value in ("abc", math.nan, [math.nan]):
        _build_or_refuse(scenario, param, value)


@pytest.mark.parametrize("scenario,params,field", [
    ("inventory/one_warehouse", {"n_stores": 100_000}, "n_stores"),
    ("inventory/many_warehouses", {"n_stores": 10**7}, "n_stores"),
    ("inventory/one_store_lost", {"lead_time": 10_000}, "lead_time"),
    ("dispatch/manhattan", {"requests": 1e9}, "requests"),
    ("dispatch/manhattan", {"n_vehicles": 10**9}, "n_vehicles"),
    ("recsys/short_video", {"n_items": 10**9}, "n_items"),
    ("economy/one_step", {"n_agents": 10**9}, "n_agents"),
])
def test_sizes_that_cannot_fit_are_refused_before_allocation(scenario, params, field):
    with pytest.raises(ValueError, match=field):
        SCENARIOS[scenario].build(**params)
