"""Encoding and writing one finished image's outputs (runs in the writer thread)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import ClassSet
from ..engine import Prediction
from ..fsutil import atomic_write_bytes, check_inside, remove_stale_temps
from ..outputs import (
    MAP_KINDS,
    class_counts,
    class_stats,
    index_png,
    json_bytes,
    label_png,
    overlay_jpeg,
    probs_npy,
    top_classes,
    topk_npz,
)
from .plan import Options, Task
from .records import ImageRecord


@dataclass(frozen=True)
class Writer:
    classes: tuple[str, ...]
    palette: np.ndarray  # [K, 3] uint8
    opts: Options
    details: dict[str, Any]  # model, preset, inference: the same for every image of the run
    fingerprint: str
    head_sets: dict[str, ClassSet] = field(default_factory=dict)  # a parsing model's part, material, scene
    swept: set[Path] = field(default_factory=set)  # folders cleared of a killed run's temporary files

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

    def _maps(self, written: list[Path], paths: dict[str, Path], image: np.ndarray, pred: Prediction) -> None:
        for kind in MAP_KINDS:
            if kind not in pred.maps:
                continue
            palette = self.head_sets[kind].palette_array
            if kind in paths:
                self._write(written, paths[kind], label_png(pred.maps[kind], palette, self.fingerprint))
            if f"{kind}_overlay" in paths:
                blend = overlay_jpeg(image, pred.maps[kind], palette, self.opts.alpha, background=0)
                self._write(written, paths[f"{kind}_overlay"], blend)

    def __call__(self, task: Task, image: np.ndarray, pred: Prediction, timings: dict[str, float]) -> ImageRecord:
        """Write the outputs `task.paths` asks for, the palette PNG last (it marks the image done)."""
        labels, paths, opts, k = pred.labels, task.paths, self.opts, len(self.classes)
        h, w = labels.shape
        counts = class_counts(labels, k)
        details = {
            "image": {"width": int(w), "height": int(h)},
            **self.details,
            "classes": class_stats(counts, list(self.classes)),
            **self._parsing(pred),
        }
        record = ImageRecord(
            str(task.item.path),
            task.item.name.as_posix(),
            "done",
            outputs=paths,
            details=details,
            fingerprint=self.fingerprint,
            counts=counts,
            scene=details["scene"][0]["index"] if details.get("scene") else None,
        )
        written: list[Path] = []
        try:
            t = time.perf_counter()
            if "label" in paths:
                self._write(written, paths["label"], index_png(labels, k))
            if "overlay" in paths:
                self._write(written, paths["overlay"], overlay_jpeg(image, labels, self.palette, opts.alpha))
            self._maps(written, paths, image, pred)
            if "probs" in paths:
                data = topk_npz(pred.probs, opts.topk) if opts.topk else probs_npy(pred.probs)
                self._write(written, paths["probs"], data)
            record.timings = {**timings, "write_s": time.perf_counter() - t}
            if "json" in paths:
                self._write(written, paths["json"], json_bytes(record.file_json()))
            self._write(written, paths["png"], label_png(labels, self.palette, self.fingerprint))
        except Exception as e:  # noqa: BLE001 - a full disk, a bad class list...: this image's failure
            for path in written:  # no half-finished image: what this call wrote goes again
                with contextlib.suppress(OSError):
                    path.unlink()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            error = f"{task.item.path}: cannot write outputs under {opts.out} ({reason})"
            return ImageRecord.failed(str(task.item.path), task.item.name.as_posix(), error)
        record.timings["write_s"] = time.perf_counter() - t
        return record

    def _write(self, written: list[Path], path: Path, data: bytes) -> None:
        check_inside(self.opts.out, path)
        if path.parent not in self.swept:
            self.swept.add(path.parent)
            remove_stale_temps(path.parent)
        atomic_write_bytes(path, data)
        written.append(path)
