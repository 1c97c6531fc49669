"""Rasters through GDAL (the `[geo]` extra, rasterio): windowed reading in (georeferenced GeoTIFF out:
`io.geotiff`).

Reading (`Raster`): a TIFF / GeoTIFF / COG / BigTIFF / JP2 / anything GDAL opens is opened, not decoded.
`read(y1, y2)` gives full-width rows as RGB uint8 [rows, W, 3] plus the valid mask [rows, W] (False where
the dataset's nodata value, per-dataset mask or alpha band says "no data"):

* bands: `--bands 3,2,1` (1-based), default the bands whose colour interpretation is red, green, blue,
  else the first three; a single band (or two: grey + alpha) is replicated to three channels;
* values: 8-bit data as stored; anything else scaled to 0..255 by `--scale-range MIN:MAX` (one range for
  every band) or `--stretch P1,P2` (per-band percentiles of the valid pixels, computed from a decimated read
  of at most `SAMPLE_SIDE`² pixels — GDAL serves it from the overviews when the file has them); the default
  for non-8-bit data is `--stretch 2,98`. What was used is recorded (`Raster.describe`).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, UsageError, first_line
from ..extras import require
from . import gdalfence

RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2", ".vrt", ".img")  # read by GDAL when the [geo] extra is there
SAMPLE_SIDE = 1024  # --stretch percentiles: from a read decimated to at most this many pixels a side
DEFAULT_STRETCH = (2.0, 98.0)
FINGERPRINT_TAG = "SEGCLI_FINGERPRINT"
NODATA_U8, NODATA_U16 = 255, 65535


GDAL_CACHE_MB = "64"  # GDAL's block cache, MB (its default, 5 % of RAM, is more than windowed reading needs)


@functools.cache
def rasterio() -> Any:
    """The rasterio module, set up once: GDAL's cache bounded, its "not georeferenced" warning silenced (a
    raster without a georeference is fine: its JSON says "crs": null; process-wide, as decoding is threaded)."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)  # read by GDAL when the cache is first used
    rio = require("rasterio", "geo", "reading and writing GeoTIFF / GDAL rasters")
    warnings.filterwarnings("ignore", category=rio.errors.NotGeoreferencedWarning)
    return rio


@dataclass(frozen=True)
class RasterOptions:
    """How raster values become RGB: 1-based band indices, and one scaling (None: the default)."""

    bands: tuple[int, ...] | None = None
    scale_range: tuple[float, float] | None = None
    stretch: tuple[float, float] | None = None
    trust_vrt: bool = False  # VRT sources may leave the input's folder, and reach the network (see gdalfence)

    @staticmethod
    def parse(
        bands: str | None, scale_range: str | None, stretch: str | None, trust_vrt: bool = False
    ) -> RasterOptions:
        """The CLI's strings, checked (UsageError naming the flag and an example)."""
        b = None
        if bands is not None:
            try:
                b = tuple(int(x) for x in bands.split(","))
            except ValueError:
                b = ()
            if len(b) not in (1, 3) or min(b) < 1:
                raise UsageError(f"--bands {bands!r}: give one or three 1-based band numbers, e.g. --bands 3,2,1")
        if scale_range is not None and stretch is not None:
            raise UsageError("--scale-range and --stretch both given", hint="choose one way to scale values")
        sr = _pair(scale_range, ":", "--scale-range", "0:10000") if scale_range is not None else None
        if sr is not None and not sr[0] < sr[1]:
            raise UsageError(f"--scale-range {scale_range}: MIN must be below MAX, e.g. --scale-range 0:10000")
        st = _pair(stretch, ",", "--stretch", "2,98") if stretch is not None else None
        if st is not None and not 0 <= st[0] < st[1] <= 100:
            raise UsageError(f"--stretch {stretch}: percentiles must satisfy 0 ≤ P1 < P2 ≤ 100, e.g. --stretch 2,98")
        return RasterOptions(b, sr, st, trust_vrt)


def _pair(text: str, sep: str, flag: str, example: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(sep))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected two numbers, e.g. {flag} {example}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UsageError(f"{flag} {text!r}: the numbers must be finite, e.g. {flag} {example}")
    return a, b


