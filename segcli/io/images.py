"""Image input: any path / PIL image / array → RGB uint8 [H, W, 3], and label maps (index PNGs) → integer
arrays (`read_labels`), with one-line errors naming the file.

Conversions: EXIF orientation applied; grayscale and bilevel replicated to three channels; palette images
through their palette; alpha (RGBA, LA, PA) is *dropped* — colour channels are kept as stored, not
composited on a background; CMYK / YCbCr / LAB converted by Pillow; 16-bit data scaled by 1/257
(65535 → 255); float images taken as 0..1 when their maximum is ≤ 1, else clipped to 0..255.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError, UsageError, first_line
from ..fsutil import require_regular

ImageInput = str | os.PathLike | Image.Image | np.ndarray

#: Pillow's own decompression-bomb limit (pixels); `max_pixels` raises or lowers it per call.
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
_BOMB_LOCK = threading.Lock()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, without decoding (ImageError when unreadable)."""
    try:
        require_regular(path)
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image too large", hint="raise --max-pixels if the image is trusted") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is this image's one-line error
        raise ImageError(f"{path}: cannot read image header ({first_line(e, typed=True)})") from None


# segcli applies its own pixel limit (`max_pixels`) to every image; Pillow's warning below its hard limit
# says the same thing in a raw line. A process-wide filter: `warnings.catch_warnings` is not thread-safe,
# and images are decoded in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open(src: Path | BinaryIO, label: str, max_pixels: int) -> Image.Image:
    try:
        im = Image.open(src)
    except Image.DecompressionBombError:
        if max_pixels <= 2 * DEFAULT_MAX_PIXELS:
            raise
        with _BOMB_LOCK:  # the caller raised the limit above Pillow's: open once without its check
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(src)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            f"{label}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}",
            hint="raise it with --max-pixels if the image is trusted",
        )
    return im


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode.startswith("I"):  # I;16*, I: 16-bit data; rint(v / 257) in integers (no float copy)
        a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        gray = ((a + 128) // 257).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("1", "L", "LA"):
        gray = np.asarray(im.convert("L"))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def load_image(src: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array [H, W, 3] (C-contiguous) from a path, a PIL image or an array."""
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, Image.Image):
        return np.ascontiguousarray(_to_rgb8(ImageOps.exif_transpose(src)))
    if not isinstance(src, (str, os.PathLike)):
        raise UsageError(f"unsupported image input of type {type(src).__name__}: give a path, PIL image or array")
    path = Path(src)
    size = lambda: path.stat().st_size if path.exists() else 0  # noqa: E731
    return _decode(path, str(path), max_pixels, size, check=lambda: require_regular(path))


def decode_image(data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`load_image` of an image's bytes (an object read from a URL, say); errors name `label`."""
    return _decode(io.BytesIO(data), label, max_pixels, lambda: len(data))


def _decode(
    src: Path | BinaryIO, label: str, max_pixels: int, size: Callable[[], int], check: Callable[[], object] = int
) -> np.ndarray:
    """The image `src` decoded (`check()` first: a file's regularity), every failure one ImageError."""
    try:
        check()
        with _open(src, label, max_pixels) as im:
            im.load()
            rgb = _to_rgb8(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: {e}", hint="raise the limit with --max-pixels if the image is trusted") from None
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except Image.UnidentifiedImageError:
        what = "empty file (0 bytes)" if size() == 0 else "not an image Pillow can read"
        raise ImageError(f"{label}: {what}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated data, broken chunks, FIFOs
        raise ImageError(f"{label}: cannot decode image ({first_line(e, strerror=True)})") from None
    except MemoryError:
        raise ImageError(f"{label}: not enough memory to decode this image", hint="lower --max-pixels") from None
    except Exception as e:  # noqa: BLE001 - a decoder bug or an unsupported variant (e.g. NotImplementedError)
        raise ImageError(f"{label}: cannot decode image ({first_line(e, typed=True)})") from None
    return np.ascontiguousarray(rgb)


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise UsageError(f"image arrays must be uint8 RGB [H, W, 3], got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise UsageError(f"image arrays must be [H, W, 3] (or [H, W] / [H, W, 4]), got shape {list(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise UsageError(f"empty image array of shape {list(a.shape)}")
    return np.ascontiguousarray(a)


def synthetic_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB uint8 image (colour blobs on gradients, mild noise): a realistic input for
    checks where resizing should not be dominated by noise (export verification, tests, benchmarks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.4) * max(h, w)
            img[..., c] += rng.uniform(40, 120) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_labels(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An index PNG (mode L / P / I;16 / I / 1) as an integer array; colour PNGs are refused. Any problem,
    a decompression bomb included, is this file's ImageError."""
    try:
        require_regular(path)
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
            im.load()
            if im.mode in ("RGB", "RGBA"):
                raise ImageError(
                    f"{path}: a colour image, not a label map (pixel value = class index)",
                    hint="palette PNGs (mode P) and grayscale index PNGs are label maps",
                )
            if im.mode not in ("L", "P", "I;16", "I;16L", "I;16B", "I", "1"):
                raise ImageError(f"{path}: image mode {im.mode} is not a label map")
            labels = np.asarray(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - truncated data, bombs, decoder errors: this pair's failure
        raise ImageError(f"{path}: cannot read label map ({first_line(e, strerror=True)})") from None
    return labels.astype(np.uint8) if labels.dtype == bool else labels  # mode 1: 0 / 1
