"""Views, their windows, and the one schedule that runs them all (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import memory
from .forward import forward
from .grouped import Grouping
from .lazy import LazyImage
from .merge import Merger, Prediction, ViewChain
from .model import SegModel
from .presets import Params, Resize
from .resample import rescale_size, resize_bilinear, resize_pil, scale_size
from .slide import Block, SlideAccumulator, Window, grid


@dataclass
class View:
    index: int
    scale: float
    flip: bool
    image: (
        np.ndarray | LazyImage
    )  # the resized RGB image, uint8 (float32 with resample "float"); shared by a scale's views
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


def _round_up(x: int, m: int) -> int:
    return max(((x - 1) // m + 1) * m, m)


def _authors_size(h: int, w: int, r: Resize, scale: float) -> tuple[int, int]:
    """The CSAIL (`multiple`) and semseg (`long`) sizes, as their test scripts compute them."""
    if r.kind == "multiple":  # mit_semseg dataset.py: truncate, then round up to the multiple
        factor = min(r.short * scale / min(h, w), r.long / max(h, w))
        return _round_up(int(h * factor), r.multiple), _round_up(int(w * factor), r.multiple)
    long_size = round(scale * r.long)  # semseg tool/test.py (Python's round)
    if h > w:
        return long_size, round(long_size / h * w)
    return round(long_size / w * h), long_size


def view_size(h: int, w: int, params: Params, scale: float) -> tuple[int, int]:
    """(h, w) of the image for one scale, following mmcv's size rules (or the authors')."""
    r = params.resize
    if r.kind in ("multiple", "long"):
        nh, nw = _authors_size(h, w, r, scale)
    elif r.kind == "keep":  # mmseg 0.x MultiScaleFlipAug: ratio × (long, short), then keep-ratio rescale
        nw, nh = rescale_size(w, h, int(r.long * scale), int(r.short * scale))
    elif r.kind == "fixed":
        nw, nh = scale_size(r.width, r.height, scale)
    else:  # mmseg 1.x TestTimeAug Resize(scale_factor=ratio, keep_ratio=True)
        if scale == 1.0:
            return h, w
        sw, sh = scale_size(w, h, scale)
        nw, nh = rescale_size(w, h, max(sw, sh), min(sw, sh))
    return max(nh, 1), max(nw, 1)


def plan(
    image: np.ndarray | LazyImage, params: Params, num_classes: int, device: torch.device | None = None
) -> list[View]:
    """One view per (scale, flip) of an RGB uint8 image [H, W, 3], with its windows and accumulator."""
    h, w = image.shape[:2]
    views: list[View] = []
    for scale in params.scales:
        size = view_size(h, w, params, scale)
        resized: np.ndarray | LazyImage
        if isinstance(image, LazyImage):  # rows resized as they are read (bilinear: see LazyImage.resized)
            resized = image.resized(size, exact=params.resample == "float")
        elif params.resample == "pil":
            resized = resize_pil(image, size)
        else:
            resized = resize_bilinear(image, size, exact=params.resample == "float")
        vh, vw = size
        if params.mode == "slide":
            assert params.crop is not None and params.stride is not None  # resolved with the preset
            rows = grid(vh, vw, params.crop, params.stride)
        else:
            rows = [[Window(0, vh, 0, vw)]]
        for flip in (False, True) if params.flip else (False,):
            acc = SlideAccumulator(vh, vw, rows, num_classes, device, params.blend)
            chain = ViewChain((vh, vw), (h, w), flip, params.align_corners)
            views.append(View(len(views), scale, flip, resized, rows, acc, chain))
    return views


@dataclass(frozen=True)
class _Tile:
    """One window of one view of one image, in schedule order."""

    view: View
    row: int
    col: int
    image: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.view.rows[self.row][self.col].shape

    def pixels(self) -> np.ndarray:
        return self.view.crop(self.view.rows[self.row][self.col])


def _schedule(all_views: list[list[View]], heights: list[int]) -> list[_Tile]:
    """Every window, window rows ordered by how far down their image they get (views advance together)."""
    rows = [
        (v.acc.finish[r] * heights[n] / v.size[0], v.index, r, n, v)
        for n, views in enumerate(all_views)
        for v in views
        for r in range(len(v.rows))
    ]
    rows.sort(key=lambda t: t[:4])
    return [_Tile(v, r, c, n) for _, _, r, n, v in rows for c in range(len(v.rows[r]))]


def _batches(tiles: list[_Tile], limit: int) -> list[list[_Tile]]:
    """Consecutive runs of up to `limit` tiles of one shape (what one forward pass takes)."""
    out: list[list[_Tile]] = []
    for t in tiles:
        if out and len(out[-1]) < limit and out[-1][0].shape == t.shape:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def _run(
    model: SegModel,
    tiles: list[_Tile],
    mergers: list[Merger],
    params: Params,
    native: bool,
    skip: Callable[[_Tile], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Every tile through the model (up to `tile_batch` × images per pass), its values into its image's
    merger; `skip`: tiles given zeros instead (no data under them); `progress`: tiles (windows of all
    views) done so far, after each pass."""
    done = 0
    for batch in _batches(tiles, params.tile_batch * len(mergers)):
        skipped = [skip is not None and skip(t) for t in batch]
        run = (
            np.stack([t.pixels() for t, no in zip(batch, skipped, strict=True) if not no]) if not all(skipped) else None
        )
        out, image = forward(model, run, params, upsample=not native) if run is not None else (None, None)
        k = 0
        for t, no in zip(batch, skipped, strict=True):
            merger = mergers[t.image]
            if no:  # no data under this window: zeros (its pixels are all nodata, their values are not read)
                k = model.heads.value_channels(params.window_softmax)
                values = torch.zeros((k, *t.shape), device=model.device)
            else:
                assert out is not None  # some tile of the batch ran
                values, k = out[k], k + 1
                if image is not None:
                    merger.add_image_level(t.view.index, image[k - 1])
            if native:  # the whole view's values at the model's resolution, resized once when merged
                t.view.chain.native((values.shape[1], values.shape[2]))
                whole = Block(0, values.shape[1], 0, values.shape[2], values)
                merger.add_lazy(t.view.index, t.view.chain.push(whole), values.numel())
                continue
            for block in t.view.acc.add(t.row, t.col, values):
                for finished in t.view.chain.push(block):
                    merger.add(t.view.index, finished)
        done += len(batch)
        if progress is not None:
            progress(done)


