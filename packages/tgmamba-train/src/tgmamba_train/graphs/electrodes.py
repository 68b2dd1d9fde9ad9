"""Standard 10-20 / 10-10 electrode positions on an idealised unit sphere.

The positions are constructed from the published rules of the international 10-20 system and its
10-10 extension (Jasper 1958; Chatrian et al. 1985; Oostenveld & Praamstra 2001), not copied from a
digitised head:

* Coordinates: ``x`` points right, ``y`` to the nasion (front), ``z`` up; the head is a unit sphere.
* The sagittal arc nasion (Nz) -> inion (Iz) and the coronal arc between the pre-auricular points are
  divided in 10 % steps. Fpz, T7, Oz and T8 lie on the "10 % ring", which is the sphere's equator here,
  and Cz is the vertex, so one 10 % step of the sagittal arc is 22.5 degrees.
* Ring electrodes (Fp1, AF7, F7, FT7, T7, TP7, P7, PO7, O1 and their right mirrors) are spaced 18 degrees
  of azimuth apart on the equator (5 % of the ring's circumference); the 10-10 inferior ring (AF9 ... PO9,
  I1) lies one step (22.5 degrees) below it.
* Each coronal-ish row (AF, F, FC, C, CP, P, PO) is the circle through its left ring electrode, its midline
  electrode and its right ring electrode; the row is divided into equal arcs (e.g. F7, F5, F3, F1, Fz).

A few non-10-20 sites used by the supported datasets get approximate positions, marked ``approximate``:
the ear lobes / mastoids (A1, A2, M1, M2), the outer canthi for EOG (E1/LOC, E2/ROC) and the chin (EMG).
Old names are aliases: T3 = T7, T4 = T8, T5 = P7, T6 = P8.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

__all__ = ["APPROXIMATE", "canonical_name", "electrode_positions", "known_electrodes"]

_STEP = 22.5  # degrees per 10 % of the sagittal arc
_RING_STEP = 18.0  # degrees of azimuth per ring electrode

ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8", "LOC": "E1", "ROC": "E2", "CHIN": "EMG"}
APPROXIMATE = frozenset({"A1", "A2", "M1", "M2", "E1", "E2", "EMG"})


def _sph(incl_deg: float, azim_deg: float) -> np.ndarray:
    """Unit vector from inclination (angle from the vertex) and azimuth (from the front, positive to the left)."""
    i, a = math.radians(incl_deg), math.radians(azim_deg)
    return np.array([-math.sin(i) * math.sin(a), math.sin(i) * math.cos(a), math.cos(i)])


def _arc_points(a: np.ndarray, m: np.ndarray, b: np.ndarray, n_div: int) -> list[np.ndarray]:
    """Points dividing the arc a -> m of the circle through a, m, b into ``n_div`` equal parts (a and m included)."""
    ab, am = b - a, m - a
    normal = np.cross(am, ab)
    # circumcentre of the triangle (a, m, b)
    denom = 2.0 * np.dot(normal, normal)
    centre = a + (np.dot(am, am) * np.cross(ab, normal) + np.dot(ab, ab) * np.cross(normal, am)) / denom
    u, v = a - centre, m - centre
    radius = np.linalg.norm(u)
    angle = math.acos(float(np.clip(np.dot(u, v) / (radius * np.linalg.norm(v)), -1.0, 1.0)))
    axis = normal / np.linalg.norm(normal)
    pts = []
    for k in range(n_div + 1):
        t = angle * k / n_div
        # Rodrigues rotation of u about axis by t (axis is perpendicular to u)
        p = centre + u * math.cos(t) + np.cross(axis, u) * math.sin(t)
        pts.append(p / np.linalg.norm(p))
    return pts


@lru_cache(maxsize=1)
def _table() -> dict[str, np.ndarray]:
    pos: dict[str, np.ndarray] = {}
    midline = ["Nz", "Fpz", "AFz", "Fz", "FCz", "Cz", "CPz", "Pz", "POz", "Oz", "Iz"]
    for k, name in enumerate(midline):
        pct = 10 * k
        incl = (50 - pct) * _STEP / 10
        pos[name] = _sph(abs(incl), 0.0 if incl >= 0 else 180.0)
    ring_left = ["Fp1", "AF7", "F7", "FT7", "T7", "TP7", "P7", "PO7", "O1"]
    ring_right = ["Fp2", "AF8", "F8", "FT8", "T8", "TP8", "P8", "PO8", "O2"]
    low_left = ["N1", "AF9", "F9", "FT9", "T9", "TP9", "P9", "PO9", "I1"]
    low_right = ["N2", "AF10", "F10", "FT10", "T10", "TP10", "P10", "PO10", "I2"]
    for k in range(9):
        az = _RING_STEP * (k + 1)
        pos[ring_left[k]] = _sph(90.0, az)
        pos[ring_right[k]] = _sph(90.0, -az)
        pos[low_left[k]] = _sph(90.0 + _STEP, az)
        pos[low_right[k]] = _sph(90.0 + _STEP, -az)
    rows = {  # prefix: (left ring, midline, right ring, left interior numbers, right interior numbers)
        "AF": ("AF7", "AFz", "AF8"),
        "F": ("F7", "Fz", "F8"),
        "FC": ("FT7", "FCz", "FT8"),
        "C": ("T7", "Cz", "T8"),
        "CP": ("TP7", "CPz", "TP8"),
        "P": ("P7", "Pz", "P8"),
        "PO": ("PO7", "POz", "PO8"),
    }
    for prefix, (left, mid, right) in rows.items():
        a, m, b = pos[left], pos[mid], pos[right]
        left_pts = _arc_points(a, m, b, 4)
        right_pts = _arc_points(b, m, a, 4)
        for j, num in enumerate((5, 3, 1)):
            pos[f"{prefix}{num}"] = left_pts[j + 1]
            pos[f"{prefix}{num + 1}"] = right_pts[j + 1]
    # approximate non-10-20 sites
    pos["A1"], pos["A2"] = _sph(120.0, 95.0), _sph(120.0, -95.0)
    pos["M1"], pos["M2"] = _sph(120.0, 110.0), _sph(120.0, -110.0)
    pos["E1"], pos["E2"] = _sph(105.0, 35.0), _sph(105.0, -35.0)
    pos["EMG"] = _sph(150.0, 0.0)
    return pos


@lru_cache(maxsize=1)
def _upper_index() -> dict[str, str]:
    index = {name.upper(): name for name in _table()}
    for old, new in ALIASES.items():
        index[old.upper()] = new
    return index


_PREFIX = re.compile(r"^(EEG|EOG|EMG)[\s_:]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[-_](REF|LE|AR|AVG)$", re.IGNORECASE)


def canonical_name(label: str) -> str | None:
    """Map a recording's channel label to a standard electrode name, or None if it is not one.

    Handles case ("FP1" -> "Fp1"), old names ("T3" -> "T7"), a leading "EEG " and a reference suffix
    ("EEG FP1-REF" -> "Fp1", "EEG T3-LE" -> "T7").
    """
    s = _PREFIX.sub("", label.strip())
    s = _SUFFIX.sub("", s).strip()
    return _upper_index().get(s.upper())


def known_electrodes() -> list[str]:
    """All electrode names with a position (canonical spelling)."""
    return sorted(_table())


def electrode_positions(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """3-D unit-sphere positions of electrodes or bipolar derivations.

    A derivation "F3-M2" or "F3_M2" gets the normalised midpoint of its two electrodes.

    Shapes:
        returns (len(names), 3) float64, rows in the order of ``names``.

    Raises:
        KeyError naming the first label that is neither an electrode nor a derivation of two electrodes.
    """
    table = _table()
    out = np.empty((len(names), 3))
    for i, label in enumerate(names):
        name = canonical_name(label)
        if name is not None:
            out[i] = table[name]
            continue
        parts = re.split(r"[-_]", _PREFIX.sub("", label.strip()))
        ends = [canonical_name(p) for p in parts if p]
        if len(ends) == 2 and all(e is not None for e in ends):
            mid = table[ends[0]] + table[ends[1]]
            out[i] = mid / max(np.linalg.norm(mid), 1e-12)
            continue
        raise KeyError(
            f"channel {label!r} is not a known 10-20/10-10 electrode or a derivation of two of them "
            f"(known names: {', '.join(known_electrodes())})"
        )
    return out
