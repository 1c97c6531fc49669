"""Rasters in a batch run: opened (not decoded) by the decode step, segmented and written by rows.

Which inputs take this path (`open_raster`): with the `[geo]` extra installed, a TIFF / JP2 / VRT / IMG
that needs GDAL — georeferenced, not 8-bit, with nodata / a mask / alpha, larger than `--max-pixels`, or
any band/scaling flag given — and every input when `--save geotiff` is asked for. A plain 8-bit TIFF
photo keeps the Pillow path (and every output kind).

Outputs of a raster: the palette PNG (`<stem>.png`, streamed row by row, the fingerprint in it, renamed
into place last: it marks the image done), `label`, `geotiff` and `json`; nodata pixels are written as the
nodata label (255, or 65535 above 255 classes) and left out of the class counts. Other kinds need the whole
image in memory: asking for them fails the raster with one line. Windowed reading needs a protocol that
slides windows (`--mode slide`) and either does not resize (`--resize none`, one scale) or resizes
bilinearly (mmseg, csail, semseg presets; not Pillow's antialiased resize of `hf`); otherwise the raster is
read whole, within `--max-pixels`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.lazy import LazyImage
from ..engine.predict import view_size
from ..engine.presets import Params
from ..errors import ImageError
from ..fsutil import atomic_path, check_inside
from ..io.geotiff import FloatTiffWriter, GeoTiffWriter, ProbsTiffWriter
from ..io.outputs import MAP_KINDS, ConfidenceTally, class_stats, json_bytes
from ..io.pngstream import PngStream
from ..io.raster import NODATA_U8, NODATA_U16, Raster, RasterOptions, is_raster_path
from .pipeline import Stopped
from .plan import Options, Task
from .records import ImageRecord
from .writer import Writer

ROW_LIMIT_BYTES = 16 << 30  # a windowed raster's full-width window sums, at most
STREAMED = frozenset({"png", "label", "geotiff", "json", "probs", "confidence", "entropy", "vector", *MAP_KINDS})


def geo_available() -> bool:
    return importlib.util.find_spec("rasterio") is not None


def open_raster(path: Path, opts: Options) -> Raster | None:
    """The raster at `path` when it takes the raster path (see the module docstring), else None."""
    if not is_raster_path(path) or not (geo_available() or "geotiff" in opts.save):
        return None  # JPEG, PNG, ...: Pillow (EXIF orientation, palettes); a geotiff output without georeference
    raster = Raster(path, opts.raster)
    plain = (
        opts.raster == RasterOptions()
        and raster.ds.driver == "GTiff"  # (a VRT, JP2, IMG: GDAL reads it, whatever it holds)
        and raster.dtype == np.uint8
        and not raster.masked
        and raster.ds.crs is None
        and raster.ds.transform.is_identity
        and raster.height * raster.width <= opts.max_pixels
        and raster.ds.count in (1, 3)
    )
    if plain:  # a TIFF photo: Pillow decodes it, and every output kind is available (geotiff without CRS)
        raster.close()
        return None
    return raster


def windowed(params: Params) -> bool:
    """Whether the protocol can run on rows read on demand (else the raster is read whole)."""
    unresized = params.resize.kind == "none" and tuple(params.scales) == (1.0,)
    return params.mode == "slide" and (params.resample != "pil" or unresized) and not params.resize_once


class RasterStream:
    """Segments one raster into its outputs (called by the pipeline in place of infer + write)."""

    def __init__(
        self, seg: Any, params: Params, opts: Options, writer: Writer, on_windows: Callable[[int, int], None] | None
    ) -> None:
        self.seg, self.params, self.opts, self.writer = seg, params, opts, writer
        self.on_windows = on_windows  # (done, total): progress within one raster

    def _row_bytes(self, raster: Raster) -> int:
        """Memory of one row of windows across the raster, per view: the source rows it reads (uint8 RGB +
        mask, and float32 while resizing) and its window sums (float32, every channel)."""
        h, w, p = raster.height, raster.width, self.params
        assert p.crop is not None  # windowed reading slides windows
        channels, total, crop_h = self.seg.model.heads.channels, 0, p.crop[0]
        for scale in p.scales:
            vh, vw = view_size(h, w, p, scale)
            source_rows = crop_h * h // max(vh, 1) + 2
            total += source_rows * w * 4 + (0 if (vh, vw) == (h, w) else 2 * 12 * crop_h * w)
            total += 4 * channels * crop_h * vw * (2 if p.flip else 1)
        if "probs" in self.opts.save:  # a band of uint8 probabilities, every class
            total += self.seg.num_classes * crop_h * w
        return total

    def _image(self, raster: Raster) -> LazyImage | np.ndarray:
        size = (raster.height, raster.width)
        if windowed(self.params):
            need = self._row_bytes(raster)
            if need > ROW_LIMIT_BYTES:
                raise ImageError(
                    f"{raster.path}: a row of windows across this {raster.width}x{raster.height} raster would "
                    f"hold {need / 2**30:.1f} GiB (limit {ROW_LIMIT_BYTES >> 30} GiB)",
                    hint="use --resize none (a preset that shrinks a huge raster reads most of it per window "
                    "row), split it into strips (gdal_translate -srcwin), or a model with fewer classes",
                )
            return LazyImage(raster.read, size)
        if raster.height * raster.width > self.opts.max_pixels:
            raise ImageError(
                f"{raster.path}: {raster.width}x{raster.height} raster exceeds --max-pixels, and the "
                f"'{self.params.preset}' protocol ({self.params.mode}, {self.params.resample} resize) needs it whole",
                hint="use --mode slide --resize none (windowed reading), or raise --max-pixels",
            )
        rgb, _ = raster.read(0, raster.height)
        return rgb

    def _progress(self, should_stop: Callable[[], bool]) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            if should_stop():  # Ctrl-C: this raster is abandoned now, not after its last window
                raise Stopped()
            if self.on_windows is not None:
                self.on_windows(done, total)

        return progress

    def __call__(
        self, task: Task, raster: Raster, decode_s: float, should_stop: Callable[[], bool] = lambda: False
    ) -> ImageRecord:
        extra = sorted(set(task.paths) - STREAMED)
        if extra:
            raise ImageError(
                f"{raster.path}: --save {','.join(extra)} is not available for rasters read through GDAL",
                hint="use --save json,label,geotiff for rasters",
            )
        for path in task.paths.values():
            check_inside(self.opts.out, path)
        t = time.perf_counter()
        with _Outputs(task.paths, raster, self.writer) as out:
            image, progress = self._image(raster), self._progress(should_stop)
            certain = bool({"confidence", "entropy"} & set(task.paths))
            pred = self.seg.stream(image, self.params, out.rows, progress, "probs" in task.paths, certain)
            infer_s = time.perf_counter() - t
            record = out.record(task, pred)
            record.timings = {"decode_s": decode_s, "inference_s": infer_s}
            if "json" in task.paths:
                out.json(record)
        return record


class _Outputs:
    """The raster's output files, open for writing while it runs; renamed into place (the palette PNG last)
    only when everything was written — after any failure the temporary files go."""

    def __init__(self, paths: dict[str, Path], raster: Raster, writer: Writer) -> None:
        self.paths, self.raster, self.writer = paths, raster, writer
        self.k = len(writer.class_set.classes)
        self.nodata = NODATA_U16 if self.k > 255 else NODATA_U8
        self.counts = np.zeros(self.k, dtype=np.int64)
        self.nodata_pixels = 0
        self.size = (raster.height, raster.width)
        self.stack = contextlib.ExitStack()
        self.streams: list[tuple[str, Any]] = []  # (map name, PngStream | GeoTiffWriter), written row by row
        self.vector: Any = None  # --save vector: polygons, merged across the bands
        want = {"confidence", "entropy"} & set(paths)
        self.tally = ConfidenceTally(writer.class_set.classes, writer.opts.low_confidence) if want else None

    def _png(self, kind: str, palette: np.ndarray | None, fingerprint: str | None, wide: bool) -> PngStream:
        tmp = self.stack.enter_context(atomic_path(self.paths[kind]))
        return PngStream(self.stack.enter_context(open(tmp, "wb")), self.size, palette, fingerprint, wide=wide)

    def __enter__(self) -> _Outputs:
        w, p = self.writer, self.paths
        try:
            # the palette PNG entered first: renamed last (it marks the image done)
            self.streams.append(("labels", self._png("png", w.class_set.palette_array, w.fingerprint, self.k > 255)))
            if "label" in p:
                self.streams.append(("labels", self._png("label", None, None, self.k > 255)))
            for kind in MAP_KINDS:  # a parsing model's other maps
                if kind in p:
                    n = len(w.head_sets[kind].classes)
                    self.streams.append((kind, self._png(kind, w.head_sets[kind].palette_array, None, n > 255)))
            if "probs" in p:
                if p["probs"].suffix != ".tif":  # --topk: not for rasters
                    raise ImageError(
                        f"{self.raster.path}: --topk is not available for rasters read through GDAL",
                        hint="leave --topk out: a raster's probabilities are a uint8 GeoTIFF, one band per class",
                    )
                tmp = self.stack.enter_context(atomic_path(p["probs"]))
                probs = ProbsTiffWriter(tmp, self.raster, w.class_set.classes)
                self.stack.callback(probs.abandon)
                self.streams.append(("probs", probs))
            for kind in ("confidence", "entropy"):
                if kind in p:
                    tmp = self.stack.enter_context(atomic_path(p[kind]))
                    band = FloatTiffWriter(tmp, self.raster, kind)
                    self.stack.callback(band.abandon)
                    self.streams.append((kind, band))
            if "vector" in p:
                from ..io.vector import opened

                tmp = self.stack.enter_context(atomic_path(p["vector"]))
                ds, area = self.raster.ds, self.raster.describe().get("pixel_area_m2")
                georef = ds.crs is not None or not ds.transform.is_identity
                self.vector = opened(tmp, self.size, w.class_set.classes, w.opts.vector, self.raster.path,
                                     transform=ds.transform if georef else None, crs=ds.crs, pixel_area_m2=area)  # fmt: skip
                self.stack.callback(self.vector.abandon)
            if "geotiff" in p:
                tmp = self.stack.enter_context(atomic_path(p["geotiff"]))
                names, palette = w.class_set.classes, w.class_set.palette_array
                tif = GeoTiffWriter(tmp, self.raster, palette, names, w.fingerprint, overviews=w.opts.overviews)
                self.stack.callback(tif.abandon)  # closed (not finished) when anything fails
                self.streams.append(("labels", tif))
        except BaseException:
            self.stack.__exit__(*sys.exc_info())  # the temporary files go, nothing is renamed
            raise
        return self

    def rows(self, y1: int, maps: dict[str, np.ndarray]) -> None:
        valid = self.raster.valid(y1, y1 + len(maps["labels"]))
        out = {}
        if "probs" in maps:
            out["probs"] = maps.pop("probs") if valid is None else np.where(valid, maps.pop("probs"), np.uint8(0))
        for kind in ("confidence", "entropy"):  # float32 rows, NaN at nodata
            if kind in maps:
                values = maps.pop(kind).astype(np.float32, copy=False)
                out[kind] = values if valid is None else np.where(valid, values, np.float32("nan"))
        if self.tally is not None and "confidence" in out:
            labels, conf = maps["labels"], out["confidence"]
            self.tally.add(conf if valid is None else conf[valid], labels if valid is None else labels[valid])
        for name, values in maps.items():
            values = values.astype(np.uint16 if values.dtype.itemsize > 1 or self.k > 255 else np.uint8, copy=False)
            if name == "labels":
                counted = values if valid is None else values[valid]
                self.counts += np.bincount(counted.ravel(), minlength=self.k)[: self.k]  # ignored: none
                self.nodata_pixels += 0 if valid is None else int(valid.size - np.count_nonzero(valid))
            nodata = NODATA_U16 if values.dtype == np.uint16 else NODATA_U8
            out[name] = values if valid is None else np.where(valid, values, values.dtype.type(nodata))
        for name, stream in self.streams:
            stream.write(y1, out[name])
        if self.vector is not None:
            labels = out["labels"]  # a class map's ignored pixels (label ≥ k) belong to no polygon
            self.vector.write(y1, labels, labels < self.k if valid is None else valid & (labels < self.k))

    def record(self, task: Task, pred: Any) -> ImageRecord:
        desc = self.raster.describe()
        classes = class_stats(self.counts, list(self.writer.class_set.classes))
        area = desc.get("pixel_area_m2")
        if area is not None:
            for c in classes:
                c["area_m2"] = c["pixels"] * area
                c["area_ha"] = c["area_m2"] / 1e4
        raster = {**desc, "nodata_label": self.nodata, "nodata_pixels": self.nodata_pixels}
        raster.update(windows=pred.windows, windows_skipped=pred.skipped)
        w = self.writer
        extra: dict[str, Any] = {"confidence": self.tally.to_json()} if self.tally is not None else {}
        if w.merged:  # a class map: pixels of its ignored classes (in no class's count)
            extra["ignored_pixels"] = self.size[0] * self.size[1] - self.nodata_pixels - int(self.counts.sum())
        return ImageRecord.done(
            task.item, task.paths, w.details, w.fingerprint, self.size, self.counts, classes, raster=raster, heads=extra
        )

    def json(self, record: ImageRecord) -> None:
        """The JSON, renamed into place with the other outputs (before the palette PNG)."""
        tmp = self.stack.enter_context(atomic_path(self.paths["json"]))
        tmp.write_bytes(json_bytes(record.file_json()))

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            try:
                for _, stream in self.streams:
                    stream.close()  # a PNG missing rows, a failed overview build: the image fails
                if self.vector is not None:
                    self.vector.close()
            except BaseException:
                self.stack.__exit__(*sys.exc_info())
                raise
        self.stack.__exit__(kind, value, tb)
