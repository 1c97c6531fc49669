"""Training data as people keep it: which images go with which masks, and a scan before the first step.

Layouts (`find`), detected from DATA:

* mmseg's `img_dir/{train,val}` + `ann_dir/{train,val}`;
* `images/` + one of `masks/`, `labels/`, `annotations/` (two of them: ambiguous, refused), each either flat
  or split into `train/` and `val/`; a mask has its image's path with the extension `.png`;
* a list file (DATA is a `.txt`): one `image mask` pair per line, paths relative to the file.

Without a val split in the layout, `--val DIR` (a folder of the same layout) or `--val-split F` (a seeded
fraction) gives one; otherwise the run has no validation.

Masks (`read_mask`) are index PNGs (value = class) or colour PNGs mapped through the classes' palette;
`reduce_zero_label` (ADE style) makes 0 the ignore index and shifts every other value down by one. The
scan (`scan`) reads every pair once — header sizes, the whole mask — and reports every problem as one line
naming the file, with the class pixel frequencies, so no data problem it can see stops a run halfway.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..errors import ImageError, UsageError
from ..fsutil import read_regular, require_regular
from ..io.images import image_size, read_labels
from ..io.inputs import IMAGE_EXTENSIONS

MASK_FOLDERS = ("masks", "labels", "annotations")
MAX_LIST_BYTES = 64 << 20


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    name: str  # the image's path relative to its folder, for messages and logs


@dataclass
class Split:
    train: list[Pair]
    val: list[Pair]
    layout: str  # how DATA was read, for the log
    missing: list[str] = field(default_factory=list)  # images without a mask: one line each


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _pairs(images: Path, masks: Path) -> tuple[list[Pair], list[str]]:
    pairs, missing = [], []
    for img in _images(images):
        rel = img.relative_to(images)
        mask = (masks / rel).with_suffix(".png")
        if mask.is_file():
            pairs.append(Pair(img, mask, rel.as_posix()))
        else:
            missing.append(f"{img}: no mask ({mask} does not exist)")
    return pairs, missing


def _list_file(path: Path) -> tuple[list[Pair], list[str]]:
    try:
        text = read_regular(path, MAX_LIST_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the list of image / mask pairs ({e})") from None
    pairs, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) != 2:
            problems.append(f"{path}:{n}: expected 'IMAGE MASK', got {len(parts)} field(s)")
            continue
        image, mask = (path.parent / p for p in parts)
        pairs.append(Pair(image, mask, parts[0]))
    return pairs, problems


def _layout(data: Path) -> tuple[Path, Path, str]:
    """(images folder, masks folder, layout name) of DATA; UsageError when it is none of the layouts."""
    if (data / "img_dir").is_dir() and (data / "ann_dir").is_dir():
        return data / "img_dir", data / "ann_dir", "mmseg img_dir + ann_dir"
    masks = [m for m in MASK_FOLDERS if (data / m).is_dir()]
    if (data / "images").is_dir() and len(masks) == 1:
        return data / "images", data / masks[0], f"images + {masks[0]}"
    if len(masks) > 1:
        raise UsageError(
            f"{data}: ambiguous: it has {' and '.join(m + '/' for m in masks)} beside images/",
            hint="keep one mask folder, or give a list file of 'image mask' pairs",
        )
    raise UsageError(
        f"{data}: no training data layout found",
        hint="expected images/ + masks/ (or labels/, annotations/), mmseg's img_dir/ + ann_dir/, "
        "or a .txt list of 'image mask' pairs",
    )


def find(data: Path, val: Path | None = None, val_split: float | None = None, seed: int = 0) -> Split:
    """The training and validation pairs of DATA (see the module docstring)."""
    data = Path(data)
    if data.is_file():
        train, missing = _list_file(data)
        split = Split(train, [], f"list file {data.name}", missing)
    elif not data.is_dir():
        raise UsageError(f"{data}: no such folder or list file")
    else:
        images, masks, layout = _layout(data)
        if (images / "train").is_dir() and (masks / "train").is_dir():
            train, missing = _pairs(images / "train", masks / "train")
            v, v_missing = _pairs(images / "val", masks / "val") if (images / "val").is_dir() else ([], [])
            split = Split(train, v, f"{layout}, train/ and val/", missing + v_missing)
        else:
            train, missing = _pairs(images, masks)
            split = Split(train, [], layout, missing)
    if val is not None:
        extra = find(val)
        split.val, split.missing = extra.train, split.missing + extra.missing
    elif val_split is not None:
        if split.val:
            raise UsageError("--val-split: the data has a val/ split already", hint="leave --val-split out")
        split.train, split.val = hold_out(split.train, val_split, seed)
    if not split.train:
        raise UsageError(f"{data}: no image / mask pairs found ({split.layout})", hint="see `segcli train --help`")
    return split


T = TypeVar("T")


def hold_out(items: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(kept, held out): a seeded `fraction` of `items` (at least one) for validation (`--val-split`)."""
    if not 0 < fraction < 1:
        raise UsageError(f"--val-split {fraction}: give a fraction between 0 and 1, e.g. 0.1")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(order) * fraction))])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


