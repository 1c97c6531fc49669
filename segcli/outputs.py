"""Output files: palette / 16-bit label PNGs and JSON summaries, always written atomically."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SUMMARY_SCHEMA = "segcli.prediction/1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def label_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """PNG bytes: mode P with the palette (pixel value = class index) up to 256 classes, else 16-bit gray."""
    buf = io.BytesIO()
    h, w = labels.shape
    if len(palette) <= 256:
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        flat = np.zeros((256, 3), dtype=np.uint8)
        flat[: len(palette)] = palette
        im.putpalette(flat.tobytes())
    else:
        im = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint16))  # mode I;16
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def class_stats(labels: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Classes present, largest area first: index, name, pixel count, fraction of the image."""
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    total = int(labels.size)
    present = [int(i) for i in np.flatnonzero(counts)]
    present.sort(key=lambda i: (-int(counts[i]), i))
    return [
        {"index": i, "name": classes[i], "pixels": int(counts[i]), "fraction": float(counts[i]) / total}
        for i in present
    ]


def summary(
    *, input_path: str, labels: np.ndarray, classes: list[str], model: dict[str, Any], preset: str
) -> dict[str, Any]:
    h, w = labels.shape
    return {
        "schema": SUMMARY_SCHEMA,
        "input": input_path,
        "image": {"width": int(w), "height": int(h)},
        "model": model,
        "preset": preset,
        "classes": class_stats(labels, classes),
    }


def json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
