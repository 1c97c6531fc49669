"""Sliding-window inference as mmsegmentation 1.2.2 defines it, accumulated in bounded memory.

Grid (`EncoderDecoder.slide_inference`): ``h_grids = max(H - crop + stride - 1, 0) // stride + 1`` (same for
w); window (r, c) starts at (r·stride, c·stride), the last one is moved back to end at the border, and an
image smaller than the crop is one smaller window (no padding). Window logits are summed and divided by
the number of windows covering each pixel.

mmseg holds a full [K, H, W] sum; `SlideAccumulator` holds only what later windows still add to: the rows
of the current window row that the next window row also covers, and, for the rows that this window row
finishes, the columns that the next window still covers. Sums live in column segments (cut at window
edges) that are allocated when first touched and freed once passed, so the previous row's carry shrinks
as the current row's grows. Everything else is divided by its
count and handed on as soon as its last window is in — in raster order, as *blocks*. The additions happen
in mmseg's order (window rows top to bottom, windows left to right), so the sums are the same floats.

Blending (`--blend`): "flat" is mmseg's plain mean. "gaussian" and "hann" weigh each window's values by a
separable 2-D window function w(y)·w(x) of its own size (gaussian: σ = size/8, nnU-Net's; hann:
sin²(π(i + ½)/n)), floored at 1e-4 of the peak so that image borders, which only window edges cover, keep
a weight), and divide by the summed weights. On the product grid of windows the summed weight is itself
separable, Σ_r w_r(y) · Σ_c w_c(x), so it costs two vectors, like the counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOOR = 1e-4


@dataclass(frozen=True)
class Window:
    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y2 - self.y1, self.x2 - self.x1


@dataclass(frozen=True)
class Block:
    """Finished values for rows [y1, y2) × columns [x1, x2): data [K, y2 - y1, x2 - x1]."""

    y1: int
    y2: int
    x1: int
    x2: int
    data: torch.Tensor


def spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """The [start, end) of each window along one axis."""
    n = max(size - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(n):
        end = min(i * stride + crop, size)
        out.append((max(end - crop, 0), end))
    return out


def grid(h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[list[Window]]:
    """Windows by row, in mmseg's order."""
    cols = spans(w, crop[1], stride[1])
    return [[Window(y1, y2, x1, x2) for x1, x2 in cols] for y1, y2 in spans(h, crop[0], stride[0])]


