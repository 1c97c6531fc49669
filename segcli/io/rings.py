"""Exact pixel-edge rings of label-map regions (for `vector`): band-edge nodes, stitching the pieces of one
region cut by band edges into one polygon, areas, WKB.

A ring is a closed int32 array [n + 1, 2] of pixel corners (x right, y down); a piece's rings are
[outer, *holes]. Pieces of a region that meet along a band edge are noded alike there (`node`), so their
shared edges match vertex for vertex; `stitch` drops the shared segments and relinks what is left into
one outer ring and its holes (None when it cannot: the caller falls back to a coverage union).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

# A piece of a region (the part of it in one band): its rings [outer, *holes], each closed, int32 [n + 1, 2]
# pixel corners (x, y): a held region costs 8 bytes a vertex
Piece = list[np.ndarray]


def row_classes(row: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """A row's class indices, -1 where no polygon goes."""
    out = row.astype(np.int64)
    if valid is not None:
        out[~valid.astype(bool)] = -1
    return out


def run_ends(row: np.ndarray) -> dict[int, np.ndarray]:
    """class → sorted x (pixel edges) where a run of that class in `row` (classes, -1: none) starts or ends."""
    ext = np.concatenate([[-1], row, [-1]])
    x = np.flatnonzero(ext[:-1] != ext[1:])  # edge x lies between pixels x - 1 and x
    cls, xs = np.concatenate([ext[x], ext[x + 1]]), np.concatenate([x, x])
    keep = cls >= 0
    cls, xs = cls[keep], xs[keep]
    order = np.lexsort((xs, cls))
    cls, xs = cls[order], xs[order]
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    return {int(cls[i]): part for i, part in zip(starts.tolist(), np.split(xs, starts[1:]), strict=True)}


def claim(owner: np.ndarray, ring: np.ndarray, y: float, piece: int) -> None:
    """Mark with `piece` the pixels of a band edge (row y) that a piece's outer ring [n, 2] runs along."""
    on = ring[:, 1] == y
    for i in np.flatnonzero(on[:-1] & on[1:]).tolist():
        a, b = sorted((int(ring[i, 0]), int(ring[i + 1, 0])))
        owner[a:b] = piece


def node(ring: np.ndarray, y: int, ends: np.ndarray | None) -> np.ndarray:
    """An outer ring with a vertex where a run of its class ends (`ends`, x) on the far side of the band
    edge at row y, inside one of its segments along that edge: the pieces on the two sides of the edge
    then share their segments there vertex for vertex (`stitch`, as for a coverage union)."""
    if ends is None:
        return ring
    on = ring[:, 1] == y
    parts: list[np.ndarray] = []
    last = 0
    for i in np.flatnonzero(on[:-1] & on[1:]).tolist():
        a, b = int(ring[i, 0]), int(ring[i + 1, 0])
        xs = ends[np.searchsorted(ends, min(a, b), "right") : np.searchsorted(ends, max(a, b), "left")]
        if xs.size:
            xs = xs if a < b else xs[::-1]
            parts += [ring[last : i + 1], np.column_stack([xs, np.full(xs.size, y)]).astype(ring.dtype)]
            last = i + 1
    return np.concatenate([*parts, ring[last:]]) if parts else ring


# A region's pieces, joined


def stitch(pieces: list[Piece]) -> list[np.ndarray] | None:
    """The union of a region's pieces: their outer rings cut where they meet (a vertex two of them pass)
    and joined again without the band-edge segments that two of them share; their holes kept (a piece's
    hole never reaches a band edge nor another piece). None where that is not one shell and its holes.

    What a coverage union does, without its graph (some 200 bytes a vertex, for regions of millions). The
    pieces are noded alike along the edges they share (`node`), so a shared segment is a run of its own."""
    rings = [p[0] if _area2(p[0]) < 0 else p[0][::-1] for p in pieces]  # all clockwise, as GDAL's are
    edges = np.unique([[r[:, 1].min(), r[:, 1].max()] for r in rings])  # rows where pieces end: band edges
    starts: dict[tuple[int, int], list[int]] = {}  # vertex → the runs ("chains") that start there
    chains: list[np.ndarray] = []
    closed: list[np.ndarray] = []
    for ring, meet, gone in zip(rings, _meets(rings), _shared(rings, edges), strict=True):
        cut, n = np.flatnonzero(meet).tolist(), len(meet)
        if not cut:
            closed.append(ring)
        for i, j in zip(cut, [*cut[1:], cut[0] + n], strict=True):
            if not (j == i + 1 and gone[i]):
                starts.setdefault((int(ring[i, 0]), int(ring[i, 1])), []).append(len(chains))
                chains.append(ring[i : j + 1] if j <= n else np.concatenate([ring[i:-1], ring[: j - n + 1]]))
    del rings
    joined = _link(chains, starts)
    del chains, starts
    if joined is None:
        return None
    joined += closed
    area = [_area2(r) for r in joined]
    if sum(a < 0 for a in area) != 1:  # one clockwise ring, the shell; the others holes
        return None
    shell = joined.pop(int(np.argmin(area)))
    return [shell, *joined, *(h for p in pieces for h in p[1:])]


