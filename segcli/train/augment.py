"""mmseg's training pipeline, with its semantics (`_base_/datasets/ade20k.py`): RandomResize (keep ratio,
ratio 0.5–2.0 of a base scale) → RandomCrop (`cat_max_ratio` 0.75, up to 10 tries) → RandomFlip 0.5 →
PhotoMetricDistortion → pad to the crop (image 0, labels the ignore index).

numpy and Pillow (already core dependencies) rather than an augmentation library: these five steps are
what the recipes use, each a few lines, and a sample is a pure function of (image, labels, its seed) —
what makes a resumed run draw the same crops as an uninterrupted one. Images resize bilinearly, labels
with nearest neighbours (as mmseg's cv2 backend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..engine.resample import rescale_size


@dataclass(frozen=True)
class Pipeline:
    crop: tuple[int, int]  # (H, W)
    ratio: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip: float = 0.5
    photometric: bool = True
    ignore: int = 255
    base: tuple[int, int] | None = None  # (long, short) edges of the base scale [4·crop, crop]: the model's
    # test scale (mmseg's (2048, 512) for ADE20K)

    @property
    def scale(self) -> tuple[int, int]:
        """(long, short) edge of the base scale: mmseg's (2048, 512) for a 512 crop."""
        return self.base or (4 * max(self.crop), min(self.crop))

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H, W, 3] and labels [H, W] (or several maps [H, W, C] under one transform, the crop's
        class balance judged on the first) → one training sample of the crop's size."""
        image, labels = self._resize(image, labels, rng)
        image, labels = self._crop(image, labels, rng)
        if rng.random() < self.flip:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if self.photometric:
            image = photometric(image, rng)
        return _pad(image, labels, self.crop, self.ignore)

    def _resize(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        r = rng.uniform(*self.ratio)
        long, short = self.scale
        h, w = labels.shape[:2]
        nw, nh = rescale_size(w, h, int(long * r), int(short * r))
        if (nh, nw) == (h, w):
            return image, labels
        im = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
        maps = labels[..., None] if labels.ndim == 2 else labels
        lab = np.stack([_nearest(maps[..., c], nw, nh) for c in range(maps.shape[2])], axis=2)
        return im, lab.reshape((nh, nw, *labels.shape[2:]))

    def _crop(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ch, cw = self.crop
        h, w = labels.shape[:2]
        first = labels if labels.ndim == 2 else labels[..., 0]

        def box() -> tuple[int, int]:
            return int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))

        y, x = box()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):  # mmseg: until no class covers more than cat_max_ratio of the labelled pixels
                values, counts = np.unique(first[y : y + ch, x : x + cw], return_counts=True)
                counts = counts[values != self.ignore]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y, x = box()
        return image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion: brightness ±32, contrast 0.5–1.5 (before or after the HSV steps, at
    random), saturation 0.5–1.5, hue ±18 (of 180), each with probability 0.5."""
    img = image.astype(np.float32)
    if rng.integers(2):
        img = img + rng.uniform(-32, 32)
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        img = img * rng.uniform(0.5, 1.5)
    img = np.clip(img, 0, 255)
    saturate, hue = rng.integers(2), rng.integers(2)
    if saturate or hue:
        hsv = np.asarray(Image.fromarray(img.astype(np.uint8)).convert("HSV")).astype(np.float32)
        if saturate:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
        if hue:
            hsv[..., 0] = (hsv[..., 0] + rng.integers(-18, 19) * 256 / 180) % 256
        img = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and rng.integers(2):
        img = np.clip(img * rng.uniform(0.5, 1.5), 0, 255)
    return img.astype(np.uint8)


def _nearest(labels: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)).astype(
        np.int64
    )


def _pad(image: np.ndarray, labels: np.ndarray, crop: tuple[int, int], ignore: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape[:2]
    if (h, w) == crop:
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)
    im = np.zeros((*crop, 3), dtype=np.uint8)
    lab = np.full((*crop, *labels.shape[2:]), ignore, dtype=np.int64)
    im[:h, :w], lab[:h, :w] = image, labels
    return im, lab
