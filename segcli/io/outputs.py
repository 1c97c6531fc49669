"""Output encoders: palette / index PNGs (with the resume fingerprint), overlays, probabilities, JSON bytes.

They return bytes; `fsutil.atomic_write_bytes` puts them on disk."""

from __future__ import annotations

import io
import json
import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin

from ..fsutil import require_regular
from ..loading.classes import ClassSet

FINGERPRINT_KEY = "segcli"  # PNG text chunk: what made this file (model + parameters), for resuming
# part, material: parsing models' maps; geotiff: rasters (the [geo] extra)
SAVE_KINDS = (
    "label",
    "overlay",
    "probs",
    "json",
    "part",
    "material",
    "geotiff",
    "coco",
    "confidence",
    "entropy",
    "labelstudio",
    "vector",
    "video",  # a video input's overlay video and per-frame class areas (batch.video)
)
MAP_KINDS = ("part", "material")  # label maps besides the objects' (a `--save overlay` overlays each)


def _png(im: Image.Image, fingerprint: str | None = None) -> bytes:
    buf = io.BytesIO()
    info = None
    if fingerprint is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(FINGERPRINT_KEY, fingerprint)
    im.save(buf, format="PNG", compress_level=6, pnginfo=info)
    return buf.getvalue()


def label_png(labels: np.ndarray, palette: np.ndarray, fingerprint: str | None = None) -> bytes:
    """PNG bytes: mode P with the palette (pixel value = class index) up to 256 classes, else 16-bit gray."""
    h, w = labels.shape
    if len(palette) <= 256:
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        flat = np.zeros((256, 3), dtype=np.uint8)
        flat[: len(palette)] = palette
        im.putpalette(flat.tobytes())
    else:
        im = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint16))  # mode I;16
    return _png(im, fingerprint)


