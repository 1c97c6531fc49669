"""From per-view blocks to the outputs: flip back, resize to the image size, average views, write sinks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .grouped import Grouping
from .heads import Heads, label_dtype
from .presets import Params
from .resample import RowResampler
from .slide import Block

__all__ = ["Merger", "Prediction", "ViewChain", "label_dtype"]


@dataclass
class Prediction:
    """What the engine computed for one image, at the image's own size."""

    labels: np.ndarray | None = None  # [H, W] class indices (the primary head)
    probs: np.ndarray | None = None  # [K, H, W] float16 probabilities (the primary head)
    logits: torch.Tensor | None = None  # [K, H, W] float32 (multi-view: log of the averaged probabilities)
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # the other heads' label maps (e.g. part, material)
    image_probs: np.ndarray | None = None  # [S] float32 image-level probabilities (e.g. the scene)
    confidence: np.ndarray | None = None  # [H, W] float16: the primary head's largest probability
    entropy: np.ndarray | None = None  # [H, W] float16: its entropy / log K (0 certain … 1 uniform)
    params: Params | None = None  # what it ran with
    windows: int = 0
    skipped: int = 0  # windows not run: no valid pixel under them (rasters with nodata)
    views: int = 0
    held_elements: int = 0  # most accumulator values (float32) held at once: windows' sums + view merging


class ViewChain:
    """Blocks of one view (its own pixel grid, mirrored for a flipped view) → blocks on the image's grid.

    A view at the image's size and unflipped passes blocks straight through (bounded memory for huge
    images); otherwise each band of rows is assembled at full width, mirrored back and resized.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int], flip: bool, align_corners: bool) -> None:
        self.src, self.dst, self.flip, self.align_corners = src, dst, flip, align_corners
        self.passthrough = src == dst and not flip
        self.resampler = RowResampler(src, dst, align_corners)
        self._band: list[Block] = []

    def native(self, src: tuple[int, int]) -> None:
        """The view's values come at the model's own resolution (`src`): resized once, straight to the image,
        in strips (never the whole map at once: several such views are merged strip by strip)."""
        self.src, self.passthrough = src, src == self.dst and not self.flip
        self.resampler = RowResampler(src, self.dst, self.align_corners, whole_bytes=0)

    def push(self, block: Block) -> Iterator[Block]:
        if self.passthrough:
            yield block
            return
        self._band.append(block)
        if block.x2 < self.src[1]:
            return
        strip = torch.cat([b.data for b in self._band], dim=2) if len(self._band) > 1 else block.data
        self._band = []
        if self.flip:
            strip = strip.flip(-1)
        for y, data in self.resampler.push(block.y1, strip):
            yield Block(y, y + data.shape[1], 0, self.dst[1], data)


class LabelSink:
    """The label maps of every head (see `Heads.labels`)."""

    def __init__(self, size: tuple[int, int], heads: Heads) -> None:
        self.heads = heads
        names = {
            "labels": heads.primary,
            **dict(heads.extras),
            **({"part": heads.part_classes} if heads.part_groups else {}),
        }
        self.maps = {name: np.empty(size, dtype=label_dtype(n)) for name, n in names.items()}

    def write(self, b: Block, kind: str) -> None:
        for name, values in self.heads.labels(b.data).items():
            self.maps[name][b.y1 : b.y2, b.x1 : b.x2] = values


class ProbSink:
    """Float16 probabilities of the primary head."""

    def __init__(self, size: tuple[int, int], heads: Heads) -> None:
        self.heads = heads
        self.out = np.empty((heads.classes, *size), dtype=np.float16)

    def write(self, b: Block, kind: str) -> None:
        # the primary head is a softmax group of its own (an ignore channel left out)
        p = self.heads.primary_probs(b.data, kind)[: self.heads.classes]
        self.out[:, b.y1 : b.y2, b.x1 : b.x2] = p.half().cpu().numpy()


def certainty(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max probability, entropy / log K) [h, w] of probabilities [K, h, w]."""
    k = p.shape[0]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(0) / max(np.log(k), 1e-12)
    return p.max(0).values, entropy.clamp_(0.0, 1.0)


class ConfidenceSink:
    """The primary head's confidence and normalised entropy (float16 [H, W] each)."""

    def __init__(self, size: tuple[int, int], heads: Heads) -> None:
        self.heads = heads
        self.confidence = np.empty(size, dtype=np.float16)
        self.entropy = np.empty(size, dtype=np.float16)

    def write(self, b: Block, kind: str) -> None:
        top, ent = certainty(self.heads.primary_probs(b.data, kind).float())
        self.confidence[b.y1 : b.y2, b.x1 : b.x2] = top.half().cpu().numpy()
        self.entropy[b.y1 : b.y2, b.x1 : b.x2] = ent.half().cpu().numpy()


class LogitSink:
    """Float32 logits of the primary head (after several views: log of the averaged probabilities)."""

    def __init__(self, size: tuple[int, int], heads: Heads) -> None:
        self.heads = heads
        self.out = torch.empty((1 if heads.binary_threshold is not None else heads.primary, *size), dtype=torch.float32)

    def write(self, b: Block, kind: str) -> None:
        # from probabilities: log-probabilities (argmax and softmax preserved)
        self.out[:, b.y1 : b.y2, b.x1 : b.x2] = self.heads.primary_logits(b.data, kind).cpu()


