"""Geohashes: cells of the Earth's surface named by base32 text, and distances (pure).

A geohash of ``p`` characters names one cell of a grid: its ``5 * p`` bits
alternate between longitude and latitude (longitude first), each bit halving
the remaining range (upper half = 1), so the cell has ``ceil(5p/2)``
longitude bits and ``floor(5p/2)`` latitude bits. Every prefix of a geohash
names a cell that contains it. The alphabet is :data:`ALPHABET` (digits and
lower-case letters without a, i, l, o).

* :func:`decode` gives a cell's centre and half-sizes (:class:`Cell`);
* :func:`encode` names the cell of a point at a precision;
* :func:`distance_km` is the great-circle (haversine) distance on a sphere
  of radius :data:`EARTH_RADIUS_KM`;
* :func:`covering_cells` names the cells of one precision that together
  cover every point within a distance of a point (a bounding box, so a
  superset: the caller filters exactly with :func:`distance_km`), and
  :func:`covering_count` counts them cheaply, to choose a precision.

Text that is not a geohash raises :class:`~meshnode.errors.BadValue`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from meshnode.errors import BadValue

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
#: The longest geohash accepted (12 characters: cells of a few centimetres).
MAX_PRECISION = 12
#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088
#: Half the Earth's circumference: no two points are farther apart.
MAX_DISTANCE_KM = math.pi * EARTH_RADIUS_KM


@dataclass(frozen=True)
class Cell:
    """A geohash cell: centre (degrees) and half its height and width (degrees)."""

    lat: float
    lon: float
    lat_err: float
    lon_err: float


def _bits(precision: int) -> tuple[int, int]:
    """(latitude bits, longitude bits) of a geohash of ``precision`` characters."""
    total = 5 * precision
    return total // 2, total - total // 2


@lru_cache(maxsize=4096)
def decode(geohash: str) -> Cell:
    """The cell named by ``geohash`` (1 to :data:`MAX_PRECISION` characters of :data:`ALPHABET`)."""
    if not isinstance(geohash, str) or not 1 <= len(geohash) <= MAX_PRECISION:
        raise BadValue(f"geohash: expected 1 to {MAX_PRECISION} characters, found {geohash!r}")
    value = 0
    for c in geohash:
        v = _VALUE.get(c)
        if v is None:
            raise BadValue(
                f"geohash: expected characters of {ALPHABET!r} (no a, i, l, o; lower case), found {geohash!r}"
            )
        value = value << 5 | v
    row = col = 0
    total = 5 * len(geohash)
    for i in range(total):  # bit i from the most significant: even = longitude, odd = latitude
        bit = value >> (total - 1 - i) & 1
        if i % 2 == 0:
            col = col << 1 | bit
        else:
            row = row << 1 | bit
    lat_bits, lon_bits = _bits(len(geohash))
    height, width = 180.0 / (1 << lat_bits), 360.0 / (1 << lon_bits)
    return Cell(-90.0 + (row + 0.5) * height, -180.0 + (col + 0.5) * width, height / 2, width / 2)


def _cell_name(row: int, col: int, precision: int) -> str:
    """The geohash of the cell at (``row``, ``col``) of the grid of ``precision``."""
    lat_bits, lon_bits = _bits(precision)
    value = 0
    for i in range(5 * precision):
        if i % 2 == 0:
            lon_bits -= 1
            value = value << 1 | (col >> lon_bits & 1)
        else:
            lat_bits -= 1
            value = value << 1 | (row >> lat_bits & 1)
    return "".join(ALPHABET[value >> (5 * (precision - 1 - k)) & 31] for k in range(precision))


def _row_col(lat: float, lon: float, precision: int) -> tuple[int, int]:
    lat_bits, lon_bits = _bits(precision)
    rows, cols = 1 << lat_bits, 1 << lon_bits
    row = min(rows - 1, max(0, math.floor((lat + 90.0) / 180.0 * rows)))
    col = min(cols - 1, max(0, math.floor((lon + 180.0) / 360.0 * cols)))
    return row, col


def _check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise BadValue(f"point: expected -90 <= lat <= 90 and -180 <= lon <= 180, found ({lat}, {lon})")


def encode(lat: float, lon: float, precision: int) -> str:
    """The geohash of ``precision`` characters whose cell holds (``lat``, ``lon``), degrees."""
    _check_point(lat, lon)
    if not 1 <= precision <= MAX_PRECISION:
        raise BadValue(f"precision: expected 1 to {MAX_PRECISION}, found {precision}")
    return _cell_name(*_row_col(lat, lon, precision), precision)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points (degrees), km (haversine formula)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _box(lat: float, lon: float, km: float) -> tuple[float, float, float, float]:
    """(south, north, west, east) in degrees of the circle of ``km`` around a point, padded.

    Exact on a sphere (the longitude span at the latitude where the circle
    is widest), padded by a millionth of a degree against rounding; a
    circle reaching a pole spans every longitude (west -180, east 180).
    West may be below -180 and east above 180 (the box crosses the date line).
    """
    _check_point(lat, lon)
    pad = 1e-6
    angle = km / EARTH_RADIUS_KM  # radians
    south = lat - math.degrees(angle) - pad
    north = lat + math.degrees(angle) + pad
    cos_lat = math.cos(math.radians(lat))
    if south <= -90.0 or north >= 90.0 or angle >= math.pi / 2 or math.sin(angle) >= cos_lat:
        return max(-90.0, south), min(90.0, north), -180.0, 180.0
    span = math.degrees(math.asin(math.sin(angle) / cos_lat)) + pad
    return south, north, lon - span, lon + span


def _grid(lat: float, lon: float, km: float, precision: int) -> tuple[range, range, int]:
    """The rows and (unwrapped) columns of the cells of ``precision`` meeting the box; column count."""
    if not 1 <= precision <= MAX_PRECISION:
        raise BadValue(f"precision: expected 1 to {MAX_PRECISION}, found {precision}")
    south, north, west, east = _box(lat, lon, km)
    row_lo, _ = _row_col(south, 0.0, precision)
    row_hi, _ = _row_col(north, 0.0, precision)
    cols = 1 << _bits(precision)[1]
    first = math.floor((west + 180.0) / 360.0 * cols)
    last = min(math.floor((east + 180.0) / 360.0 * cols), first + cols - 1)
    if east - west >= 360.0:
        first, last = 0, cols - 1
    return range(row_lo, row_hi + 1), range(first, last + 1), cols


def covering_cells(lat: float, lon: float, km: float, precision: int) -> list[str]:
    """The cells of ``precision`` that meet the bounding box of the circle of ``km`` around a point.

    Every point within ``km`` of (``lat``, ``lon``) lies in one of them.
    Sorted. There are :func:`covering_count` of them, many for a big circle
    at a long precision: the caller chooses the precision.
    """
    rows, columns, cols = _grid(lat, lon, km, precision)
    return sorted(_cell_name(r, c % cols, precision) for r in rows for c in columns)


def covering_count(lat: float, lon: float, km: float, precision: int) -> int:
    """How many cells :func:`covering_cells` names, without naming them."""
    rows, columns, _ = _grid(lat, lon, km, precision)
    return len(rows) * len(columns)