@dataclass(frozen=True)
class MaskRule:
    """How mask files become class indices [H, W] (int64, `ignore` where unlabelled)."""

    num_classes: int
    ignore: int = 255
    reduce_zero_label: bool = False
    palette: tuple[tuple[int, int, int], ...] = ()  # colour masks: colour → class index


def read_mask(path: Path, rule: MaskRule) -> np.ndarray:
    """The mask at `path` as class indices; ImageError naming the file (and the first bad value) when it
    holds a value outside the classes or a colour outside the palette."""
    try:
        labels = read_labels(path).astype(np.int64)
    except ImageError as e:
        if "a colour image" not in e.message:
            raise
        labels = _from_colours(path, rule)
    if rule.reduce_zero_label:
        labels = np.where(labels == 0, rule.ignore, labels - 1)
        labels[labels == rule.ignore - 1] = rule.ignore  # mmseg: 255 → 254 → ignored again
    bad = (labels >= rule.num_classes) & (labels != rule.ignore) | (labels < 0)
    if bad.any():
        values = np.unique(labels[bad])[:5].tolist()
        raise ImageError(
            f"{path}: values {values} are outside the {rule.num_classes} classes (0..{rule.num_classes - 1}, "
            f"ignore {rule.ignore})",
            hint="--reduce-zero-label for ADE-style masks (0 = unlabelled), or a classes file that lists them",
        )
    return labels


def _from_colours(path: Path, rule: MaskRule) -> np.ndarray:
    if not rule.palette:
        raise ImageError(f"{path}: a colour mask, and the classes have no palette", hint="give --classes with colours")
    require_regular(path)
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(rule.palette)}
    keys = np.array(sorted(lut), dtype=np.int64)
    where = np.searchsorted(keys, code).clip(0, len(keys) - 1)
    found = keys[where] == code
    if not found.all():
        r, g, b = rgb[~found][0].tolist()
        raise ImageError(
            f"{path}: colour ({r}, {g}, {b}) is not in the classes' palette", hint="fix the mask or --classes"
        )
    return np.array([lut[int(k)] for k in keys], dtype=np.int64)[where]


@dataclass
class Scan:
    """What the pre-flight scan found."""

    good: list[Pair]
    problems: list[str]
    pixels: np.ndarray  # [K] labelled pixels per class
    ignored: int  # unlabelled pixels


def scan(pairs: list[Pair], rule: MaskRule, progress: Callable[[int], None] | None = None) -> Scan:
    """Read every pair once: image header, whole mask, their sizes, the mask's values."""
    good, problems = [], []
    pixels, ignored = np.zeros(rule.num_classes, dtype=np.int64), 0
    for n, pair in enumerate(pairs):
        try:
            w, h = image_size(pair.image)
            labels = read_mask(pair.mask, rule)
            if labels.shape != (h, w):
                raise ImageError(
                    f"{pair.mask}: {labels.shape[1]}x{labels.shape[0]} mask for a {w}x{h} image ({pair.image})"
                )
        except ImageError as e:
            problems.append(str(e))
        else:
            good.append(pair)
            counts = np.bincount(labels[labels != rule.ignore].ravel(), minlength=rule.num_classes)
            pixels += counts[: rule.num_classes]
            ignored += int((labels == rule.ignore).sum())
        if progress is not None:
            progress(n + 1)
    return Scan(good, problems, pixels, ignored)
