"""Polygons of a label map (`--save vector`, the [geo] extra: rasterio's polygonizer, shapely, pyogrio).

One polygon per 4-connected region per class, holes kept (`rasterio.features.shapes`). The map comes in
bands of rows, top to bottom (a raster read by rows never exists whole), and each band is polygonized
alone, streamed: a polygon that touches neither edge of its band is a whole region, written as the
polygonizer yields it. One that touches an edge is a piece of a region that may cross bands. Pieces are
held (as int32 corner arrays) in groups, one per region, and joined across a band edge by the label rows
on either side of it: two pieces of a class are one region where some column has that class, inside
both, in the upper band's last row and the lower band's first row (a union-find, so a piece may join
groups that were apart). A group that no longer reaches the current band's bottom edge is whole: its
pieces, noded alike along the edges they share, are stitched into one polygon once (`ringops.stitch`, a coverage
union on the corner arrays) and written. So memory holds one band and the pieces of the regions crossing
its lower edge, and nothing is unioned again band after band. Coordinates are pixel edges (x right, y
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
from . import rings as ringops
from .rings import Piece

PURPOSE = "--save vector (polygons)"
FLUSH = 5000  # GeoPackage features written per batch
STREAMED_JSON = 100_000  # corners of a polygon whose GeoJSON is written piece by piece
# A region crossing band edges, held until it is whole: its class, its pieces noded alike where they meet
# (`ringops.node`), and the pieces on the last band's bottom edge (noded there when the band below comes)
Group = tuple[int, list[Piece], list[Piece]]


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
        first = ringops.row_classes(labels[0], None if valid is None else valid[0])
        ends = ringops.run_ends(first)
        for c, pieces, edge in self.pending.values():  # the held pieces meet this band's first row
            pieces += [[ringops.node(p[0], y1, ends.get(c)), *p[1:]] for p in edge]
            edge.clear()
        top, bottom, fresh = self._polygonize(y1, labels, valid)
        self._join(top, first, fresh, bottom)
        self._row = ringops.row_classes(labels[-1], None if valid is None else valid[-1])
        self._next_y = y1 + labels.shape[0]

    def _polygonize(
        self, y1: int, labels: np.ndarray, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, dict[int, Group]]:
        """Write the band's whole regions; return its pieces on an edge (id → a group of one) and, for the
        band's first and last rows, the id of the piece holding each pixel (-1: none, or nothing to join)."""
        from affine import Affine

        y2 = y1 + labels.shape[0]
        up, down = bool(self.pending), y2 < self.size[0]  # edges that may join: held groups above, rows below
        ends = ringops.run_ends(self._row) if up else {}
        top, bottom = np.full(labels.shape[1], -1, np.int64), np.full(labels.shape[1], -1, np.int64)
        fresh: dict[int, Group] = {}
        mask = None if valid is None else valid.astype(bool, copy=False)
        data = labels.astype(np.int32 if labels.dtype.itemsize > 2 else labels.dtype, copy=False)
        for geom, value in self.features.shapes(data, mask=mask, connectivity=4, transform=Affine.translation(0, y1)):
            rings, c = [np.asarray(r, dtype=np.float64) for r in geom["coordinates"]], int(value)
            at_top, at_bottom = up and rings[0][:, 1].min() == y1, down and rings[0][:, 1].max() == y2
            if not (at_top or at_bottom):
                self._emit(rings, c)
                continue
            self._ids += 1
            piece = [r.astype(np.int32) for r in rings]  # an edge's pixels lie on the outer ring
            if at_top:
                ringops.claim(top, piece[0], y1, self._ids)
                piece[0] = ringops.node(piece[0], y1, ends.get(c))
            if at_bottom:
                ringops.claim(bottom, piece[0], y2, self._ids)
            fresh[self._ids] = (c, [], [piece]) if at_bottom else (c, [piece], [])
        return top, bottom, fresh

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
            rings = pieces[0] if len(pieces) == 1 else ringops.stitch(pieces)
            if rings is not None:
                self._emit(rings, c)
                continue
            # not one shell and its holes (not met: the pieces of a group are connected)
            whole = self.shapely.coverage_union_all([ringops.polygon(self.shapely, p) for p in pieces])
            for poly in self.shapely.get_parts(whole):
                self._emit(ringops.rings_of(self.shapely, poly), c)

    def _emit(self, rings: list[np.ndarray], c: int) -> None:
        """Write a region's polygon, rings [outer, *holes] (closed, [n + 1, 2], pixel corners)."""
        area = ringops.area(rings)
        if area < self.min_area or area == 0:
            return
        if self.simplify > 0:
            simple = ringops.polygon(self.shapely, rings).simplify(self.simplify, preserve_topology=True)
            rings = ringops.rings_of(self.shapely, simple)
        props: dict[str, Any] = {"class": c, "name": self.classes[c] if c < len(self.classes) else str(c)}
        props["area_px"] = area
        if self.pixel_area_m2 is not None:
            props["area_m2"] = area * self.pixel_area_m2
        self.written += 1
        if self.fmt == "geojson":
            self._write_json(rings, props)
        else:
            self._batch.append((ringops.wkb(rings, self.transform), props))
            if len(self._batch) >= FLUSH:
                self._flush()

    def _write_json(self, rings: list[np.ndarray], props: dict[str, Any]) -> None:
        t = self.transform
        xy = [r.astype(np.float64) if t is None else ringops.affine(r.astype(np.float64), t) for r in rings]
        geom: dict[str, Any] = {"type": "Polygon", "coordinates": xy}  # GDAL reads the arrays as they are
        if self.crs is not None:
            from rasterio.warp import transform_geom

            geom = transform_geom(self.crs, "EPSG:4326", geom)
        else:
            geom["coordinates"] = [r.tolist() for r in xy]
        assert self._file is not None
        feature = {"type": "Feature", "properties": props, "geometry": geom}
        self._file.write(",\n" if self.written > 1 else "")
        if sum(map(len, rings)) > STREAMED_JSON:  # the same text, never whole in memory
            json.dump(feature, self._file)
        else:
            self._file.write(json.dumps(feature))

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


# Band edges: the pixels of a row, the runs of a class
