"""Derive Manhattan's taxi zones (id, name, centroid lon/lat, area) and their adjacency from the
NYC TLC taxi-zone shapefile.

    python scripts/derive_manhattan_zones.py /path/to/nyc_taxi_zones [--out datasets]

The shapefile is read with ``struct`` (no GIS package). Centroids are area-weighted in the
file's NAD83 / New York Long Island State Plane (EPSG:2263, the .prj is checked) and converted
to longitude/latitude by the inverse Lambert conformal conic projection on GRS80 (Snyder 1987,
eqs. 15-1..15-11, 7-9). Zones are adjacent when their boundaries come within ``--touch-ft``
feet; islands are linked to the nearest zone by centroid (``kind=nearest``), so the graph is
connected.
"""

from __future__ import annotations

import argparse
import csv
import math
import struct
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

FT_US = 0.3048006096012192
GRS80_A, GRS80_F = 6378137.0, 1 / 298.257222101
# NAD_1983_StatePlane_New_York_Long_Island_FIPS_3104_Feet
LCC = {"lat1": 40.66666666666666, "lat2": 41.03333333333333, "lat0": 40.16666666666666,
       "lon0": -74.0, "false_easting_ft": 984250.0, "false_northing_ft": 0.0}


def read_shp(path: Path) -> list[list[np.ndarray]]:
    """Polygon rings (arrays of x, y in file units) of every record of a .shp file."""
    data = path.read_bytes()
    if struct.unpack(">i", data[:4])[0] != 9994:
        raise ValueError(f"{path}: not an ESRI shapefile (bad file code)")
    shapes, pos = [], 100
    while pos < len(data):
        _, words = struct.unpack(">ii", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + 2 * words]
        pos += 8 + 2 * words
        kind = struct.unpack("<i", body[:4])[0]
        if kind == 0:
            shapes.append([])
            continue
        if kind not in (5, 15, 25):
            raise ValueError(f"{path}: shape type {kind} is not a polygon")
        n_parts, n_points = struct.unpack("<ii", body[36:44])
        parts = list(struct.unpack(f"<{n_parts}i", body[44:44 + 4 * n_parts]))
        start = 44 + 4 * n_parts
        pts = np.frombuffer(body[start:start + 16 * n_points], dtype="<f8").reshape(-1, 2)
        bounds = parts + [n_points]
        shapes.append([pts[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])])
    return shapes


def read_dbf(path: Path) -> list[dict[str, str]]:
    """Records of a dBASE III file as dicts of stripped strings."""
    data = path.read_bytes()
    n_rec, header_len, rec_len = struct.unpack("<IHH", data[4:12])
    fields, pos = [], 32
    while data[pos] != 0x0D:
        name = data[pos:pos + 11].split(b"\0")[0].decode("ascii")
        fields.append((name, data[pos + 16]))
        pos += 32
    rows = []
    for r in range(n_rec):
        rec = data[header_len + r * rec_len: header_len + (r + 1) * rec_len]
        if rec[:1] == b"*":  # deleted
            continue
        row, at = {}, 1
        for name, width in fields:
            row[name] = rec[at:at + width].decode("latin-1").strip()
            at += width
        rows.append(row)
    return rows


def zone_id(rec: dict[str, str]) -> int:
    """The zone's LocationID. The TLC file labels the three island records (OBJECTID 103, 104,
    105) all LocationID 103, while the lookup table and trip records use 103, 104 and 105
    (Governor's, Ellis and Liberty Island); there OBJECTID is the right id."""
    loc, obj = int(float(rec["LocationID"])), int(float(rec["OBJECTID"]))
    return obj if loc == 103 and obj in (103, 104, 105) else loc


