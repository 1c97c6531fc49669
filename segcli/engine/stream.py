"""One image run with its label rows handed on as they finish: outputs of any size in bounded memory.

`predict_rows` is `predict` for an image that may be a `LazyImage` (a raster read by rows): views, windows,
merging are the same (the same values); instead of full-size maps, each band of finished rows goes to
`emit(y1, maps)` top to bottom, and windows with no valid pixel under them are not run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import memory
from .grouped import Grouping
from .heads import Heads, label_dtype
from .lazy import LazyImage
from .merge import Merger, Prediction, certainty
from .model import SegModel
from .predict import _run, _schedule, _Tile, plan
from .presets import Params
from .slide import Block

Emit = Callable[[int, dict[str, np.ndarray]], None]  # (first row, {map name: [rows, W] labels})


class RowSink:
    """Label maps of finished blocks (a band of rows, left to right), emitted when the band is complete."""

    def __init__(self, width: int, heads: Heads, emit: Emit, probs: bool = False, confidence: bool = False) -> None:
        self.width, self.heads, self.emit, self.probs, self.confidence = width, heads, emit, probs, confidence
        self.band: tuple[int, dict[str, np.ndarray]] | None = None

    def write(self, b: Block, kind: str) -> None:
        labels = self.heads.labels(b.data)
        if self.probs:  # the primary head's probabilities, uint8-scaled [K, rows, cols]
            p = self.heads.primary_probs(b.data, kind)[: self.heads.classes]  # an ignore channel left out
            labels["probs"] = p.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        if self.confidence:  # float32 [rows, cols] each
            top, entropy = certainty(self.heads.primary_probs(b.data, kind).float())
            labels["confidence"], labels["entropy"] = top.cpu().numpy(), entropy.cpu().numpy()
        if self.band is None:
            maps = {k: np.empty((*v.shape[:-2], b.y2 - b.y1, self.width), dtype=v.dtype) for k, v in labels.items()}
            self.band = (b.y1, maps)
        y1, maps = self.band
        if y1 != b.y1 or maps["labels"].shape[0] != b.y2 - b.y1:
            raise RuntimeError("blocks of a band of rows came out of order")  # a bug, not a user error
        for name, values in labels.items():
            maps[name][..., b.x1 : b.x2] = values
        if b.x2 == self.width:
            self.band = None
            self.emit(y1, maps)


def _no_data(t: _Tile) -> bool:
    v = t.view
    if not isinstance(v.image, LazyImage):
        return False
    win, w = v.rows[t.row][t.col], v.size[1]
    x1, x2 = (w - win.x2, w - win.x1) if v.flip else (win.x1, win.x2)
    return not v.image.valid(win.y1, win.y2, x1, x2)


@torch.inference_mode()
def predict_rows(
    model: SegModel,
    image: np.ndarray | LazyImage,
    params: Params,
    emit: Emit,
    progress: Callable[[int, int], None] | None = None,
    probs: bool = False,
    confidence: bool = False,
    grouping: Grouping | None = None,
) -> Prediction:
    """Run the model on one image as `params` say; label rows go to `emit` (the Prediction holds no maps:
    its image-level values, windows and views). `progress(done, total)` counts windows; with `probs`, the
    maps also hold "probs": the primary head's probabilities, uint8-scaled [K, rows, W]; with `confidence`,
    "confidence" and "entropy" (float32 [rows, W], see `merge.certainty`)."""
    heads, size = model.heads, image.shape[:2]
    native = params.resize_once and params.mode == "whole"
    memory.check(model, params, [size])
    views = plan(image, params, heads.value_channels(params.window_softmax), model.device)
    sink = RowSink(size[1], heads if grouping is None else grouping.heads, emit, probs, confidence)
    values = "probs" if params.window_softmax else "logits"
    merger = Merger(
        len(views),
        size,
        heads,
        labels=False,
        probs=False,
        logits=False,
        device=model.device,
        values=values,
        sinks=(sink,),
        grouping=grouping,
    )
    tiles = _schedule([views], [size[0]])
    report = None if progress is None else (lambda done: progress(done, len(tiles)))
    skipped = 0

    def skip(t: _Tile) -> bool:
        nonlocal skipped
        no = _no_data(t)
        skipped += no
        return no

    _run(model, tiles, [merger], params, native, skip=skip, progress=report)
    result = merger.result()
    result.params, result.views, result.windows, result.skipped = params, len(views), len(tiles), skipped
    result.held_elements = sum(v.acc.peak_elements for v in views) + merger.peak_elements
    return result


__all__ = ["RowSink", "label_dtype", "predict_rows"]
