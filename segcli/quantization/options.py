"""What `segcli quantize` takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantizeOptions:
    calib_images: int = 32  # images whose views set the activation ranges
    check_images: int = 32  # images the int8 model is compared with float32 on
    min_agreement: float = 0.95  # least share of pixels labelled as float32 labels them
    max_miou_drop: float = 0.5  # most mIoU points lost against float32 (with ground truth)
    ignore_index: int = 255  # ground-truth value left out of the mIoU
    reduce_zero_label: bool = False  # ground truth 0 is "other" (ADE20K): left out, the rest shifted down
