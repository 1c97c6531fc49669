"""Encoding and writing one finished image's outputs (runs in the writer thread)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Prediction
from ..fsutil import atomic_write_bytes, check_inside, remove_stale_temps
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
    swept: set[Path] = field(default_factory=set)  # folders cleared of a killed run's temporary files

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
        written: list[Path] = []
        try:
            t = time.perf_counter()
            if "label" in paths:
                self._write(written, paths["label"], index_png(labels, k))
            if "overlay" in paths:
                self._write(written, paths["overlay"], overlay_jpeg(image, labels, self.palette, opts.alpha))
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