def is_raster_path(path: Path) -> bool:
    return path.suffix.lower() in RASTER_EXTENSIONS


def gdal_reads(path: Path) -> bool:
    """Whether `path` is a raster format read through GDAL here (the [geo] extra installed)."""
    return is_raster_path(path) and importlib.util.find_spec("rasterio") is not None


class Raster:
    """An opened raster: its RGB view (bands, scaling, mask) read by rows, and its georeference."""

    def __init__(self, path: Path, options: RasterOptions = RasterOptions()) -> None:
        rio = rasterio()
        self.path = Path(path)
        gdalfence.check(self.path, options.trust_vrt)
        config = gdalfence.TRUSTED_CONFIG if options.trust_vrt else gdalfence.FENCE_CONFIG
        self._config = {k: v for k, v in config.items() if k not in os.environ}  # the user's environment wins
        try:
            with rio.Env(**self._config):
                if options.trust_vrt:
                    self.ds = rio.open(self.path)
                else:  # GDAL's file-format drivers only (rasterio.open takes one name, its reader a list)
                    self.ds = rio.io.DatasetReader(str(self.path), driver=list(gdalfence.read_drivers()))
        except Exception as e:  # noqa: BLE001 - GDAL's error (truncated, not a raster) is this file's one line
            raise ImageError(f"{path}: cannot open raster ({first_line(e)})") from None
        try:
            with rio.Env(**self._config):
                self._check(options)
        except BaseException:
            self.ds.close()
            raise

    def _check(self, options: RasterOptions) -> None:
        ds = self.ds
        if any(np.dtype(d).kind == "c" for d in ds.dtypes):
            raise ImageError(f"{self.path}: complex-valued raster ({ds.dtypes[0]}) cannot be shown as colours")
        self.height, self.width = int(ds.height), int(ds.width)
        self.bands = self._bands(options.bands)
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        self.lut: np.ndarray | None = None  # a palette raster: index → RGB
        if options.bands is None and ds.count == 1 and ds.colorinterp[0].name == "palette" and self.dtype == np.uint8:
            self.lut = np.zeros((256, 3), dtype=np.uint8)
            for i, rgba in ds.colormap(1).items():
                self.lut[i] = rgba[:3]
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        self.masked = not all(len(f) == 1 and f[0].name == "all_valid" for f in flags)
        self.scaling = self._scaling(options)

    def _bands(self, wanted: tuple[int, ...] | None) -> tuple[int, ...]:
        n = self.ds.count
        if wanted is not None:
            bad = [b for b in wanted if b > n]
            if bad:
                raise ImageError(f"{self.path}: --bands {bad[0]} is out of range: the raster has {n} band(s)")
            return wanted * 3 if len(wanted) == 1 else wanted
        names = [c.name for c in self.ds.colorinterp]
        if all(c in names for c in ("red", "green", "blue")):
            return tuple(names.index(c) + 1 for c in ("red", "green", "blue"))
        return (1, 2, 3) if n >= 3 else (1, 1, 1)

    def _scaling(self, options: RasterOptions) -> dict[str, Any]:
        """{"kind": "none" | "range" | "stretch", "low": [3], "high": [3], ...}: value → 255·(v-low)/(high-low)."""
        if options.scale_range is not None:
            lo, hi = options.scale_range
            scaling = {"kind": "range", "low": [lo] * 3, "high": [hi] * 3}
        elif self.dtype == np.uint8 and options.stretch is None:
            return {"kind": "none"}
        else:
            p = options.stretch or DEFAULT_STRETCH
            low, high = self._percentiles(p)
            scaling = {"kind": "stretch", "percentiles": list(p), "low": low, "high": high}
        with np.errstate(over="ignore"):
            spans = np.asarray(scaling["high"], dtype=np.float64) - np.asarray(scaling["low"], dtype=np.float64)
        if not np.isfinite(spans).all():  # e.g. values near ±1.8e308: their range overflows float64
            raise ImageError(
                f"{self.path}: its values span more than float64 can scale ({scaling['low']} .. {scaling['high']})",
                hint="give the range that matters with --scale-range MIN:MAX",
            )
        return scaling

    def _percentiles(self, p: tuple[float, float]) -> tuple[list[float], list[float]]:
        f = max(1, math.ceil(max(self.height, self.width) / SAMPLE_SIDE))
        shape = (3, max(1, self.height // f), max(1, self.width // f))
        a = self.ds.read(list(self.bands), out_shape=shape, masked=True).astype(np.float64)
        lo: list[float] = []
        hi: list[float] = []
        for band in a:
            values = band.compressed()
            values = values[np.isfinite(values)]
            with np.errstate(over="ignore", invalid="ignore"):  # huge values: checked by the caller
                a_lo, a_hi = np.percentile(values, p) if values.size else (0.0, 1.0)
            lo.append(float(a_lo))
            hi.append(float(a_hi) if a_hi > a_lo else float(np.nextafter(a_lo, np.inf)))
        return lo, hi

    def read(self, y1: int, y2: int, x1: int = 0, x2: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 [rows, cols, 3] and the valid mask [rows, cols] (None: every pixel is valid)."""
        from rasterio.windows import Window

        x2 = self.width if x2 is None else x2
        win = Window(x1, y1, x2 - x1, y2 - y1)
        try:
            with rasterio().Env(**self._config):
                a = self.ds.read(list(self.bands), window=win)  # [3, rows, cols]
                valid = self.ds.read_masks(list(self.bands), window=win).min(0) > 0 if self.masked else None
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt block: this raster's failure
            raise ImageError(f"{self.path}: cannot read rows {y1}..{y2} ({first_line(e)})") from None
        if self.lut is not None:
            return np.ascontiguousarray(self.lut[a[0]]), valid
        return _to_rgb8(a, self.scaling), valid

    def valid(self, y1: int, y2: int) -> np.ndarray | None:
        """The valid mask of full-width rows [y1, y2) (None: every pixel is valid)."""
        if not self.masked:
            return None
        from rasterio.windows import Window

        try:
            with rasterio().Env(**self._config):
                return self.ds.read_masks(list(self.bands), window=Window(0, y1, self.width, y2 - y1)).min(0) > 0
        except Exception as e:  # noqa: BLE001
            raise ImageError(f"{self.path}: cannot read the mask of rows {y1}..{y2} ({first_line(e)})") from None

    def describe(self) -> dict[str, Any]:
        """The JSON `raster` record: size, bands, dtype, scaling, and the georeference (see `georef`)."""
        return {
            "bands": list(self.bands),
            "dtype": str(self.dtype),
            "scaling": self.scaling,
            "nodata": _json_number(self.ds.nodata),
            "masked": self.masked,
            **georef(self.ds),
        }

    def close(self) -> None:
        self.ds.close()


def _to_rgb8(a: np.ndarray, scaling: dict[str, Any]) -> np.ndarray:
    if scaling["kind"] == "none":
        rgb = a.astype(np.uint8, copy=False)
    else:
        # float64: values of float64 rasters (up to ±1.8e308) and their range stay finite; NaN pixels → 0
        lo = np.asarray(scaling["low"], dtype=np.float64)[:, None, None]
        span = (np.asarray(scaling["high"], dtype=np.float64)[:, None, None]) - lo
        with np.errstate(over="ignore", invalid="ignore"):
            v = (a.astype(np.float64) - lo) / span * 255.0
        rgb = np.clip(np.nan_to_num(v, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


def _json_number(v: float | None) -> float | str | None:
    """A nodata value for JSON: NaN and infinities as strings (JSON has no such numbers)."""
    if v is None:
        return None
    return float(v) if math.isfinite(v) else str(float(v))


def georef(ds: Any) -> dict[str, Any]:
    """CRS, bounds, pixel size and (projected CRSs) the area of one pixel in m²; "crs": None without one."""
    t = ds.transform
    out: dict[str, Any] = {"crs": None, "transform": [t.a, t.b, t.c, t.d, t.e, t.f]}
    if ds.crs is None:
        return out
    crs = ds.crs
    epsg = crs.to_epsg()
    out["crs"] = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    out["bounds"] = list(ds.bounds)
    out["pixel_size"] = [abs(t.a), abs(t.e)]
    if crs.is_projected:
        _, metres = crs.linear_units_factor
        out["pixel_area_m2"] = abs(t.a * t.e - t.b * t.d) * metres * metres
    return out