class Merger:
    """Averages the probabilities of several views row band by row band (the softmax of their logits, or
    the values themselves when they are probabilities); one view passes its values through.

    Image-level values (one vector per window) are averaged over each view's windows, then over views.
    Views whose values are whole maps at the model's resolution (`lazy`) are merged at the end, strip by
    strip, so that only their small maps are held rather than a full-size sum."""

    def __init__(
        self,
        views: int,
        size: tuple[int, int],
        heads: Heads,
        *,
        labels: bool,
        probs: bool,
        logits: bool,
        device=None,
        values: str = "logits",
        sinks: tuple = (),
        confidence: bool = False,
        grouping: Grouping | None = None,
    ) -> None:
        self.n, self.size, self.heads, self.device, self.values = views, size, heads, device, values
        self.k = heads.prob_channels  # what views are averaged as
        self.grouping = grouping  # --class-map: the sinks read the groups' values (their heads)
        out = heads if grouping is None else grouping.heads
        self.labels = LabelSink(size, out) if labels else None
        self.probs = ProbSink(size, out) if probs else None
        self.logits = LogitSink(size, out) if logits else None
        self.confidence = ConfidenceSink(size, out) if confidence else None
        self.sinks = [s for s in (self.labels, self.probs, self.logits, self.confidence, *sinks) if s is not None]
        self.done = [0] * views  # rows each view has finished
        self.lo = 0  # first row not yet written
        self.buf = torch.zeros((self.k, 0, size[1]), device=device)  # probability sums for rows [lo, ...)
        self.peak_elements = 0
        self.lazy: dict[int, Iterator[Block]] = {}
        self._lazy_held = 0
        self.image_sums: dict[int, tuple[torch.Tensor, int]] = {}  # view → (sum of probabilities, windows)

    def _probs(self, data: torch.Tensor) -> torch.Tensor:
        return data if self.values == "probs" else self.heads.softmax(data)

    def add_image_level(self, view: int, probs: torch.Tensor) -> None:
        """One window's image-level probabilities [S]."""
        total, count = self.image_sums.get(view, (torch.zeros_like(probs), 0))
        self.image_sums[view] = (total + probs, count + 1)

    def add_lazy(self, view: int, blocks: Iterator[Block], held: int = 0) -> None:
        """A view whose blocks (full-width strips, top to bottom) are computed when pulled; `held`: the
        number of values its iterator keeps until then."""
        if self.n == 1:
            for b in blocks:
                self.add(view, b)
            return
        self.lazy[view] = blocks
        self._lazy_held += held
        self.peak_elements = max(self.peak_elements, self._lazy_held)
        if len(self.lazy) == self.n:
            self._merge_lazy(list(self.lazy.values()))
            self.lazy, self._lazy_held = {}, 0

    def _merge_lazy(self, views: list[Iterator[Block]]) -> None:
        """Average the views' full-width strips (each view cuts its own) over the rows all have reached."""
        empty = torch.zeros((self.k, 0, self.size[1]), device=self.device)
        pending = [empty] * len(views)  # probabilities of rows [lo, ...) per view
        while self.lo < self.size[0]:
            for i, blocks in enumerate(views):
                while pending[i].shape[1] == 0:
                    pending[i] = torch.cat([pending[i], self._probs(next(blocks).data)], 1)
            rows = min(p.shape[1] for p in pending)
            mean = _total([p[:, :rows] for p in pending]) / self.n
            self._write(Block(self.lo, self.lo + rows, 0, self.size[1], mean), "probs")
            pending = [p[:, rows:] for p in pending]
            self.lo += rows

    def add(self, view: int, b: Block) -> None:
        if self.n == 1:
            self._write(b, self.values)
            return
        need = b.y2 - self.lo - self.buf.shape[1]
        if need > 0:
            self.buf = torch.cat([self.buf, torch.zeros((self.k, need, self.size[1]), device=self.device)], 1)
        self.buf[:, b.y1 - self.lo : b.y2 - self.lo, b.x1 : b.x2] += self._probs(b.data)
        self.peak_elements = max(self.peak_elements, self.buf.numel())
        if b.x2 == self.size[1]:
            self.done[view] = max(self.done[view], b.y2)
        ready = min(self.done)
        if ready > self.lo:
            rows = ready - self.lo
            self._write(Block(self.lo, ready, 0, self.size[1], self.buf[:, :rows] / self.n), "probs")
            self.buf = self.buf[:, rows:]
            self.lo = ready

    def _write(self, b: Block, kind: str) -> None:
        """A finished block [C, h, w] of `kind` values to every sink (grouped by the class map, if any)."""
        if self.grouping is not None:
            b = Block(b.y1, b.y2, b.x1, b.x2, self.grouping.apply(b.data, kind))
        for s in self.sinks:
            s.write(b, kind)

    def result(self) -> Prediction:
        if self.n > 1 and self.lo != self.size[0]:
            raise RuntimeError("views did not cover the image")  # a bug, not a user error
        image = None
        if self.image_sums:
            means = [t / c for t, c in self.image_sums.values()]
            image = (_total(means) / len(means)).float().cpu().numpy()
        maps = dict(self.labels.maps) if self.labels else {}
        return Prediction(
            labels=maps.pop("labels", None),
            probs=self.probs.out if self.probs else None,
            logits=self.logits.out if self.logits else None,
            maps=maps,
            image_probs=image,
            confidence=self.confidence.confidence if self.confidence else None,
            entropy=self.confidence.entropy if self.confidence else None,
        )


def _total(parts: list[torch.Tensor]) -> torch.Tensor:
    """parts[0] + parts[1] + ..., in that order (as `sum` adds them)."""
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out
