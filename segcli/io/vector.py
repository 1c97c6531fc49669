"""Polygons of a label map (`--save vector`, the [geo] extra: rasterio's polygonizer, shapely, pyogrio).

One polygon per 4-connected region per class, holes kept (`rasterio.features.shapes`). The map comes in
bands of rows, top to bottom (a raster read by rows never exists whole): each band is polygonized alone;
a polygon that reaches the band's bottom edge is held, and merged (`shapely.unary_union`) with the next
band's polygons of its class that start at that edge; every other polygon is final and written at once.
So memory holds one band and the regions that cross its lower edge. Coordinates are pixel edges (x right,
y down) and exact: rasterised back, the polygons give the label map on every pixel (`--simplify 0`,
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
        self.pending: dict[int, list[Any]] = {}  # class → polygons reaching the last band's bottom edge
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
        from affine import Affine

        y2 = y1 + labels.shape[0]
        mask = None if valid is None else valid.astype(bool)
        fresh: dict[int, list[Any]] = {}
        data = labels.astype(np.int32 if labels.dtype.itemsize > 2 else labels.dtype, copy=False)
        for geom, value in self.features.shapes(data, mask=mask, connectivity=4, transform=Affine.translation(0, y1)):
            fresh.setdefault(int(value), []).append(self.shapely.geometry.shape(geom))
        nxt: dict[int, list[Any]] = {}
        for c in sorted(set(fresh) | set(self.pending)):
            new = fresh.get(c, [])
            top = [p for p in new if p.bounds[1] == y1]
            held = self.pending.get(c, [])
            merged = self._parts(self.shapely.unary_union(held + top)) if held and top else held + top
            for p in merged + [p for p in new if p.bounds[1] != y1]:
                if p.bounds[3] == y2 and y2 < self.size[0]:
                    nxt.setdefault(c, []).append(p)
                else:
                    self._emit(p, c)
        self.pending = nxt

    def _parts(self, geom: Any) -> list[Any]:
        return list(geom.geoms) if hasattr(geom, "geoms") else [geom]

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
        for c, polys in sorted(self.pending.items()):
            for p in polys:
                self._emit(p, c)
        self.pending = {}
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
