"""Encoding and writing one finished image's outputs (runs in the writer thread)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import Prediction
from ..fsutil import atomic_write_bytes
from ..outputs import class_counts, class_stats, index_png, json_bytes, label_png, overlay_jpeg, probs_npy, topk_npz
from .plan import Options, Task
from .records import ImageRecord


@dataclass(frozen=True)
class Writer:
    classes: tuple[str, ...]
    palette: np.ndarray  # [K, 3] uint8
    opts: Options
    details: dict[str, Any]  # model, preset, inference: the same for every image of the run
    fingerprint: str

    def __call__(self, task: Task, image: np.ndarray, pred: Prediction, timings: dict[str, float]) -> ImageRecord:
        """Write the outputs `task.paths` asks for, the palette PNG last (it marks the image done)."""
        labels, paths, opts, k = pred.labels, task.paths, self.opts, len(self.classes)
        h, w = labels.shape
        counts = class_counts(labels, k)
        details = {
            "image": {"width": int(w), "height": int(h)},
            **self.details,
            "classes": class_stats(counts, list(self.classes)),
        }
        record = ImageRecord(
            str(task.item.path),
            task.item.name.as_posix(),
            "done",
            outputs=paths,
            details=details,
            fingerprint=self.fingerprint,
            counts=counts,
        )
        try:
            t = time.perf_counter()
            if "label" in paths:
                atomic_write_bytes(paths["label"], index_png(labels, k))
            if "overlay" in paths:
                atomic_write_bytes(paths["overlay"], overlay_jpeg(image, labels, self.palette, opts.alpha))
            if "probs" in paths:
                data = topk_npz(pred.probs, opts.topk) if opts.topk else probs_npy(pred.probs)
                atomic_write_bytes(paths["probs"], data)
            record.timings = {**timings, "write_s": time.perf_counter() - t}
            if "json" in paths:
                atomic_write_bytes(paths["json"], json_bytes(record.file_json()))
            atomic_write_bytes(paths["png"], label_png(labels, self.palette, self.fingerprint))
        except OSError as e:
            reason = f"{task.item.path}: cannot write outputs under {opts.out} ({e.strerror or e})"
            return ImageRecord.failed(str(task.item.path), task.item.name.as_posix(), reason)
        record.timings["write_s"] = time.perf_counter() - t
        return record
