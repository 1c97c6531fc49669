"""The int8 model against float32 on the check images: the share of pixels labelled alike, seconds per
image, and with ground truth each model's mIoU; and the gates that decide whether it is written."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import share_text
from ..engine.presets import Params
from ..errors import SegcliError, UsageError
from ..io.images import load_image, read_labels
from .options import QuantizeOptions


@dataclass
class Comparison:
    """The int8 model against float32 on the check images."""

    images: int
    held_out: bool  # check images not used for calibration
    agreement: float  # share of pixels with the same label
    seconds: dict[str, float]  # per image: "float32" (eager PyTorch) and "int8" (onnxruntime)
    miou: dict[str, float] | None = None  # "float32", "int8", "drop" (points), with ground truth
    skipped: list[str] = field(default_factory=list)  # one line per image that could not be used

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "held_out": self.held_out,
            "label_agreement": self.agreement,
            "seconds_per_image": self.seconds,
            "speedup": self.seconds["float32"] / self.seconds["int8"] if self.seconds["int8"] > 0 else None,
            "miou": self.miou,
        }


def _miou(cm: np.ndarray) -> float:
    from ..evaluation.metrics import scores

    return float(scores(cm)["mIoU"]) * 100


def compare(
    seg: Any,
    seg8: Any,
    params: Params,
    images: list[Path],
    held_out: bool,
    gt: dict[Path, Path],
    opts: QuantizeOptions,
    progress: Callable[[], None] = lambda: None,
) -> Comparison:
    """`seg8` (the int8 export) against `seg` (float32) on `images`; `gt`: the ground truth of images."""
    from ..evaluation.metrics import confusion

    same = total = 0
    seconds = {"float32": 0.0, "int8": 0.0}
    k = seg.num_classes
    cms = {"float32": np.zeros((k, k), np.int64), "int8": np.zeros((k, k), np.int64)}
    skipped: list[str] = []
    used = scored = 0
    for path in images:
        try:
            rgb = load_image(path)
            truth = read_labels(gt[path]) if path in gt else None
        except SegcliError as e:
            skipped.append(f"{path}: {e.message}")
            continue
        labels = {}
        for what, s in (("float32", seg), ("int8", seg8)):
            t = time.perf_counter()
            labels[what] = s.predict(rgb, params)
            seconds[what] += time.perf_counter() - t
        same += int((labels["float32"] == labels["int8"]).sum())
        total += labels["float32"].size
        used += 1
        if truth is not None:
            if truth.shape != labels["float32"].shape:
                skipped.append(f"{gt[path]}: ground truth {truth.shape} but the image is {rgb.shape[:2]}")
            else:
                for what in cms:
                    cms[what] += confusion(
                        truth, labels[what], k, ignore_index=opts.ignore_index, reduce_zero_label=opts.reduce_zero_label
                    )
                scored += 1
        progress()
    if not used:
        raise UsageError("none of the check images could be read", hint="see the lines above")
    miou = None
    if scored:
        m32, m8 = _miou(cms["float32"]), _miou(cms["int8"])
        miou = {"float32": m32, "int8": m8, "drop": m32 - m8, "images": scored}
    per = {w: s / used for w, s in seconds.items()}
    return Comparison(used, held_out, same / max(total, 1), per, miou, skipped)


def verdict(c: Comparison, opts: QuantizeOptions) -> str | None:
    """Why the int8 model may not be written (None: it may)."""
    if c.agreement < opts.min_agreement:
        return (
            f"the int8 model labels {share_text(c.agreement, 2)} of pixels as float32 does "
            f"(--min-agreement {share_text(opts.min_agreement, 2)})"
        )
    if c.miou is not None and c.miou["drop"] > opts.max_miou_drop:
        return (
            f"the int8 model loses {c.miou['drop']:.2f} mIoU points ({c.miou['float32']:.2f} → "
            f"{c.miou['int8']:.2f}; --max-miou-drop {opts.max_miou_drop:g})"
        )
    return None


def ground_truth(images: list[Path], root: Path, gt: Path | None, suffix: str = "") -> dict[Path, Path]:
    """Each image's ground-truth PNG in `gt` (same relative folder and stem, `suffix` after the stem)."""
    if gt is None:
        return {}
    from ..evaluation.evaluate import label_files, pair_key

    if not gt.is_dir():
        raise UsageError(f"--gt {gt}: not a directory")
    truth = {pair_key(p, gt, suffix): p for p in label_files(gt)}
    found = {im: truth[k] for im in images if (k := pair_key(im, root, "")) in truth}
    if not found:
        raise UsageError(f"no image in {root} has ground truth in {gt}", hint="same relative folder and stem")
    return found
