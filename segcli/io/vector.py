"""Polygons of a label map (`--save vector`, the [geo] extra: rasterio's polygonizer, shapely, pyogrio).

One polygon per 4-connected region per class, holes kept (`rasterio.features.shapes`). The map comes in
bands of rows, top to bottom (a raster read by rows never exists whole), and each band is polygonized
alone. A band's polygon that touches neither of its edges is a whole region: it is written as soon as the
polygonizer yields it. One that touches an edge is a piece of a region that may cross bands: pieces are
held in groups, one group per region, and joined across an edge by the label rows on either side of it
(two pieces of a class are one region where some column has that class, inside both, in the upper band's
last row and the lower band's first row; joins are transitive, so a piece may link groups that were
apart). A group that no longer reaches the current band's bottom edge is finished: its pieces are unioned
once (`shapely.union_all`) and written. So memory holds one band and the pieces of the regions crossing
its lower edge, and no polygon is re-unioned band after band. Coordinates are pixel edges (x right, y
down) and exact: rasterised back, the polygons give the label map on every pixel (`--simplify 0`,
`--min-area 0`).

Written as GeoJSON (RFC 7946: lon/lat in WGS84, reprojected from the raster's CRS; a photo's in pixel
coordinates, no CRS) or GeoPackage (the raster's own CRS). Properties: `class` (index), `name`,
`area_px` (pixels of the region, before simplification), and `area_m2` where the raster's CRS is projected.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import require

PURPOSE = "--save vector (polygons)"
FLUSH = 5000  # GeoPackage features written per batch
# A region crossing band edges, held until it is whole: its class, its pieces (shapely polygons, one per
# band and stretch of the region in it) noded along the edges they share, and those on the last band's
# bottom edge (noded there when the band below comes)
Group = tuple[int, list[Any], list[Any]]


def modules() -> tuple[Any, Any, Any]:
    """(rasterio.features, shapely, pyogrio), or the one line naming the [geo] extra."""
    require("shapely", "geo", PURPOSE)
    require("pyogrio", "geo", PURPOSE)
    import pyogrio
    import rasterio.features
    import shapely

    return rasterio.features, shapely, pyogrio


class VectorWriter:
    """Polygons of a label map [H, W] fed by row bands (`write`), finished by `close`, dropped by `abandon`."""

    def __init__(
        self,
        path: Path,
        size: tuple[int, int],
        classes: tuple[str, ...],
        *,
        transform: Any = None,  # affine.Affine pixel → CRS (None: pixel coordinates)
        crs: Any = None,  # rasterio CRS (None: none)
        fmt: str = "geojson",
        min_area: float = 0.0,  # pixels
        simplify: float = 0.0,  # pixels
        pixel_area_m2: float | None = None,
    ) -> None:
        self.features, self.shapely, self.pyogrio = modules()
        self.path, self.size, self.classes, self.fmt = path, size, classes, fmt
        self.transform, self.crs, self.min_area, self.simplify = transform, crs, min_area, simplify
        self.pixel_area_m2 = pixel_area_m2
        self.pending: dict[int, Group] = {}  # group id → a region reaching the last band's bottom edge
        self._below = np.full(size[1], -1, np.int64)  # group id of each pixel of that edge's row (-1: none)
        self._row = np.full(size[1], -1, np.int64)  # that row's classes (-1: no polygon)
        self._next_y, self._ids = 0, 0  # the band that joins the pending groups; the last id given
        self.written, self._gpkg_started = 0, False
        self._batch: list[tuple[bytes, dict[str, Any]]] = []
        self._file = None
        if fmt == "geojson":
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close / abandon
            self._file.write('{"type": "FeatureCollection", "features": [\n')
        else:
            os.unlink(path) if path.exists() else None  # the GeoPackage driver creates its own file

    def write(self, y1: int, labels: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Class indices [rows, W] of rows [y1, y1 + rows) (pixels outside `valid` belong to no polygon)."""
        if labels.shape[0] == 0:
            return
        if y1 != self._next_y:  # not the band below the last one: nothing of it joins what is held
            self._finish(list(self.pending))
        first = _classes(labels[0], None if valid is None else valid[0])
        ends = _run_ends(first)
        for c, pieces, edge in self.pending.values():  # the held pieces meet this band's first row
            pieces += [self._node(p, y1, ends.get(c)) for p in edge]
            edge.clear()
        top, bottom, fresh = self._polygonize(y1, labels, valid)
        self._join(top, first, fresh, bottom)
        self._row = _classes(labels[-1], None if valid is None else valid[-1])
        self._next_y = y1 + labels.shape[0]

    def _polygonize(
        self, y1: int, labels: np.ndarray, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, dict[int, Group]]:
        """Write the band's whole regions; return its pieces on an edge (id → a group of one) and, for the
        band's first and last rows, the id of the piece holding each pixel (-1: none, or nothing to join)."""
        from affine import Affine

        y2 = y1 + labels.shape[0]
        up, down = bool(self.pending), y2 < self.size[0]  # edges that may join: held groups above, rows below
        ends = _run_ends(self._row) if up else {}
        top, bottom = np.full(labels.shape[1], -1, np.int64), np.full(labels.shape[1], -1, np.int64)
        fresh: dict[int, Group] = {}
        mask = None if valid is None else valid.astype(bool, copy=False)
        data = labels.astype(np.int32 if labels.dtype.itemsize > 2 else labels.dtype, copy=False)
        for geom, value in self.features.shapes(data, mask=mask, connectivity=4, transform=Affine.translation(0, y1)):
            poly, c = self._polygon(geom["coordinates"]), int(value)
            _, ymin, _, ymax = poly.bounds
            at_top, at_bottom = up and ymin == y1, down and ymax == y2
            if not (at_top or at_bottom):
                self._emit(poly, c)
                continue
            self._ids += 1
            ring = self.shapely.get_coordinates(poly.exterior)  # an edge's pixels lie on the outer ring
            if at_top:
                _claim(top, ring, y1, self._ids)
                poly = self._node(poly, y1, ends.get(c))
            if at_bottom:
                _claim(bottom, ring, y2, self._ids)
            fresh[self._ids] = (c, [], [poly]) if at_bottom else (c, [poly], [])
        return top, bottom, fresh

    def _polygon(self, rings: list[list[tuple[float, float]]]) -> Any:
        """A GeoJSON polygon's rings [outer, *holes] as a shapely polygon (through arrays, not per point)."""
        shell, *holes = (self.shapely.linearrings(np.asarray(r, dtype=np.float64)) for r in rings)
        return self.shapely.polygons(shell, holes=holes or None)

    def _node(self, poly: Any, y: int, ends: np.ndarray | None) -> Any:
        """`poly` with a vertex where a run of its class ends (`ends`, x) on the far side of the band edge
        at row y, inside one of its segments along that edge: the pieces on the two sides then share their
        edge segments vertex for vertex, as a coverage union wants."""
        if ends is None:
            return poly
        ring = self.shapely.get_coordinates(poly.exterior)
        on = ring[:, 1] == y
        parts: list[np.ndarray] = []
        last = 0
        for i in np.flatnonzero(on[:-1] & on[1:]).tolist():
            a, b = ring[i, 0], ring[i + 1, 0]
            xs = ends[np.searchsorted(ends, min(a, b), "right") : np.searchsorted(ends, max(a, b), "left")]
            if xs.size:
                xs = xs if a < b else xs[::-1]
                parts += [ring[last : i + 1], np.column_stack([xs, np.full(xs.size, y)])]
                last = i + 1
        if not parts:
            return poly
        shell = self.shapely.linearrings(np.concatenate([*parts, ring[last:]]))
        return self.shapely.polygons(shell, holes=list(self.shapely.get_rings(poly)[1:]) or None)

    def _join(self, top: np.ndarray, row: np.ndarray, fresh: dict[int, Group], bottom: np.ndarray) -> None:
        """Link the held groups to the band's pieces below them (`top`, classes `row`); write the groups
        that no longer reach the band's bottom edge, hold the others (ids per pixel of that edge: `bottom`)."""
        parent: dict[int, int] = {}  # union-find over group and piece ids, the smaller id as root

        def root(i: int) -> int:
            while parent.get(i, i) != i:
                parent[i] = parent.get(parent[i], parent[i])  # path halving
                i = parent[i]
            return i

        if self.pending:
            same = (self._below >= 0) & (top >= 0) & (self._row == row)
            for a, b in np.unique(np.stack([self._below[same], top[same]], axis=1), axis=0).tolist():
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, Group] = {}
        for i, (c, pieces, edge) in [*self.pending.items(), *fresh.items()]:
            _, into, into_edge = groups.setdefault(root(i), (c, [], []))
            into += pieces
            into_edge += edge
        ids, at = np.unique(bottom, return_inverse=True)
        roots = np.array([root(i) if i >= 0 else -1 for i in ids.tolist()], np.int64)
        self._below = roots[at.reshape(bottom.shape)]
        live = set(roots.tolist())
        self.pending = {r: g for r, g in groups.items() if r in live}
        self._write_groups([g for r, g in groups.items() if r not in live])

    def _finish(self, ids: list[int]) -> None:
        self._write_groups([self.pending.pop(i) for i in ids])
        self._below[:] = -1

    def _write_groups(self, groups: list[Group]) -> None:
        for c, pieces, edge in groups:
            pieces += edge
            whole = pieces[0] if len(pieces) == 1 else _stitch(self.shapely, pieces)
            if whole is None:  # not one shell and its holes (not met: the pieces of a group are connected)
                whole = self.shapely.coverage_union_all(pieces)
            for p in self.shapely.get_parts(whole):
                self._emit(p, c)

    def _emit(self, poly: Any, c: int) -> None:
        area = float(poly.area)
        if area < self.min_area or area == 0:
            return
        if self.simplify > 0:
            poly = poly.simplify(self.simplify, preserve_topology=True)
        if self.transform is not None:
            t = self.transform
            poly = self.shapely.affinity.affine_transform(poly, [t.a, t.b, t.d, t.e, t.c, t.f])
        props: dict[str, Any] = {"class": c, "name": self.classes[c] if c < len(self.classes) else str(c)}
        props["area_px"] = area
        if self.pixel_area_m2 is not None:
            props["area_m2"] = area * self.pixel_area_m2
        self.written += 1
        if self.fmt == "geojson":
            geom = self.shapely.geometry.mapping(poly)
            if self.crs is not None:
                from rasterio.warp import transform_geom

                geom = transform_geom(self.crs, "EPSG:4326", geom)
            assert self._file is not None
            sep = ",\n" if self.written > 1 else ""
            self._file.write(sep + json.dumps({"type": "Feature", "properties": props, "geometry": geom}))
        else:
            self._batch.append((self.shapely.to_wkb(poly), props))
            if len(self._batch) >= FLUSH:
                self._flush()

    def _flush(self) -> None:
        if not self._batch and self._gpkg_started:
            return
        wkb = np.array([g for g, _ in self._batch], dtype=object)
        fields = ["class", "name", "area_px", *(["area_m2"] if self.pixel_area_m2 is not None else [])]
        data = [np.array([p[f] for _, p in self._batch]) for f in fields]
        crs = self.crs.to_wkt() if self.crs is not None else None
        with warnings.catch_warnings():  # the temporary file's name ends in .tmp until it is renamed
            warnings.filterwarnings(
                "ignore", ".*(filename extension should be|non conformant file extension)", RuntimeWarning
            )
            self._write_batch(wkb, data, fields, crs)
        self._gpkg_started, self._batch = True, []

    def _write_batch(self, wkb: np.ndarray, data: list[np.ndarray], fields: list[str], crs: str | None) -> None:
        self.pyogrio.raw.write(
            str(self.path), wkb, data, fields, driver="GPKG", layer="segments", geometry_type="Polygon", crs=crs,
            append=self._gpkg_started, promote_to_multi=False,
        )  # fmt: skip

    def close(self) -> None:
        self._finish(sorted(self.pending))
        if self._file is not None:
            self._file.write("\n]}\n")
            self._file.close()
        else:
            self._flush()

    def abandon(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def opened(
    path: Path,
    size: tuple[int, int],
    classes: tuple[str, ...],
    options: tuple[str, str, float],
    source: Path,
    *,
    transform: Any = None,
    crs: Any = None,
    pixel_area_m2: float | None = None,
) -> VectorWriter:
    """The writer `--vector-format, --min-area, --simplify` (`options`) ask for; ImageError naming `source`
    when a minimum area in m² meets an image without a projected CRS."""
    from ..errors import ImageError

    fmt, min_area, simplify = options
    value, metres = parse_min_area(min_area)
    if metres and value > 0:
        if not pixel_area_m2:
            raise ImageError(
                f"{source}: --min-area {min_area} needs a raster with a projected CRS (metres)",
                hint="give the minimum area in pixels, e.g. --min-area 25",
            )
        value = value / pixel_area_m2
    return VectorWriter(path, size, classes, transform=transform, crs=crs, fmt=fmt, min_area=value,
                        simplify=simplify, pixel_area_m2=pixel_area_m2)  # fmt: skip


def parse_min_area(text: str | float | None) -> tuple[float, bool]:
    """`--min-area N` (pixels) or `Nm2` (square metres): (value, in square metres)."""
    if text is None:
        return 0.0, False
    s = str(text).strip().lower()
    metres = s.endswith("m2")
    try:
        value = float(s[:-2] if metres else s)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        from ..errors import UsageError

        raise UsageError(f"--min-area {text!r}: give pixels (e.g. 25) or square metres (e.g. 100m2)")
    return value, metres


Emit = Callable[[int, np.ndarray, np.ndarray | None], None]


def _classes(row: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """A row's class indices, -1 where no polygon goes."""
    out = row.astype(np.int64)
    if valid is not None:
        out[~valid.astype(bool)] = -1
    return out


def _run_ends(row: np.ndarray) -> dict[int, np.ndarray]:
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


def _stitch(shapely: Any, pieces: list[Any]) -> Any | None:
    """The union of a region's pieces: their outer rings joined where two of them run along the same
    band-edge segment (both then drop it), their holes kept (a piece's hole never reaches a band edge);
    None where the joined rings are not one shell and its holes.

    What a coverage union does, without its graph (some 200 bytes a vertex, for a region of millions). The
    pieces are noded alike along the edges they share (`_node`), and at a vertex where a shared segment
    ends at most two boundary edges meet, so each run of kept segments ("chain") has one successor."""
    outer = shapely.get_exterior_ring(np.array(pieces, dtype=object))
    ccw = shapely.is_ccw(outer)  # all clockwise, as GDAL's are: the shell then turns clockwise, holes not
    rings = [r[::-1] if k else r for r, k in zip(map(shapely.get_coordinates, outer), ccw.tolist(), strict=True)]
    edges = np.unique(shapely.bounds(outer)[:, 1::2])  # the band edges the pieces reach
    ends: dict[tuple[float, float], int] = {}  # chain start → chain index
    chains: list[np.ndarray] = []
    closed: list[np.ndarray] = []
    for ring, gone in zip(rings, _shared(rings, edges), strict=True):
        if not gone.any():
            closed.append(ring)
            continue
        k = int(np.argmax(gone))  # the ring from a dropped segment on, so that no chain wraps around
        ring, gone = np.concatenate([ring[k:-1], ring[: k + 1]]), np.roll(gone, -k)
        step = np.diff(np.r_[True, gone, True].astype(np.int8))
        for i, j in zip(np.flatnonzero(step == -1).tolist(), np.flatnonzero(step == 1).tolist(), strict=True):
            ends[(ring[i, 0], ring[i, 1])] = len(chains)
            chains.append(ring[i : j + 1])
    if len(ends) != len(chains):
        return None
    joined = _link(chains, ends)
    if joined is None:
        return None
    joined += closed
    area = np.array([np.dot(r[:-1, 0], r[1:, 1]) - np.dot(r[1:, 0], r[:-1, 1]) for r in joined])
    shell = np.flatnonzero(area < 0)
    if shell.size != 1:
        return None
    holes = [shapely.linearrings(r) for i, r in enumerate(joined) if i != shell[0]]
    holes += [h for p in pieces for h in shapely.get_rings(p)[1:]]
    return shapely.polygons(shapely.linearrings(joined[shell[0]]), holes=holes or None)


def _shared(rings: list[np.ndarray], edges: np.ndarray) -> list[np.ndarray]:
    """For each closed ring [n + 1, 2], which of its n segments another ring has too (along a band edge)."""
    ys, lo, hi, where = [], [], [], []
    for k, r in enumerate(rings):
        i = np.flatnonzero((r[:-1, 1] == r[1:, 1]) & np.isin(r[:-1, 1], edges))
        ys.append(r[i, 1]), lo.append(np.minimum(r[i, 0], r[i + 1, 0])), hi.append(np.maximum(r[i, 0], r[i + 1, 0]))
        where.append(np.column_stack([np.full(i.size, k), i]))
    y, a, b, at = np.concatenate(ys), np.concatenate(lo), np.concatenate(hi), np.concatenate(where)
    order = np.lexsort((b, a, y))
    y, a, b, at = y[order], a[order], b[order], at[order]
    twin = (y[1:] == y[:-1]) & (a[1:] == a[:-1]) & (b[1:] == b[:-1])
    at = at[np.r_[twin, False] | np.r_[False, twin]]
    sizes = np.array([len(r) - 1 for r in rings])
    offsets = np.r_[0, np.cumsum(sizes)]
    flat = np.zeros(offsets[-1], bool)
    flat[offsets[at[:, 0]] + at[:, 1]] = True
    return np.split(flat, offsets[1:-1])


def _link(chains: list[np.ndarray], ends: dict[tuple[float, float], int]) -> list[np.ndarray] | None:
    """Closed rings of chains, each followed by the one that starts where it ends; None where one is missing."""
    rings, used = [], np.zeros(len(chains), bool)
    for first in range(len(chains)):
        parts, k = [], first
        while not used[k]:
            used[k] = True
            parts.append(chains[k][1:] if parts else chains[k])
            nxt = ends.get((chains[k][-1, 0], chains[k][-1, 1]))
            if nxt is None:
                return None
            k = nxt
        if parts:
            if k != first:
                return None
            rings.append(np.concatenate(parts))
    return rings


def _claim(owner: np.ndarray, ring: np.ndarray, y: float, piece: int) -> None:
    """Mark with `piece` the pixels of a band edge (row y) that a piece's outer ring [n, 2] runs along."""
    on = ring[:, 1] == y
    for i in np.flatnonzero(on[:-1] & on[1:]).tolist():
        a, b = sorted((int(ring[i, 0]), int(ring[i + 1, 0])))
        owner[a:b] = piece
