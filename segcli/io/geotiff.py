"""GeoTIFF outputs (the `[geo]` extra): class indices, probabilities and confidence maps on an input's grid.

`GeoTiffWriter`: tiled, deflate-compressed, BigTIFF when needed, uint8 class indices (uint16 above 255
classes) with the input's CRS, transform and size, a colour table, class names in the band's metadata,
nodata set; rows are written as they finish; `overviews` adds internal overviews (mode). `ProbsTiffWriter`
(uint8-scaled probabilities, a band per class) and `FloatTiffWriter` (float32) share its grid and rows; the
`write_*` functions write an image decoded whole at once, atomically.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .raster import FINGERPRINT_TAG, NODATA_U8, NODATA_U16, Raster, rasterio


def _open_tiled(
    path: Path, like: Raster | None, size: tuple[int, int] | None, count: int, dtype: str, **extra: Any
) -> Any:
    """A tiled, deflate-compressed GeoTIFF for writing, on the grid of `like` (None: a plain image of `size`)."""
    if like is not None:
        height, width = like.height, like.width
    else:
        assert size is not None  # a plain image names its size
        height, width = size
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": GeoTiffWriter.TILE,
        "blockysize": GeoTiffWriter.TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
        **extra,
    }
    if like is not None and (like.ds.crs is not None or not like.ds.transform.is_identity):
        profile.update(crs=like.ds.crs, transform=like.ds.transform)
    return rasterio().open(path, "w", **profile)


class GeoTiffWriter:
    """A class-index GeoTIFF on the grid of `like` (a Raster; None: a plain image of `size`, no georeference),
    written by rows (`write`, buffered to whole tile rows), finished by `close` or dropped by `abandon`."""

    TILE = 256

    def __init__(
        self,
        path: Path,
        like: Raster | None,
        palette: np.ndarray,
        names: tuple[str, ...],
        fingerprint: str,
        overviews: bool = False,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path, self.overviews = path, overviews
        self.wide = len(names) > 255
        self.nodata = NODATA_U16 if self.wide else NODATA_U8
        self.ds = _open_tiled(path, like, size, 1, "uint16" if self.wide else "uint8", nodata=self.nodata)
        try:
            if not self.wide:
                self.ds.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(palette[: len(names)])})
            self.ds.set_band_description(1, "class")
            self.ds.update_tags(**{FINGERPRINT_TAG: fingerprint})
            self.ds.update_tags(1, CLASS_NAMES=json.dumps(list(names)))
        except BaseException:
            self.ds.close()
            raise
        self._pending: list[np.ndarray] = []  # rows not yet written: less than a tile row
        self._next = 0  # first row not yet written

    def write(self, y1: int, labels: np.ndarray) -> None:
        """Class indices [rows, W] (nodata already set) for rows [y1, y1 + rows), top to bottom."""
        self._push(y1, labels.astype(self.ds.dtypes[0], copy=False)[None])

    def _push(self, y1: int, bands: np.ndarray) -> None:
        """Bands [count, rows, W] for rows [y1, y1 + rows), top to bottom; written to the file in whole tile
        rows (a partly filled compressed tile would be rewritten)."""
        from rasterio.windows import Window

        self._pending.append(bands)
        held = sum(p.shape[1] for p in self._pending)
        last = y1 + bands.shape[1] == self.ds.height
        if not last and held < self.TILE:
            return
        rows = held if last else held // self.TILE * self.TILE
        band = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        self.ds.write(band[:, :rows], window=Window(0, self._next, band.shape[2], rows))
        self._next += rows
        self._pending = [band[:, rows:]] if rows < band.shape[1] else []

    def close(self) -> None:
        if self._next != self.ds.height:
            raise ValueError(f"GeoTIFF has {self._next} of {self.ds.height} rows")
        self.ds.close()
        if not self.overviews:
            return
        from rasterio.enums import Resampling

        with rasterio().open(self.path, "r+") as ds:  # reopened: the colour table is in the file by now
            side = max(ds.width, ds.height)
            factors = [2**i for i in range(1, 16) if side / 2**i >= 256]
            if factors:
                ds.build_overviews(factors, Resampling.mode)
                ds.update_tags(ns="rio_overview", resampling="mode")

    def abandon(self) -> None:
        """Close without finishing (after a failure; the file is being deleted)."""
        if not self.ds.closed:
            with contextlib.suppress(Exception):
                self.ds.close()


def write_labels_tiff(path: Path, labels: np.ndarray, palette: np.ndarray, names: tuple[str, ...], fp: str) -> None:
    """The class-index GeoTIFF of an image decoded whole (no georeference), written atomically."""
    from ..fsutil import atomic_path

    with atomic_path(path) as tmp:
        tif = GeoTiffWriter(tmp, None, palette, names, fp, size=labels.shape)
        try:
            tif.write(0, labels)
            tif.close()
        finally:
            tif.abandon()


class ProbsTiffWriter(GeoTiffWriter):
    """The primary head's probabilities on the grid of `like`: one uint8 band per class (value / 255 is the
    probability; band scale 1/255 and the class name as its description; nodata pixels hold 0)."""

    def __init__(self, path: Path, like: Raster | None, names: tuple[str, ...], size: tuple[int, int] | None = None):
        self.path, self.overviews = path, False
        self.ds = _open_tiled(path, like, size, len(names), "uint8", interleave="band")
        try:
            for i, name in enumerate(names, start=1):
                self.ds.set_band_description(i, name)
            self.ds.scales = [1 / 255] * len(names)
        except BaseException:
            self.ds.close()
            raise
        self._pending, self._next = [], 0

    def write(self, y1: int, probs: np.ndarray) -> None:
        """uint8 [K, rows, W] for rows [y1, y1 + rows), top to bottom."""
        self._push(y1, probs)


class FloatTiffWriter(GeoTiffWriter):
    """One float32 band on the grid of `like` (confidence, entropy), nodata NaN, its description `name`."""

    def __init__(self, path: Path, like: Raster | None, name: str, size: tuple[int, int] | None = None):
        self.path, self.overviews = path, False
        self.ds = _open_tiled(path, like, size, 1, "float32", nodata=float("nan"))
        try:
            self.ds.set_band_description(1, name)
        except BaseException:
            self.ds.close()
            raise
        self._pending, self._next = [], 0

    def write(self, y1: int, values: np.ndarray) -> None:
        """float32 [rows, W] (NaN at nodata) for rows [y1, y1 + rows), top to bottom."""
        self._push(y1, values[None])


def write_float_tiff(path: Path, values: np.ndarray, name: str) -> None:
    """A float map [H, W] of an image decoded whole as a one-band float32 TIFF, atomically."""
    from ..fsutil import atomic_path

    with atomic_path(path) as tmp:
        tif = FloatTiffWriter(tmp, None, name, size=values.shape)
        try:
            tif.write(0, values.astype(np.float32))
            tif.close()
        finally:
            tif.abandon()


def probs_u8(probs: np.ndarray) -> np.ndarray:
    """Probabilities (any float) → uint8 value / 255."""
    return np.clip(np.rint(probs.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_probs_tiff(path: Path, probs: np.ndarray, names: tuple[str, ...]) -> None:
    """The probabilities [K, H, W] of an image decoded whole as a uint8-scaled multi-band TIFF, atomically."""
    from ..fsutil import atomic_path

    with atomic_path(path) as tmp:
        tif = ProbsTiffWriter(tmp, None, names, size=probs.shape[1:])
        try:
            tif.write(0, probs_u8(probs))
            tif.close()
        finally:
            tif.abandon()
