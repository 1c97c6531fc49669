"""PNG written row by row: the palette PNG of an image too large to hold (a windowed raster's labels).

The same file `outputs.label_png` makes for a small image — palette PNG (pixel value = class index) up to
256 classes, 16-bit grey above, the resume fingerprint in a `tEXt` chunk before the image data — encoded
with one zlib stream fed a row band at a time, so memory does not grow with the image.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

from .outputs import FINGERPRINT_KEY, PNG_SIGNATURE

IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class PngStream:
    """Rows [n, W] of class indices in, a PNG out; `close` checks that every row came."""

    def __init__(
        self,
        f: BinaryIO,
        size: tuple[int, int],
        palette: np.ndarray | None,
        fingerprint: str | None = None,
        wide: bool | None = None,
    ) -> None:
        """`palette`: a palette PNG (None: grey); `wide`: 16-bit grey (default: above 256 palette entries)."""
        self.f, (self.height, self.width) = f, size
        self.wide = (palette is not None and len(palette) > 256) if wide is None else wide
        self.rows = 0
        self.z = zlib.compressobj(6)
        self.pending = bytearray()
        depth, colour = (16, 0) if self.wide else (8, 0 if palette is None else 3)
        f.write(PNG_SIGNATURE)
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, depth, colour, 0, 0, 0)))
        if colour == 3 and palette is not None:  # an 8-bit palette PNG
            flat = np.zeros((256, 3), dtype=np.uint8)
            flat[: len(palette)] = palette
            f.write(_chunk(b"PLTE", flat.tobytes()))
        if fingerprint is not None:
            f.write(_chunk(b"tEXt", FINGERPRINT_KEY.encode("latin-1") + b"\0" + fingerprint.encode("latin-1")))

    def write(self, y1: int, labels: np.ndarray) -> None:
        """Rows [y1, y1 + n) of class indices [n, W], top to bottom (y1: the next row)."""
        n = labels.shape[0]
        if y1 != self.rows or labels.shape[1] != self.width or self.rows + n > self.height:
            raise ValueError(f"rows {self.rows}..{self.rows + n} of width {labels.shape[1]} do not fit the PNG")
        data = labels.astype(">u2" if self.wide else np.uint8, copy=False).reshape(n, -1).view(np.uint8)
        raw = np.zeros((n, data.shape[1] + 1), dtype=np.uint8)  # each row: filter type 0, then the pixels
        raw[:, 1:] = data
        self.pending += self.z.compress(raw.tobytes())
        self.rows += n
        self._flush(IDAT_BYTES)

    def _flush(self, at_least: int) -> None:
        while len(self.pending) >= max(at_least, 1):
            part, self.pending = bytes(self.pending[:IDAT_BYTES]), self.pending[IDAT_BYTES:]
            self.f.write(_chunk(b"IDAT", part))

    def close(self) -> None:
        if self.rows != self.height:
            raise ValueError(f"PNG has {self.rows} of {self.height} rows")
        self.pending += self.z.flush()
        self._flush(0)
        self.f.write(_chunk(b"IEND", b""))