@torch.inference_mode()
def predict_many(
    model: SegModel,
    images: list[np.ndarray],
    params: Params,
    *,
    labels: bool = True,
    probs: bool = False,
    logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
    confidence: bool = False,
    grouping: Grouping | None = None,
) -> list[Prediction]:
    """Run the model on RGB uint8 images [H, W, 3] as `params` say; outputs at each image's own size.

    Windows of all images and views share forward passes (up to `tile_batch` × images per pass) wherever
    their shapes agree, so same-size images batch like a single image's windows do. `progress(done,
    total)`: windows of all views done, after each pass, when there is more than one. `grouping`: the
    outputs are a class map's merged classes."""
    device, heads = model.device, model.heads
    native = params.resize_once and params.mode == "whole"
    memory.check(model, params, [image.shape[:2] for image in images], probs=probs, logits=logits)
    all_views = [plan(image, params, heads.value_channels(params.window_softmax), device) for image in images]
    mergers = [
        Merger(
            len(views),
            image.shape[:2],
            heads,
            labels=labels,
            probs=probs,
            logits=logits,
            device=device,
            values="probs" if params.window_softmax else "logits",
            confidence=confidence,
            grouping=grouping,
        )
        for image, views in zip(images, all_views, strict=True)
    ]
    tiles = _schedule(all_views, [image.shape[0] for image in images])
    told = (lambda done: progress(done, len(tiles))) if progress is not None and len(tiles) > 1 else None
    _run(model, tiles, mergers, params, native, progress=told)
    results = []
    for views, merger in zip(all_views, mergers, strict=True):
        result = merger.result()
        result.params, result.views = params, len(views)
        result.windows = sum(len(row) for v in views for row in v.rows)
        result.held_elements = sum(v.acc.peak_elements for v in views) + merger.peak_elements
        results.append(result)
    return results


def predict(
    model: SegModel,
    image: np.ndarray,
    params: Params,
    *,
    labels: bool = True,
    probs: bool = False,
    logits: bool = False,
) -> Prediction:
    """`predict_many` for one image."""
    return predict_many(model, [image], params, labels=labels, probs=probs, logits=logits)[0]