def _meets(rings: list[np.ndarray]) -> list[np.ndarray]:
    """For each closed ring [n + 1, 2], which of its first n vertices another ring (or it again) passes too."""
    keys = [r[:-1, 1].astype(np.int64) << 32 | r[:-1, 0] for r in rings]  # pixel corners: whole numbers ≥ 0
    both = np.sort(np.concatenate(keys))
    twice = np.unique(both[1:][both[1:] == both[:-1]])
    del both
    if not twice.size:
        return [k < 0 for k in keys]
    return [twice[np.minimum(np.searchsorted(twice, k), twice.size - 1)] == k for k in keys]


def _shared(rings: list[np.ndarray], edges: np.ndarray) -> list[np.ndarray]:
    """For each closed ring [n + 1, 2], which of its n segments another ring has too (along a band edge)."""
    segs = []  # [y, low x, high x, ring, segment] of each segment along a band edge
    for k, r in enumerate(rings):
        i = np.flatnonzero((r[:-1, 1] == r[1:, 1]) & np.isin(r[:-1, 1], edges))
        x0, x1 = r[i, 0], r[i + 1, 0]
        segs.append(np.column_stack([r[i, 1], np.minimum(x0, x1), np.maximum(x0, x1), np.full(i.size, k), i]))
    s = np.concatenate(segs).astype(np.int64)
    s = s[np.lexsort(s[:, 2::-1].T)]  # by y, low x, high x: a segment next to its twin
    twin = (s[1:, :3] == s[:-1, :3]).all(axis=1)
    s = s[np.r_[twin, False] | np.r_[False, twin]]
    offsets = np.cumsum([0, *(len(r) - 1 for r in rings)])
    flat = np.zeros(offsets[-1], bool)
    flat[offsets[s[:, 3]] + s[:, 4]] = True
    return np.split(flat, offsets[1:-1])


def _link(chains: list[np.ndarray], starts: dict[tuple[int, int], list[int]]) -> list[np.ndarray] | None:
    """Closed rings of chains, each followed by one that starts where it ends: where two do (a pinch, two
    pixels of the region touching at a corner), the one turning left, so that rings touch and never cross
    there, and none passes it twice (clockwise rings, the region on their right); None where one is missing."""
    rings: list[np.ndarray] = []
    used = np.zeros(len(chains), bool)
    for first in range(len(chains)):
        parts: list[np.ndarray] = []
        k = first
        while not used[k]:
            used[k] = True
            chain = chains[k]
            parts.append(chain[1:] if parts else chain)
            x, y = chain[-1].tolist()
            options = starts.get((x, y), [])
            if len(options) == 2:  # cross(way in, way out) > 0: a left turn
                dx, dy = x - int(chain[-2, 0]), y - int(chain[-2, 1])
                options = [o for o in options if dx * (int(chains[o][1, 1]) - y) > dy * (int(chains[o][1, 0]) - x)]
            if len(options) != 1:
                return None
            k = options[0]
        if parts:
            if k != first:
                return None
            rings.append(np.concatenate(parts))
    return rings


def _area2(ring: np.ndarray) -> int:
    """Twice the signed area of a closed ring (> 0: counter-clockwise, x right and y up)."""
    x, y = ring[:, 0].astype(np.int64), ring[:, 1].astype(np.int64)
    return int(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


# Output


def polygon(shapely: Any, rings: list[np.ndarray]) -> Any:
    """A shapely polygon of rings [outer, *holes] (closed, [n + 1, 2]), built in one go from their corners."""
    offsets = np.cumsum([0, *map(len, rings)])
    coords = np.concatenate(rings, dtype=np.float64)
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (offsets, np.array([0, len(rings)])))[0]


def rings_of(shapely: Any, poly: Any) -> list[np.ndarray]:
    """A shapely polygon's rings [outer, *holes] as corner arrays [n + 1, 2]."""
    return [shapely.get_coordinates(r) for r in shapely.get_rings(poly)]


def area(rings: list[np.ndarray]) -> float:
    """A polygon's area (pixel corners, whole numbers: exact), as shapely's."""
    outer, *holes = (abs(_area2(r)) for r in rings)
    return (outer - sum(holes)) / 2


def wkb(rings: list[np.ndarray], t: Any) -> bytes:
    """A polygon's WKB (little-endian, as shapely's), its corners mapped by the affine transform t (None:
    kept), written straight into the buffer: a region of millions of corners costs no more copies."""
    buf = bytearray(9 + sum(4 + 16 * len(r) for r in rings))
    struct.pack_into("<BII", buf, 0, 1, 3, len(rings))  # byte order, Polygon, ring count
    at = 9
    for r in rings:
        struct.pack_into("<I", buf, at, len(r))
        xy = np.frombuffer(buf, "<f8", 2 * len(r), at + 4).reshape(-1, 2)
        xy[:] = r
        if t is not None:
            affine(xy, t)
        at += 4 + 16 * len(r)
    return bytes(buf)


def affine(xy: np.ndarray, t: Any) -> np.ndarray:
    """Corners [n, 2] mapped by an affine transform in place, as `shapely.affinity.affine_transform` maps
    them (the same sums, in the same order) with fewer arrays of a region's millions of corners alive."""
    x, y = xy[:, 0], xy[:, 1]
    xp = x * t.a
    xp += y * t.b
    xp += t.c
    yp = x * t.d
    yp += y * t.e
    yp += t.f
    xy[:, 0], xy[:, 1] = xp, yp
    return xy
