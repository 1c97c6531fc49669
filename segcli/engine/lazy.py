"""Images read by rows on demand: what the engine runs on when a raster is too large to decode.

A `LazyImage` stands where an RGB uint8 array [H, W, 3] would (`shape`, 2-D slicing), pulling full-width
bands of rows from a reader and keeping the last band (windows of one slide row share their rows, so
memory is one window row × the image width). `resized` gives the image as `resize_bilinear` would resize
it, computed per band of rows from the source rows those need — the same values, never the whole image.
Each image also answers `valid(y1, y2, x1, x2)`: whether any pixel of a window has data (a nodata mask).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .resample import resize_rows, source_rows

Rows = tuple[np.ndarray, np.ndarray | None]  # RGB uint8 [rows, W, 3], valid mask [rows, W] (None: all valid)
ReadRows = Callable[[int, int], Rows]


class LazyImage:
    def __init__(self, read: ReadRows, size: tuple[int, int], resampled: bool = False) -> None:
        self.read, (self.h, self.w) = read, size
        self.resampled = resampled  # a resized view: its values are read back by interpolation
        self._band: tuple[int, int, np.ndarray, np.ndarray | None] | None = None  # y1, y2, rgb, valid

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.h, self.w, 3

    def rows(self, y1: int, y2: int) -> Rows:
        """Full-width rows [y1, y2), from the kept band when it holds them."""
        b = self._band
        if b is None or not (b[0] <= y1 and y2 <= b[1]):
            rgb, valid = self.read(y1, y2)
            b = self._band = (y1, y2, rgb, valid)
        lo, hi = y1 - b[0], y2 - b[0]
        return b[2][lo:hi], None if b[3] is None else b[3][lo:hi]

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key
        return self.rows(ys.start, ys.stop)[0][:, xs]

    def valid(self, y1: int, y2: int, x1: int, x2: int) -> bool:
        """Whether any pixel of the window has data; for a resized view, any pixel within one of it (the
        resize back to the image reads across the window's edge)."""
        if self.resampled:
            y1, y2, x1, x2 = max(0, y1 - 1), min(self.h, y2 + 1), max(0, x1 - 1), min(self.w, x2 + 1)
        mask = self.rows(y1, y2)[1]
        return mask is None or bool(mask[:, x1:x2].any())

    def resized(self, size: tuple[int, int], exact: bool = False) -> LazyImage:
        """This image resized to (h, w) as `resize_bilinear` does (`exact`: float32, not rounded); the mask
        is resized the same way (a pixel is valid when any source pixel it reads is)."""
        if size == (self.h, self.w) and not exact:
            return self
        src = (self.h, self.w)

        def read(r0: int, r1: int) -> Rows:
            a, b = source_rows(self.h, size[0], r0, r1)
            rgb, valid = self.rows(a, b)
            out = resize_rows(torch.from_numpy(np.ascontiguousarray(rgb)), a, src, size, r0, r1, exact=exact)
            if valid is None:
                return out, None
            m = torch.from_numpy(valid.astype(np.uint8)[..., None] * 255)
            return out, resize_rows(m, a, src, size, r0, r1, exact=True)[..., 0] > 0

        return LazyImage(read, size, resampled=True)
