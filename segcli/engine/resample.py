"""Resizing: image sizes as mmcv computes them, uint8 image resampling, and streamed logit resampling.

* `rescale_size` / `scale_size` reproduce `mmcv.imrescale`'s target size (keep-ratio, int(x + 0.5)).
* `resize_pil` is what transformers' image processors do (Pillow bilinear, antialiased when shrinking).
* `resize_bilinear` is what mmcv's cv2 backend does (bilinear on half-pixel centres, no antialiasing),
  computed in float32 and rounded: it can differ from OpenCV's 11-bit fixed-point result by one level.
  It works in row chunks, so a huge image never gets a full-size float copy.
* `RowResampler` resizes logits [K, h, w] → [K, H, W] from strips of source rows arriving top to bottom,
  equal to `F.interpolate(mode="bilinear")` up to float32 rounding, holding one strip at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

STRIP_BYTES = 64 << 20  # float32 budget of one resized strip
WHOLE_BYTES = 512 << 20  # up to this output size a map that arrives whole is resized in one call
Strip = tuple[int, torch.Tensor]  # (first row, [K, rows, W])


def scale_size(w: int, h: int, factor: float) -> tuple[int, int]:
    """mmcv `_scale_size`: (int(w·f + 0.5), int(h·f + 0.5))."""
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def rescale_size(w: int, h: int, long_edge: float, short_edge: float) -> tuple[int, int]:
    """mmcv `rescale_size(keep_ratio)`: largest (w, h) with long ≤ long_edge and short ≤ short_edge."""
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return scale_size(w, h, factor)


def linear_indices(out_size: int, in_size: int, align_corners: bool = False, device=None):
    """Source indices i0, i1 and weights w0, w1 of 1-D linear resampling (PyTorch's conventions)."""
    dst = torch.arange(out_size, dtype=torch.float32)
    if align_corners:
        ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * torch.tensor(ratio, dtype=torch.float32)
    else:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        src = ((dst + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.long().clamp_(max=in_size - 1)
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    w1 = (src - i0).clamp_(0, 1)
    return i0.to(device), i1.to(device), (1 - w1).to(device), w1.to(device)


def resize_pil(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 [H, W, 3] → (h, w) with Pillow's bilinear filter, as transformers' processors do."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), resample=Image.Resampling.BILINEAR))


def resize_bilinear(
    image: np.ndarray, size: tuple[int, int], chunk_rows: int = 256, *, exact: bool = False
) -> np.ndarray:
    """RGB uint8 [H, W, 3] → (h, w) by plain bilinear interpolation (cv2 INTER_LINEAR geometry): uint8, or
    with `exact` float32 without rounding (what cv2 gives for a float image, as the semseg test resizes)."""
    h, w = size
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (h, w):
        return image
    src = torch.from_numpy(np.require(image, requirements=["C", "W"]))  # decoded arrays may be read-only
    out = np.empty((h, w, image.shape[2]), dtype=np.float32 if exact else np.uint8)
    for r0 in range(0, h, chunk_rows):
        r1 = min(h, r0 + chunk_rows)
        out[r0:r1] = resize_rows(src, 0, (src_h, src_w), size, r0, r1, exact=exact)
    return out


def source_rows(src_h: int, h: int, r0: int, r1: int) -> tuple[int, int]:
    """The source rows [a, b) that output rows [r0, r1) of a bilinear resize src_h → h read."""
    y0, y1, _, _ = linear_indices(h, src_h)
    return int(y0[r0]), int(y1[r1 - 1]) + 1


def resize_rows(
    band: torch.Tensor, start: int, src: tuple[int, int], size: tuple[int, int], r0: int, r1: int, *, exact: bool
) -> np.ndarray:
    """Rows [r0, r1) of `resize_bilinear(image, size)` from a band of the source, rows [start, ...)
    ([rows, W, C], holding at least `source_rows(...)`): the same values as resizing the whole image."""
    y0, y1, wy0, wy1 = linear_indices(size[0], src[0])
    r = slice(r0, r1)
    top = band.index_select(0, y0[r] - start).float()  # [rows, src_w, C]
    bottom = band.index_select(0, y1[r] - start).float()
    rows = (top * wy0[r, None, None] + bottom * wy1[r, None, None]).permute(2, 0, 1)[None]  # [1, C, rows, w]
    cols = F.interpolate(rows, size=(rows.shape[2], size[1]), mode="bilinear", align_corners=False)[0]
    if exact:
        return cols.permute(1, 2, 0).numpy()
    return cols.permute(1, 2, 0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8).numpy()


class RowResampler:
    """Bilinear resize of [K, h, w] → [K, H, W] fed with consecutive source-row strips, top to bottom."""

    def __init__(
        self, src: tuple[int, int], dst: tuple[int, int], align_corners: bool = False, whole_bytes: int = WHOLE_BYTES
    ) -> None:
        self.src, self.dst = (int(src[0]), int(src[1])), (int(dst[0]), int(dst[1]))
        self.whole_bytes = whole_bytes
        self.identity = self.src == self.dst
        self.align_corners = align_corners
        self._idx: tuple | None = None
        self.next_row = 0  # first output row not emitted yet
        self._held: torch.Tensor | None = None  # source rows kept from the last strip
        self._held_start = 0

    def _indices(self, device) -> tuple:
        if self._idx is None:
            self._idx = linear_indices(self.dst[0], self.src[0], self.align_corners, device)
        return self._idx

    def push(self, start: int, strip: torch.Tensor) -> Iterator[Strip]:
        """Accept source rows [start, start + rows); yield every output strip they complete."""
        if self.identity:
            yield start, strip
            return
        out_h, out_w = self.dst
        whole = start == 0 and strip.shape[1] == self.src[0]
        if whole and 4 * strip.shape[0] * out_h * out_w <= self.whole_bytes:
            # the whole map at once and a moderate output: one interpolation, as the references do
            self.next_row = out_h
            yield 0, F.interpolate(strip[None], size=self.dst, mode="bilinear", align_corners=self.align_corners)[0]
            return
        if self._held is not None:
            if self._held_start + self._held.shape[1] != start:
                raise ValueError("source strips must be consecutive")
            strip = torch.cat([self._held, strip], dim=1)
            start = self._held_start
        end = start + strip.shape[1]
        y0, y1, wy0, wy1 = self._indices(strip.device)
        done = out_h
        if end < self.src[0]:  # output rows whose lower source row is not here yet must wait
            done = int(torch.searchsorted(y1.cpu(), torch.tensor(end), right=False))
        k = strip.shape[0]
        rows = max(1, min(256, STRIP_BYTES // (4 * k * out_w)))
        for r0 in range(self.next_row, done, rows):
            r = slice(r0, min(done, r0 + rows))
            a, b = int(y0[r][0]), int(y1[r][-1]) + 1  # the band of source rows these output rows read
            band = torch.zeros((r.stop - r0, b - a), dtype=strip.dtype, device=strip.device)
            n = torch.arange(r.stop - r0, device=strip.device)
            band.index_put_((n, y0[r] - a), wy0[r], accumulate=True)
            band.index_put_((n, y1[r] - a), wy1[r], accumulate=True)
            vert = torch.matmul(band, strip[:, a - start : b - start])  # [K, rows, w]: 2 weights per row
            # along x: F.interpolate with the row count unchanged is the same 1-D linear resampling
            yield (
                r0,
                F.interpolate(
                    vert[None], size=(vert.shape[1], out_w), mode="bilinear", align_corners=self.align_corners
                )[0],
            )
        self.next_row = max(self.next_row, done)
        if self.next_row < out_h:  # keep the source rows the next output rows still need
            keep = min(int(y0[self.next_row]), end)  # (a strong shrink may skip past this strip entirely)
            self._held, self._held_start = strip[:, keep - start :], keep
        else:
            self._held = None