def window_weights(n: int, blend: str) -> torch.Tensor:
    """[n] float32 weights along one side of a window of n pixels (all 1 for "flat")."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    if blend == "flat":
        return torch.ones(n)
    if blend == "gaussian":
        w = torch.exp(-0.5 * ((i - n / 2) / (n / 8)) ** 2)
    elif blend == "hann":
        w = torch.sin(math.pi * i / n) ** 2
    else:
        raise ValueError(f"unknown blend {blend!r}")
    return (w / w.max()).clamp_(min=FLOOR).float()


def _coverage(size: int, sp: list[tuple[int, int]], blend: str = "flat") -> torch.Tensor:
    count = torch.zeros(size)
    for a, b in sp:
        count[a:b] += window_weights(b - a, blend)
    return count


class _Band:
    """Sums for rows [y1, y2) × the full width, stored per column segment so that segments are
    allocated when first touched (seeded with earlier sums) and freed when no longer needed."""

    def __init__(self, y1: int, y2: int, bounds: list[int], k: int, device, seed: _Band | None) -> None:
        self.y1, self.y2, self.bounds, self.k, self.device, self.seed = y1, y2, bounds, k, device, seed
        self.segs: dict[int, torch.Tensor] = {}

    def numel(self) -> int:
        return sum(t.numel() for t in self.segs.values())

    def _seg(self, i: int) -> torch.Tensor:
        t = self.segs.get(i)
        if t is None:
            x1, x2 = self.bounds[i], self.bounds[i + 1]
            t = torch.zeros((self.k, self.y2 - self.y1, x2 - x1), device=self.device)
            if self.seed is not None:  # earlier window rows' sums first: mmseg's order of additions
                a, b = max(self.y1, self.seed.y1), min(self.y2, self.seed.y2)
                if a < b and i in self.seed.segs:
                    t[:, a - self.y1 : b - self.y1] = self.seed.segs[i][:, a - self.seed.y1 : b - self.seed.y1]
            self.segs[i] = t
        return t

    def add(self, data: torch.Tensor, x1: int, x2: int) -> None:
        """data [K, y2 - y1, x2 - x1]; [x1, x2) is a union of segments."""
        i = self.bounds.index(x1)
        while self.bounds[i] < x2:
            a, b = self.bounds[i], self.bounds[i + 1]
            self._seg(i).add_(data[:, :, a - x1 : b - x1])
            i += 1

    def take(self, x1: int, x2: int) -> torch.Tensor:
        """Remove and return the sums of columns [x1, x2) (a union of segments) as one tensor."""
        i, parts = self.bounds.index(x1), []
        while self.bounds[i] < x2:
            parts.append(self._seg(i))
            del self.segs[i]
            i += 1
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def drop_before(self, x: int) -> None:
        for i in [i for i in self.segs if self.bounds[i + 1] <= x]:
            del self.segs[i]


class SlideAccumulator:
    """Sums the window logits of one image (windows fed in grid order) and emits finished `Block`s."""

    def __init__(
        self, h: int, w: int, rows: list[list[Window]], num_classes: int, device=None, blend: str = "flat"
    ) -> None:
        self.h, self.w, self.rows, self.k, self.device, self.blend = h, w, rows, num_classes, device, blend
        row_spans = [(r[0].y1, r[0].y2) for r in rows]
        col_spans = [(win.x1, win.x2) for win in rows[0]]
        self.row_count = _coverage(h, row_spans, blend).to(device)  # [H] summed weights (counts when flat)
        self.col_count = _coverage(w, col_spans, blend).to(device)  # [W]
        if bool((self.row_count == 0).any()) or bool((self.col_count == 0).any()):
            raise ValueError("windows leave pixels uncovered (stride larger than crop)")
        self.bounds = sorted({0, w, *(x for span in col_spans for x in span)})  # column segments
        # finish[r]: rows above it are final once window row r is done
        self.finish = [rows[r + 1][0].y1 if r + 1 < len(rows) else h for r in range(len(rows))]
        self._carry: _Band | None = None  # rows later window rows still add to
        self._old: _Band | None = None  # the previous row's carry, freed segment by segment
        self._top: _Band | None = None  # rows the current window row finishes
        self._row, self._next_col, self._top_x = -1, 0, 0
        self.peak_elements = 0  # most values held at once

    def held_elements(self) -> int:
        return sum(b.numel() for b in (self._carry, self._top) if b is not None) + (
            self._old.numel() if self._old is not None else 0
        )

    def _begin_row(self, r: int) -> None:
        y1, y2, f = self.rows[r][0].y1, self.rows[r][0].y2, self.finish[r]
        old = self._carry
        below = max(y2, old.y2 if old is not None else 0)
        self._old = old
        self._top = _Band(y1, f, self.bounds, self.k, self.device, old)
        self._carry = _Band(f, below, self.bounds, self.k, self.device, old)
        self._row, self._next_col, self._top_x = r, 0, 0

    def add(self, r: int, c: int, logits: torch.Tensor) -> list[Block]:
        """Add window (r, c)'s logits [K, wh, ww]; return the blocks it finishes (possibly none)."""
        if (r, c) != ((self._row, self._next_col) if self._row == r else (self._row + 1, 0)):
            raise ValueError(f"windows must come in grid order; got ({r}, {c})")
        if len(self.rows) == 1 and len(self.rows[0]) == 1:  # one window (whole image): nothing to sum
            self._row = 0
            return [Block(0, self.h, 0, self.w, logits)]
        if c == 0:
            self._begin_row(r)
        win, f = self.rows[r][c], self.finish[r]
        if self.blend != "flat":  # logits [K, wh, ww] · w(y)[:, None] · w(x)[None, :]
            wy = window_weights(win.y2 - win.y1, self.blend).to(logits.device)
            wx = window_weights(win.x2 - win.x1, self.blend).to(logits.device)
            logits = logits * wy[None, :, None] * wx[None, None, :]
        split = f - win.y1
        assert self._top is not None and self._carry is not None  # set by the row's first window
        self._top.add(logits[:, :split], win.x1, win.x2)
        if win.y2 > f:
            self._carry.add(logits[:, split:], win.x1, win.x2)
        if self._old is not None:  # every segment left of x2 has been seeded from the old carry
            self._old.drop_before(win.x2)
        self._next_col = c + 1
        last_col = c + 1 == len(self.rows[r])
        done_x = self.w if last_col else self.rows[r][c + 1].x1
        self.peak_elements = max(self.peak_elements, self.held_elements())
        blocks = []
        if done_x > self._top_x:
            sums = self._top.take(self._top_x, done_x)
            count = self.row_count[win.y1 : f, None] * self.col_count[None, self._top_x : done_x]
            blocks.append(Block(win.y1, f, self._top_x, done_x, sums / count))
            self._top_x = done_x
        if last_col:
            self._old = None
        return blocks
