"""Encoding and writing one finished image's outputs (runs in the writer thread)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..engine import Prediction
from ..fsutil import atomic_path, atomic_write_bytes, check_inside, remove_stale_temps
from ..io import coco, labelstudio
from ..io.outputs import (
    MAP_KINDS,
    class_counts,
    class_stats,
    confidence_stats,
    index_png,
    json_bytes,
    label_png,
    overlay_jpeg,
    probs_npy,
    top_classes,
    topk_npz,
    unit_png,
)
from ..loading.classes import ClassSet
from .plan import Options, Task, item_fingerprint
from .records import ImageRecord


def background(classes: ClassSet) -> int | None:
    """The label overlays leave unpainted: a parser's "-" (0), nothing for other class sets."""
    return 0 if classes.classes[:1] == ("-",) else None


@dataclass(frozen=True)
class Writer:
    class_set: ClassSet
    opts: Options
    details: dict[str, Any]  # RunRecord.details(): the same for every image of the run
    fingerprint: str
    head_sets: dict[str, ClassSet] = field(default_factory=dict)  # a parsing model's part, material, scene
    swept: set[Path] = field(default_factory=set)  # folders cleared of a killed run's temporary files

    @property
    def merged(self) -> bool:
        """The classes are a class map's (`--class-map`)."""
        inference = self.details.get("inference")
        return isinstance(inference, dict) and "class_map" in inference

    def _parsing(self, pred: Prediction) -> dict[str, Any]:
        """JSON of the other heads: "materials" and "parts" present (pixels), the "scene" top 5."""
        out: dict[str, Any] = {}
        for kind, key in (("material", "materials"), ("part", "parts")):
            if kind in pred.maps:
                names = self.head_sets[kind].classes
                out[key] = class_stats(class_counts(pred.maps[kind], len(names)), list(names))
        if pred.image_probs is not None and "scene" in self.head_sets:
            out["scene"] = top_classes(pred.image_probs, self.head_sets["scene"].classes)
        return out

    def _maps(self, written: list[Path], paths: dict[str, Path], image: np.ndarray, pred: Prediction, fp: str) -> None:
        for kind in MAP_KINDS:
            if kind not in pred.maps:
                continue
            classes = self.head_sets[kind]
            if kind in paths:
                self.put(written, paths[kind], label_png(pred.maps[kind], classes.palette_array, fp))
            if f"{kind}_overlay" in paths:
                self.put(written, paths[f"{kind}_overlay"], self._overlay(image, pred.maps[kind], classes))

    def __call__(self, task: Task, image: np.ndarray, pred: Prediction, timings: dict[str, float]) -> ImageRecord:
        """Write the outputs `task.paths` asks for, the palette PNG last (it marks the image done)."""
        labels, paths, opts, k = pred.labels, task.paths, self.opts, len(self.class_set.classes)
        fp = item_fingerprint(self.fingerprint, task.item)
        assert labels is not None  # batch prediction asks for labels
        counts = class_counts(labels, k)
        classes = class_stats(counts, list(self.class_set.classes))
        extra = self._parsing(pred)
        if self.merged:  # a class map: pixels of its ignored classes (in no class's count)
            extra["ignored_pixels"] = int(labels.size - counts.sum())
        if pred.confidence is not None:
            extra["confidence"] = confidence_stats(pred.confidence, labels, self.class_set.classes, opts.low_confidence)
        record = ImageRecord.done(task.item, paths, self.details, fp, labels.shape, counts, classes, heads=extra)
        record.published = opts.published
        written: list[Path] = []
        try:
            t = time.perf_counter()
            if "label" in paths:
                self.put(written, paths["label"], index_png(labels, k))
            if "overlay" in paths:
                self.put(written, paths["overlay"], self._overlay(image, labels, self.class_set))
            self._maps(written, paths, image, pred, fp)
            if "geotiff" in paths:  # an image decoded whole: class indices, no georeference
                from ..io.geotiff import write_labels_tiff

                check_inside(opts.out, paths["geotiff"])
                c = self.class_set
                write_labels_tiff(paths["geotiff"], labels, c.palette_array, c.classes, fp)
                written.append(paths["geotiff"])
            if "probs" in paths and paths["probs"].suffix == ".tif":  # a raster format decoded whole
                from ..io.geotiff import write_probs_tiff

                check_inside(opts.out, paths["probs"])
                assert pred.probs is not None  # asked for with --save probs
                write_probs_tiff(paths["probs"], pred.probs, self.class_set.classes)
                written.append(paths["probs"])
            elif "probs" in paths:
                assert pred.probs is not None
                probs, topk = pred.probs, opts.topk
                self.put(written, paths["probs"], lambda f: topk_npz(probs, topk, f) if topk else probs_npy(probs, f))
            self._next_tools(written, paths, task, labels, pred)
            record.timings = {**timings, "write_s": time.perf_counter() - t}
            if "json" in paths:
                self.put(written, paths["json"], json_bytes(record.file_json()))
            self.put(written, paths["png"], label_png(labels, self.class_set.palette_array, fp))
            if opts.publish:  # each file one PUT, the PNG last (batch.outbox)
                from .outbox import Outbox

                Outbox(opts.publish.rstrip("/"), opts.out, opts.remote).upload(written)
        except Exception as e:  # noqa: BLE001 - a full disk, a bad class list...: this image's failure
            for path in written:  # no half-finished image: what this call wrote goes again
                with contextlib.suppress(OSError):
                    path.unlink()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            error = f"{task.item.source}: cannot write outputs under {opts.out} ({reason})"
            if isinstance(e, OSError) and str(e).startswith("cannot upload"):
                error = f"{task.item.source}: {e}"
            return ImageRecord.failed(task.item.source, task.item.name.as_posix(), error, task.item)
        if opts.report:
            self._thumbnails(paths["png"], image, labels)
        record.timings["write_s"] = time.perf_counter() - t
        return record

    def _thumbnails(self, png: Path, image: np.ndarray, labels: np.ndarray) -> None:
        """The report's pictures of this image (a failure only costs the report a redraw from the files)."""
        from ..report import gallery

        folder = self.opts.out / gallery.FOLDER / "thumbs"
        key = gallery.thumb_key(png, self.opts.out)
        with contextlib.suppress(OSError):
            for kind, data in gallery.thumbnails(image, labels, self.class_set.palette_array, self.opts.alpha).items():
                gallery.save(self.opts.out, folder / f"{key}-{kind}{gallery.KINDS[kind]}", data)

    def _next_tools(
        self, written: list[Path], paths: dict[str, Path], task: Task, labels: np.ndarray, pred: Prediction
    ) -> None:
        """Confidence and entropy maps, polygons, Label Studio and COCO files of a photo (decoded whole)."""
        opts, k = self.opts, len(self.class_set.classes)
        for kind in ("confidence", "entropy"):
            values = getattr(pred, kind)
            if kind in paths and values is not None and paths[kind].suffix == ".tif":  # a raster format
                from ..io.geotiff import write_float_tiff

                check_inside(opts.out, paths[kind])
                write_float_tiff(paths[kind], values, kind)
                written.append(paths[kind])
            elif kind in paths and values is not None:
                self.put(written, paths[kind], unit_png(values))
        if "vector" in paths:  # a photo: pixel coordinates
            from ..io.vector import opened

            check_inside(opts.out, paths["vector"])
            with atomic_path(paths["vector"]) as tmp:
                vec = opened(tmp, labels.shape, self.class_set.classes, opts.vector, task.item.path)
                try:
                    vec.write(0, labels, labels < k if (labels >= k).any() else None)  # ignored: no polygon
                    vec.close()
                finally:
                    vec.abandon()
            written.append(paths["vector"])
        if "labelstudio" in paths:
            from_name, to_name, prefix = opts.labelstudio
            doc = labelstudio.task(labels, self.class_set.classes, prefix + task.item.rel.as_posix(),
                                   from_name=from_name, to_name=to_name, model_version=self._version())  # fmt: skip
            self.put(written, paths["labelstudio"], json_bytes(doc))
        if "coco" in paths:
            doc = coco.image_doc(labels, task.item.rel.as_posix(), self.class_set.classes)
            self.put(written, paths["coco"], json_bytes(doc))

    def _version(self) -> str:
        """The predictions' `model_version`: the model's name and weights."""
        model = self.details.get("model", {})
        sha = model.get("sha256") if isinstance(model, dict) else None
        name = model.get("name") if isinstance(model, dict) else None
        return f"segcli {name or 'model'}" + (f" {sha[:12]}" if isinstance(sha, str) else "")

    def _overlay(self, image: np.ndarray, labels: np.ndarray, classes: ClassSet) -> bytes:
        legend = classes if self.opts.legend else None
        return overlay_jpeg(image, labels, classes.palette_array, self.opts.alpha, background(classes), legend)

    def put(self, written: list[Path], path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
        """Write one output file atomically (inside --out; a killed run's temporary files there swept): its
        bytes, or a function that writes them to a file (large arrays, without a copy in memory)."""
        check_inside(self.opts.out, path)
        if path.parent not in self.swept:
            self.swept.add(path.parent)
            remove_stale_temps(path.parent)
        if isinstance(data, bytes):
            atomic_write_bytes(path, data)
        else:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                data(f)
        written.append(path)