def polygon_centroid(rings: list[np.ndarray]) -> tuple[float, float, float]:
    """Area-weighted centroid and area of a polygon with holes (shapefile rings: outer rings
    clockwise, holes counter-clockwise, so signed areas add up correctly)."""
    area = cx = cy = 0.0
    for ring in rings:
        x, y = ring[:, 0], ring[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        a = cross.sum() / 2
        area += a
        cx += ((x + x1) * cross).sum() / 6
        cy += ((y + y1) * cross).sum() / 6
    return cx / area, cy / area, abs(area)


def _lcc_constants() -> dict[str, float]:
    e = math.sqrt(2 * GRS80_F - GRS80_F**2)

    def m(phi: float) -> float:
        return math.cos(phi) / math.sqrt(1 - (e * math.sin(phi)) ** 2)

    def t(phi: float) -> float:
        s = e * math.sin(phi)
        return math.tan(math.pi / 4 - phi / 2) / ((1 - s) / (1 + s)) ** (e / 2)

    p1, p2, p0 = (math.radians(LCC[k]) for k in ("lat1", "lat2", "lat0"))
    n = (math.log(m(p1)) - math.log(m(p2))) / (math.log(t(p1)) - math.log(t(p2)))
    f = m(p1) / (n * t(p1) ** n)
    return {"e": e, "n": n, "F": f, "rho0": GRS80_A * f * t(p0) ** n}


def lcc_inverse(x_ft: float, y_ft: float) -> tuple[float, float]:
    """State-plane feet -> (longitude, latitude) in degrees (inverse Lambert conformal conic)."""
    c = _lcc_constants()
    x = (x_ft - LCC["false_easting_ft"]) * FT_US
    y = c["rho0"] - (y_ft - LCC["false_northing_ft"]) * FT_US
    rho = math.copysign(math.hypot(x, y), c["n"])
    theta = math.atan2(x, y)
    t = (rho / (GRS80_A * c["F"])) ** (1 / c["n"])
    phi = math.pi / 2 - 2 * math.atan(t)
    for _ in range(20):
        s = c["e"] * math.sin(phi)
        phi = math.pi / 2 - 2 * math.atan(t * ((1 - s) / (1 + s)) ** (c["e"] / 2))
    return math.degrees(theta / c["n"]) + LCC["lon0"], math.degrees(phi)


def check_projection(prj: Path) -> None:
    text = prj.read_text()
    for needed in ("Lambert_Conformal_Conic", "Foot_US", "Long_Island", "-74.0"):
        if needed not in text:
            raise ValueError(f"{prj}: expected NY Long Island State Plane feet, missing {needed!r}")


def adjacency(rings: dict[int, np.ndarray], touch_ft: float) -> set[tuple[int, int]]:
    """Zone pairs whose boundary vertices come within ``touch_ft`` of each other."""
    trees = {z: cKDTree(p) for z, p in rings.items()}
    ids = sorted(rings)
    pairs = set()
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            lo = np.maximum(rings[a].min(0), rings[b].min(0)) - touch_ft
            hi = np.minimum(rings[a].max(0), rings[b].max(0)) + touch_ft
            if (lo > hi).any():
                continue
            if trees[a].sparse_distance_matrix(trees[b], touch_ft).nnz > 0:
                pairs.add((a, b))
    return pairs


def connect_components(ids: list[int], pairs: set[tuple[int, int]],
                       xy: dict[int, tuple[float, float]]) -> set[tuple[int, int]]:
    """Nearest-centroid links joining every other component to the largest one."""
    extra = set()
    while True:
        comp = {z: z for z in ids}

        def find(z: int, comp: dict[int, int] = comp) -> int:
            while comp[z] != z:
                z = comp[z]
            return z

        for a, b in pairs | extra:
            comp[find(a)] = find(b)
        groups: dict[int, list[int]] = {}
        for z in ids:
            groups.setdefault(find(z), []).append(z)
        if len(groups) == 1:
            return extra
        main = max(groups.values(), key=len)
        other = min(groups.values(), key=len)
        best = min(((a, b) for a in other for b in main),
                   key=lambda p: math.dist(xy[p[0]], xy[p[1]]))
        extra.add(tuple(sorted(best)))


def derive(src: Path, out: Path, touch_ft: float = 50.0) -> tuple[int, int]:
    check_projection(src / "taxi_zones.prj")
    shapes = read_shp(src / "taxi_zones.shp")
    records = read_dbf(src / "taxi_zones.dbf")
    if len(shapes) != len(records):
        raise ValueError("shapefile: .shp and .dbf record counts differ")
    zones: dict[int, dict] = {}
    rings: dict[int, list[np.ndarray]] = {}
    for rec, shape in zip(records, shapes):
        if rec["borough"] != "Manhattan":
            continue
        zid = zone_id(rec)
        rings.setdefault(zid, []).extend(shape)
        zones[zid] = {"zone": rec["zone"]}
    xy = {}
    for zid, parts in rings.items():
        cx, cy, area = polygon_centroid(parts)
        lon, lat = lcc_inverse(cx, cy)
        xy[zid] = (cx, cy)
        zones[zid].update(lon=lon, lat=lat, area_km2=area * FT_US**2 / 1e6)
    ids = sorted(zones)
    touching = adjacency({z: np.concatenate(rings[z]) for z in ids}, touch_ft)
    linked = connect_components(ids, touching, xy)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manhattan_zones.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["LocationID", "zone", "lon", "lat", "area_km2"])
        for z in ids:
            d = zones[z]
            w.writerow([z, d["zone"], f"{d['lon']:.6f}", f"{d['lat']:.6f}", f"{d['area_km2']:.4f}"])
    with open(out / "manhattan_adjacency.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["a", "b", "kind"])
        for a, b in sorted(touching):
            w.writerow([a, b, "touch"])
        for a, b in sorted(linked):
            w.writerow([a, b, "nearest"])
    return len(ids), len(touching) + len(linked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapefile_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "datasets")
    parser.add_argument("--touch-ft", type=float, default=50.0)
    args = parser.parse_args()
    n, e = derive(args.shapefile_dir, args.out, args.touch_ft)
    print(f"wrote {n} zones and {e} adjacent pairs to {args.out}")


if __name__ == "__main__":
    main()
