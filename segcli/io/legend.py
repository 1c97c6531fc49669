"""Legends: colour swatches with class names, drawn with Pillow's bundled font.

* `legend_panel` — the classes present in one map (largest first), as a strip under an overlay;
* `legend_png` — every class of a model's palette (and of a parser's part and material maps), the run's
  `legend.png`; `classes_doc` is the same as data (`classes.json`).

Text size follows the image width (a 20000-pixel aerial overlay gets a legend one can read when it is
scaled down to a screen); a name is drawn as it is (Pillow draws text, it does not interpret it).
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..loading.classes import ClassSet

RUN_LEGEND_MAX = 1024  # legend.png's entries per set
MAX_ENTRIES = 24  # an overlay's legend lists the largest classes, then "+ N more"
NAME_CHARS = 40  # longer names are cut with an ellipsis


@cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` pixels (its fixed bitmap font where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow < 10.1 or without FreeType
        return ImageFont.load_default()


def _short(name: str) -> str:
    name = " ".join(name.split())  # no control characters or line breaks in a legend
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def _grid(
    entries: list[tuple[str, tuple[int, int, int]]], width: int | None, size: int, title: str | None
) -> Image.Image:
    """Entries (text, RGB) in columns: as many as fit in `width` (None: four), top to bottom."""
    f, pad, swatch = font(size), max(2, size // 3), size
    text_w = max((int(f.getlength(text)) for text, _ in entries), default=0)
    cell_w, cell_h = swatch + pad * 3 + text_w, size + pad * 2
    cols = max(1, (width - pad) // cell_w) if width else min(4, max(1, len(entries)))
    rows = -(-len(entries) // cols)
    top = cell_h if title else 0
    canvas_w = width or cols * cell_w + pad
    im = Image.new("RGB", (canvas_w, top + rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0), font=f)
    for i, (text, colour) in enumerate(entries):
        x, y = pad + (i // rows) * cell_w, top + pad + (i % rows) * cell_h
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(colour), outline=(0, 0, 0))
        draw.text((x + swatch + pad, y), text, fill=(0, 0, 0), font=f)
    return im


def text_size(width: int) -> int:
    """Legend text height for an image `width` pixels wide."""
    return int(np.clip(width / 50, 12, 96))


def legend_entries(
    labels: np.ndarray, classes: ClassSet, background: int | None = None
) -> list[tuple[str, tuple[int, int, int]]]:
    """(text, colour) of the classes present in `labels`, largest area first, each with its share of the
    image (`background`, a parser's "no part" class, left out of the list but not of the image)."""
    counts = np.bincount(labels.ravel(), minlength=len(classes.classes))[: len(classes.classes)]  # ignored: none
    if background is not None:
        counts[background] = 0
    present = sorted((int(i) for i in np.flatnonzero(counts)), key=lambda i: (-int(counts[i]), i))
    total = int(labels.size) or 1
    entries = [
        (f"{_short(classes.classes[i])}  {100 * counts[i] / total:.1f}%", classes.palette[i])
        for i in present[:MAX_ENTRIES]
    ]
    if len(present) > MAX_ENTRIES:
        entries.append((f"+ {len(present) - MAX_ENTRIES} more", (255, 255, 255)))
    return entries


def legend_panel(labels: np.ndarray, classes: ClassSet, width: int, background: int | None = None) -> Image.Image:
    """The classes present in `labels` (largest area first; `background` left out), `width` pixels wide."""
    entries = legend_entries(labels, classes, background)
    return _grid(entries or [("(nothing)", (255, 255, 255))], width, text_size(width), None)


def with_legend(blend: np.ndarray, panel: Image.Image) -> Image.Image:
    """The overlay [H, W, 3] with the legend panel under it (pixel (x, y) of the overlay is the image's)."""
    h, w = blend.shape[:2]
    out = Image.new("RGB", (max(w, panel.width), h + panel.height), (255, 255, 255))
    out.paste(Image.fromarray(blend), (0, 0))
    out.paste(panel, (0, h))
    return out


def _entries(s: ClassSet) -> list[tuple[str, tuple[int, int, int]]]:
    """`index name` and colour of the first `RUN_LEGEND_MAX` classes (then how many more)."""
    shown = [
        (f"{i} {_short(n)}", c)
        for i, (n, c) in enumerate(zip(s.classes[:RUN_LEGEND_MAX], s.palette[:RUN_LEGEND_MAX], strict=True))
    ]
    if len(s.classes) > RUN_LEGEND_MAX:
        shown.append((f"+ {len(s.classes) - RUN_LEGEND_MAX} more (classes.json lists all)", (255, 255, 255)))
    return shown


def legend_png(sets: list[tuple[str, ClassSet]]) -> bytes:
    """Every class of each set (title, classes), one section per set: `index name` beside its colour (up to
    `RUN_LEGEND_MAX` a set: a model of 65536 classes would draw a 40 MB picture)."""
    sections = [_grid(_entries(s), None, 14, t) for t, s in sets]
    out = Image.new("RGB", (max(s.width for s in sections), sum(s.height for s in sections)), (255, 255, 255))
    y = 0
    for s in sections:
        out.paste(s, (0, y))
        y += s.height
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def classes_doc(name: str, classes: ClassSet, head_sets: dict[str, ClassSet]) -> dict[str, Any]:
    """`classes.json`: each map's classes with their palette colour (and a parser's scenes)."""

    def entries(s: ClassSet, colours: bool = True) -> list[dict[str, Any]]:
        return [
            {"index": i, "name": n, **({"color": "#{:02x}{:02x}{:02x}".format(*c)} if colours else {})}
            for i, (n, c) in enumerate(zip(s.classes, s.palette, strict=True))
        ]

    doc: dict[str, Any] = {"schema": "segcli.classes/1", "model": name, "classes": entries(classes)}
    for head, s in head_sets.items():
        doc[head] = entries(s, colours=head != "scene")
    return doc
