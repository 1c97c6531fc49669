"""From per-view blocks to the outputs: flip back, resize to the image size, average views, write sinks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..presets import Params
from .resample import RowResampler
from .slide import Block


@dataclass
class Prediction:
    """What the engine computed for one image, at the image's own size."""

    labels: np.ndarray | None = None  # [H, W] class indices
    probs: np.ndarray | None = None  # [K, H, W] float16 probabilities
    logits: torch.Tensor | None = None  # [K, H, W] float32 (multi-view: log of the averaged probabilities)
    params: Params | None = None  # what it ran with
    windows: int = 0
    views: int = 0
    held_elements: int = 0  # most accumulator values (float32) held at once: windows' sums + view merging


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)


class ViewChain:
    """Blocks of one view (its own pixel grid, mirrored for a flipped view) → blocks on the image's grid.

    A view at the image's size and unflipped passes blocks straight through (bounded memory for huge
    images); otherwise each band of rows is assembled at full width, mirrored back and resized.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int], flip: bool, align_corners: bool) -> None:
        self.src, self.dst, self.flip = src, dst, flip
        self.passthrough = src == dst and not flip
        self.resampler = RowResampler(src, dst, align_corners)
        self._band: list[Block] = []

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


class Sink:
    """Receives finished values for a region: `logits` (one view) or averaged `probs` (several)."""

    def write(self, b: Block, kind: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class LabelSink(Sink):
    def __init__(self, size: tuple[int, int], k: int) -> None:
        self.out = np.empty(size, dtype=label_dtype(k))

    def write(self, b: Block, kind: str) -> None:
        self.out[b.y1 : b.y2, b.x1 : b.x2] = b.data.argmax(0).cpu().numpy()


class ProbSink(Sink):
    def __init__(self, size: tuple[int, int], k: int) -> None:
        self.out = np.empty((k, *size), dtype=np.float16)

    def write(self, b: Block, kind: str) -> None:
        p = b.data.softmax(0) if kind == "logits" else b.data
        self.out[:, b.y1 : b.y2, b.x1 : b.x2] = p.half().cpu().numpy()


class LogitSink(Sink):
    def __init__(self, size: tuple[int, int], k: int) -> None:
        self.out = torch.empty((k, *size), dtype=torch.float32)

    def write(self, b: Block, kind: str) -> None:
        v = b.data if kind == "logits" else b.data.log()  # log-probabilities: argmax and softmax preserved
        self.out[:, b.y1 : b.y2, b.x1 : b.x2] = v.cpu()


class Merger:
    """Averages the probabilities of several views row band by row band (the softmax of their logits, or
    the values themselves when they are probabilities); one view passes its values through."""

    def __init__(
        self,
        views: int,
        size: tuple[int, int],
        k: int,
        *,
        labels: bool,
        probs: bool,
        logits: bool,
        device=None,
        values: str = "logits",
    ) -> None:
        self.n, self.size, self.k, self.device, self.values = views, size, k, device, values
        self.labels = LabelSink(size, k) if labels else None
        self.probs = ProbSink(size, k) if probs else None
        self.logits = LogitSink(size, k) if logits else None
        self.sinks = [s for s in (self.labels, self.probs, self.logits) if s is not None]
        self.done = [0] * views  # rows each view has finished
        self.lo = 0  # first row not yet written
        self.buf = torch.zeros((k, 0, size[1]), device=device)  # probability sums for rows [lo, ...)
        self.peak_elements = 0

    def add(self, view: int, b: Block) -> None:
        if self.n == 1:
            for s in self.sinks:
                s.write(b, self.values)
            return
        need = b.y2 - self.lo - self.buf.shape[1]
        if need > 0:
            self.buf = torch.cat([self.buf, torch.zeros((self.k, need, self.size[1]), device=self.device)], 1)
        self.buf[:, b.y1 - self.lo : b.y2 - self.lo, b.x1 : b.x2] += (
            b.data if self.values == "probs" else b.data.softmax(0)
        )
        self.peak_elements = max(self.peak_elements, self.buf.numel())
        if b.x2 == self.size[1]:
            self.done[view] = max(self.done[view], b.y2)
        ready = min(self.done)
        if ready > self.lo:
            rows = ready - self.lo
            mean = Block(self.lo, ready, 0, self.size[1], self.buf[:, :rows] / self.n)
            for s in self.sinks:
                s.write(mean, "probs")
            self.buf = self.buf[:, rows:]
            self.lo = ready

    def result(self) -> Prediction:
        if self.n > 1 and self.lo != self.size[0]:
            raise RuntimeError("views did not cover the image")  # a bug, not a user error
        return Prediction(
            labels=self.labels.out if self.labels else None,
            probs=self.probs.out if self.probs else None,
            logits=self.logits.out if self.logits else None,
        )