def index_png(labels: np.ndarray, num_classes: int) -> bytes:
    """Grayscale PNG of class indices: 8-bit up to 256 classes, else 16-bit."""
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    return _png(Image.fromarray(np.ascontiguousarray(labels, dtype=dtype)))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint text chunk of a PNG segcli wrote, read from the chunks before the image data (no
    decoding: a huge or broken earlier output costs nothing); None for anything else."""
    try:
        require_regular(path)
        with open(path, "rb") as f:
            return read_fingerprint_bytes(f)
    except OSError:
        return None


def read_fingerprint_bytes(f: BinaryIO) -> str | None:
    """`read_fingerprint` of a PNG's bytes in `f` (its first chunks suffice: an object's header read)."""
    if f.read(8) != PNG_SIGNATURE:
        return None
    for _ in range(64):  # the text chunk comes right after the header and palette
        head = f.read(8)
        if len(head) < 8:
            return None
        size, kind = struct.unpack(">I4s", head)
        if kind == b"IDAT" or size > 1 << 16:
            return None
        data = f.read(size)
        f.seek(4, io.SEEK_CUR)  # CRC
        key, _, value = data.partition(b"\0")
        if kind == b"tEXt" and key == FINGERPRINT_KEY.encode():
            return value.decode("latin-1")
    return None


def overlay_rgb(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float, background: int | None = None
) -> np.ndarray:
    """uint8 [H, W, 3]: (1 - alpha)·image + alpha·colour; pixels of the `background` label and of a class
    map's ignore label (≥ the palette's length) show the image alone."""
    none = labels >= len(palette)
    colours = palette[np.where(none, 0, labels)]  # [H, W, 3]
    blend = image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    if background is not None:
        none |= labels == background
    blend[none] = image[none]
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def overlay_jpeg(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float,
    background: int | None = None,
    legend: ClassSet | None = None,
) -> bytes:
    """The image blended with the class colours: (1 - alpha)·image + alpha·colour, as JPEG (quality 90, 4:4:4);
    pixels of the `background` label (a parsing map's "-": no part, no material) show the image alone. With
    `legend` (the map's classes), the classes present are listed under the image."""
    picture = Image.fromarray(overlay_rgb(image, labels, palette, alpha, background))
    if legend is not None:
        from .legend import legend_panel, with_legend

        width = max(labels.shape[1], 480)  # a narrow image gets a legend wider than itself, not a tall one
        picture = with_legend(np.asarray(picture), legend_panel(labels, legend, width, background))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90, subsampling=0)  # 4:4:4: class edges keep their colour
    return buf.getvalue()


def probs_npy(probs: np.ndarray, f: BinaryIO) -> None:
    """float16 [K, H, W] class probabilities as .npy, written to `f` (no copy of the array in memory)."""
    np.save(f, probs.astype(np.float16, copy=False))


TOPK_ROWS = 32  # rows sorted at once: the sort's int64 indices stay small beside the probabilities


def topk_npz(probs: np.ndarray, k: int, f: BinaryIO) -> None:
    """The k most probable classes per pixel: `indices` [k, H, W] (uint8 / uint16) and `probs` float16,
    most probable first, as .npz written to `f` (sorted a band of rows at a time)."""
    k = min(k, probs.shape[0])
    _, h, w = probs.shape
    idx = np.empty((k, h, w), dtype=np.uint8 if probs.shape[0] <= 256 else np.uint16)
    top = np.empty((k, h, w), dtype=np.float16)
    for y in range(0, h, TOPK_ROWS):
        band = probs[:, y : y + TOPK_ROWS]
        order = np.argsort(-band, axis=0, kind="stable")[:k]
        idx[:, y : y + TOPK_ROWS] = order
        top[:, y : y + TOPK_ROWS] = np.take_along_axis(band, order, axis=0)
    np.savez(f, indices=idx, probs=top)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class [num_classes] (a class map's ignore label counts for none)."""
    return np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]


def class_stats(counts: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Classes present, largest area first: index, name, pixel count, fraction of the total."""
    total = int(counts.sum()) or 1
    present = sorted((int(i) for i in np.flatnonzero(counts)), key=lambda i: (-int(counts[i]), i))
    return [
        {"index": i, "name": classes[i], "pixels": int(counts[i]), "fraction": float(counts[i]) / total}
        for i in present
    ]


def top_classes(probs: np.ndarray, classes: tuple[str, ...] | list[str], k: int = 5) -> list[dict[str, Any]]:
    """The k most probable of image-level probabilities [S] (the scene): index, name, probability."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "name": classes[i], "probability": float(probs[i])} for i in order]


def finite(data: Any) -> Any:
    """`data` with every NaN or infinite float as None: JSON has no such numbers (strict parsers refuse them)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def json_line(data: dict[str, Any]) -> str:
    """One strict JSON line (a --jsonl record)."""
    return json.dumps(finite(data), ensure_ascii=False, allow_nan=False)


def json_bytes(data: dict[str, Any]) -> bytes:
    """Strict JSON (NaN / infinity as null), indented, UTF-8: every JSON file a run writes."""
    return (json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class ConfidenceTally:
    """The JSON's "confidence", summed over the pixels as they come (a raster's bands): the mean largest
    probability, the fraction below `low` (`uncertain_fraction`: the images most worth reviewing first),
    and each class's mean over its pixels."""

    def __init__(self, classes: tuple[str, ...], low: float) -> None:
        self.classes, self.low = classes, low
        self.sums = np.zeros(len(classes), dtype=np.float64)
        self.counts = np.zeros(len(classes), dtype=np.int64)
        self.below = 0

    def add(self, confidence: np.ndarray, labels: np.ndarray) -> None:
        """Values and class indices of the same (valid) pixels, any shape."""
        conf, lab = confidence.astype(np.float64).ravel(), labels.ravel().astype(np.int64)
        k = len(self.classes)
        if lab.size and int(lab.max()) >= k:  # a class map's ignored pixels: in no class, not counted
            keep = lab < k
            conf, lab = conf[keep], lab[keep]
        self.sums += np.bincount(lab, conf, minlength=k)[:k]
        self.counts += np.bincount(lab, minlength=k)[:k]
        self.below += int((conf < self.low).sum())

    def to_json(self) -> dict[str, Any]:
        n = int(self.counts.sum())
        per_class = [
            {"index": int(c), "name": self.classes[c], "mean": float(self.sums[c] / self.counts[c])}
            for c in np.flatnonzero(self.counts)
        ]
        return {
            "mean": float(self.sums.sum() / n) if n else None,
            "low_confidence": self.low,
            "uncertain_fraction": self.below / n if n else None,
            "classes": per_class,
        }


def confidence_stats(
    confidence: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], low: float
) -> dict[str, Any]:
    """`ConfidenceTally` of one whole map."""
    tally = ConfidenceTally(classes, low)
    tally.add(confidence, labels)
    return tally.to_json()


def unit_png(values: np.ndarray) -> bytes:
    """A map of values in 0..1 as an 8-bit grayscale PNG (round(255 · v))."""
    return _png(Image.fromarray(np.clip(np.rint(values.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)))
