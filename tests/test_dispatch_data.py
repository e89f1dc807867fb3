"""The zone-derivation script's projection and polygon maths on known cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import derive_manhattan_zones as dz  # noqa: E402


def test_inverse_lambert_maps_the_projection_origin_home():
    lon, lat = dz.lcc_inverse(dz.LCC["false_easting_ft"], dz.LCC["false_northing_ft"])
    assert lon == pytest.approx(-74.0, abs=1e-9)
    assert lat == pytest.approx(dz.LCC["lat0"], abs=1e-9)


def test_one_degree_of_latitude_is_about_111_km_north():
    x0, y0 = dz.LCC["false_easting_ft"], 0.0
    _, lat_a = dz.lcc_inverse(x0, y0 + 100_000 / dz.FT_US)  # 100 km north in the plane
    _, lat_b = dz.lcc_inverse(x0, y0)
    assert (lat_a - lat_b) * 111.0 == pytest.approx(100.0, rel=0.01)


def test_centroid_of_a_square_with_a_hole():
    outer = np.array([[0, 0], [0, 4], [4, 4], [4, 0], [0, 0]], dtype=float)  # clockwise
    hole = np.array([[3, 3], [4, 3], [4, 4], [3, 4], [3, 3]], dtype=float)  # counter-clockwise
    cx, cy, area = dz.polygon_centroid([outer, hole])
    assert area == pytest.approx(15.0)
    assert cx == pytest.approx((16 * 2 - 1 * 3.5) / 15)
    assert cy == pytest.approx((16 * 2 - 1 * 3.5) / 15)


def test_island_records_get_their_own_ids():
    assert dz.zone_id({"LocationID": "103", "OBJECTID": "105"}) == 105
    assert dz.zone_id({"LocationID": "56", "OBJECTID": "57"}) == 56
