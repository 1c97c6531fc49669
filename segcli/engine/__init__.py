"""Inference engine: one path for whole-image, sliding-window, multi-scale and flip prediction.

An image becomes one *view* per (scale, flip). Each view is the image resized as the parameters say and
run whole or in windows; its finished blocks are flipped back, resized to the image's own size and — when
there are several views — turned into probabilities and averaged (mmseg `SegTTAModel.merge_preds`).
Windows of all views run in one schedule, batched (`tile_batch`) where their shapes agree, ordered so that
every view advances down the image together: what is held at full class depth is a band of rows, never
the whole image. Results go to *sinks* (labels, float16 probabilities, float32 logits) as rows finish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import Segmentor
from ..presets import Params
from .merge import Merger, ViewChain
from .resample import rescale_size, resize_bilinear, resize_pil, scale_size
from .slide import SlideAccumulator, Window, grid

__all__ = ["Prediction", "View", "plan", "predict", "predict_many"]


@dataclass
class View:
    index: int
    scale: float
    flip: bool
    image: np.ndarray  # the resized RGB uint8 image (shared by a scale's flipped and unflipped views)
    rows: list[list[Window]]
    acc: SlideAccumulator
    chain: ViewChain

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def crop(self, win: Window) -> np.ndarray:
        w = self.image.shape[1]
        if self.flip:  # the window of the mirrored image = the mirrored window of the image
            return self.image[win.y1 : win.y2, w - win.x2 : w - win.x1][:, ::-1]
        return self.image[win.y1 : win.y2, win.x1 : win.x2]


def view_size(h: int, w: int, params: Params, scale: float) -> tuple[int, int]:
    """(h, w) of the image for one scale, following mmcv's size rules."""
    r = params.resize
    if r.kind == "keep":  # mmseg 0.x MultiScaleFlipAug: ratio × (long, short), then keep-ratio rescale
        nw, nh = rescale_size(w, h, int(r.long * scale), int(r.short * scale))
    elif r.kind == "fixed":
        nw, nh = scale_size(r.width, r.height, scale)
    else:  # mmseg 1.x TestTimeAug Resize(scale_factor=ratio, keep_ratio=True)
        if scale == 1.0:
            return h, w
        sw, sh = scale_size(w, h, scale)
        nw, nh = rescale_size(w, h, max(sw, sh), min(sw, sh))
    return max(nh, 1), max(nw, 1)


def plan(image: np.ndarray, params: Params, num_classes: int, device=None) -> list[View]:
    h, w = image.shape[:2]
    views: list[View] = []
    for scale in params.scales:
        size = view_size(h, w, params, scale)
        resized = resize_pil(image, size) if params.resample == "pil" else resize_bilinear(image, size)
        vh, vw = size
        if params.mode == "slide":
            rows = grid(vh, vw, params.crop, params.stride)
        else:
            rows = [[Window(0, vh, 0, vw)]]
        for flip in (False, True) if params.flip else (False,):
            acc = SlideAccumulator(vh, vw, rows, num_classes, device)
            chain = ViewChain((vh, vw), (h, w), flip, params.align_corners)
            views.append(View(len(views), scale, flip, resized, rows, acc, chain))
    return views


Work = tuple["View", int, int, int]  # (view, window row, window column, image index)


def _schedule(views: list[View], height: int, image: int) -> list[tuple[float, int, int, int, View]]:
    """Each view's window rows keyed by how far down the image they get (views advance together)."""
    return [(v.acc.finish[r] * height / v.size[0], v.index, r, image, v) for v in views for r in range(len(v.rows))]


@dataclass
class Prediction:
    labels: np.ndarray | None = None  # [H, W] class indices
    probs: np.ndarray | None = None  # [K, H, W] float16 probabilities
    logits: torch.Tensor | None = None  # [K, H, W] float32 (multi-view: log of the averaged probabilities)
    params: Params | None = None
    windows: int = 0
    views: int = 0
    held_elements: int = 0  # most accumulator values (float32) held at once: windows' sums + view merging


@torch.inference_mode()
def predict_many(
    model: Segmentor, images: list[np.ndarray], params: Params, *, labels: bool = True, probs: bool = False,
    logits: bool = False,
) -> list[Prediction]:  # fmt: skip
    """Run the model on RGB uint8 images [H, W, 3] as `params` say; outputs at each image's own size.

    Windows of all images and views share forward passes (up to `tile_batch` × images per pass) wherever
    their shapes agree, so same-size images batch like a single image's windows do."""
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    k = model.config.num_classes
    rows, mergers, all_views = [], [], []
    for n, image in enumerate(images):
        h, w = image.shape[:2]
        views = plan(image, params, k, device)
        all_views.append(views)
        mergers.append(Merger(len(views), (h, w), k, labels=labels, probs=probs, logits=logits, device=device))
        rows += _schedule(views, h, n)
    rows.sort(key=lambda t: t[:4])
    work = [(v, r, c, n) for _, _, r, n, v in rows for c in range(len(v.rows[r]))]
    limit = params.tile_batch * len(images)
    i = 0
    while i < len(work):
        shape = work[i][0].rows[work[i][1]][work[i][2]].shape
        j = i + 1
        while j < len(work) and j - i < limit and work[j][0].rows[work[j][1]][work[j][2]].shape == shape:
            j += 1
        batch = work[i:j]
        crops = np.stack([v.crop(v.rows[r][c]) for v, r, c, _ in batch])  # [B, h, w, 3] uint8
        x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().contiguous()  # NCHW: faster on CPU
        out = model(model.normalize(x).to(dtype)).float()  # [B, K, h, w]
        for (v, r, c, n), logit in zip(batch, out):
            for block in v.acc.add(r, c, logit):
                for done in v.chain.push(block):
                    mergers[n].add(v.index, done)
        i = j
    results = []
    for views, merger in zip(all_views, mergers):
        result = merger.result()
        result.params, result.views = params, len(views)
        result.windows = sum(len(row) for v in views for row in v.rows)
        result.held_elements = sum(v.acc.peak_elements for v in views) + merger.peak_elements
        results.append(result)
    return results


def predict(
    model: Segmentor, image: np.ndarray, params: Params, *, labels: bool = True, probs: bool = False,
    logits: bool = False,
) -> Prediction:  # fmt: skip
    """`predict_many` for one image."""
    return predict_many(model, [image], params, labels=labels, probs=probs, logits=logits)[0]
