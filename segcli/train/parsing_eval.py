"""Validation of a unified perceptual parser being trained: `Segmenter.parse` (the model's own protocol)
on the validation images, scored per task against the labels each image has.

object, material   mIoU over the classes present (ground truth 0, "-", not counted), as `segcli evaluate`
scene              top-1 accuracy over the images with a scene label
val_mIoU           the mean of the object and material mIoUs the run trains and has labels for: what picks
                   the best model (parts are trained, not scored here)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..api import Segmenter
from ..evaluation.metrics import confusion, scores
from ..io.images import load_image
from .parsing_data import Record, read_maps


def scored_tasks(records: list[Record], tasks: frozenset[str]) -> list[str]:
    """The tasks a validation can score: trained, and labelled in some validation image."""
    return [
        t for t in ("object", "material", "scene") if t in tasks and any(getattr(r, t) is not None for r in records)
    ]


def validate(seg: Segmenter, records: list[Record], tasks: frozenset[str]) -> dict[str, Any] | None:
    """{"val_mIoU", "val_object_mIoU", "val_material_mIoU", "val_scene_acc"} of what the run can score, or
    None when it can score no map (then the run keeps its last model)."""
    wanted = scored_tasks(records, tasks)
    if not {"object", "material"} & set(wanted):
        return None
    heads = seg.model.heads
    sizes = {"object": heads.primary, "material": dict(heads.extras)["material"]}
    cms = {t: np.zeros((sizes[t], sizes[t]), dtype=np.int64) for t in sizes if t in wanted}
    right = seen = 0
    with torch.inference_mode():
        for r in records:
            parsed = seg.parse(load_image(r.image))
            gt = read_maps(r, heads)
            for t, cm in cms.items():
                if t in gt:
                    cm += confusion(gt[t], getattr(parsed, t).astype(np.int64), sizes[t], ignore_index=0,
                                    where=str(getattr(r, t)))  # fmt: skip
            if "scene" in wanted and r.scene is not None:
                seen += 1
                right += int(seg.scenes.index(parsed.scene[0][0]) == r.scene)
    out: dict[str, Any] = {f"val_{t}_mIoU": float(scores(cm)["mIoU"]) for t, cm in cms.items()}
    if seen:
        out["val_scene_acc"] = right / seen
    out["val_mIoU"] = float(np.mean([out[f"val_{t}_mIoU"] for t in cms]))
    return out
