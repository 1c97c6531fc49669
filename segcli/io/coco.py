"""COCO's segmentation format: one annotation per class present, its mask as COCO's compressed RLE.

RLE as pycocotools' `maskApi.c` writes it: run lengths of the mask read in column-major (Fortran) order,
starting with a run of zeros (possibly empty), each run after the second stored as its difference to the
run two before (`rleToString`), in 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
Written here with numpy (no compiled dependency); pycocotools' `mask.decode` reads it back exactly.

Per image (`<base>.coco.json`, `image_doc`): a COCO dataset of that one image — `images` (id 1, the input's
relative path as `file_name`), `annotations` (`segmentation` {size, counts}, `area`, `bbox` [x, y, w, h],
`category_id`, `iscrowd` 0, `score` 1.0: a semantic map has no per-region score), `categories` (the model's
classes, id = class index + 1, COCO's ids start at 1). A run's files (`run_files`) join them, each image
numbered by its place among all the run's inputs (1…; the shards of a run do not clash): `coco.json` (a
dataset: `COCO("coco.json")`) and `coco-results.json` (its annotations, each with its image's `file_name`:
`COCO(ground_truth).loadRes("coco-results.json")`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_path, read_json_object

MAX_IMAGE_DOC = 1 << 30  # one image's COCO file read back (a 20000² map of fine classes stays far below)


def runs(mask: np.ndarray) -> np.ndarray:
    """Run lengths [n] of a bool mask [H, W] in column-major order, the first a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    lengths = np.diff(edges)
    return np.concatenate([[0], lengths]) if flat[0] else lengths


def counts_string(cnts: np.ndarray) -> str:
    """`rleToString`: the run lengths as COCO's compressed counts."""
    out: list[str] = []
    c = [int(v) for v in cnts]
    for i, x in enumerate(c):
        if i > 2:
            x -= c[i - 2]
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic: a negative difference ends at -1
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_counts(s: str) -> np.ndarray:
    """`rleFrString`: compressed counts → run lengths."""
    cnts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            ch = ord(s[p]) - 48
            x |= (ch & 0x1F) << 5 * k
            more = bool(ch & 0x20)
            p, k = p + 1, k + 1
            if not more and ch & 0x10:
                x |= -1 << 5 * k
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return np.asarray(cnts, dtype=np.int64)


def encode(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_string(runs(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """An RLE (compressed counts) → bool mask [H, W]."""
    h, w = rle["size"]
    cnts = string_counts(rle["counts"])
    if int(cnts.sum()) != h * w or (cnts < 0).any():
        raise ValueError(f"RLE counts sum to {int(cnts.sum())}, not {h}x{w}")
    values = np.arange(len(cnts)) % 2 == 1
    return np.repeat(values, cnts).reshape((w, h)).T


def bbox(mask: np.ndarray) -> list[float]:
    """[x, y, width, height] of the mask's pixels."""
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def categories(classes: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)]


def image_doc(labels: np.ndarray, file_name: str, classes: tuple[str, ...]) -> dict[str, Any]:
    """The per-image COCO dataset of a label map [H, W] (see the module docstring)."""
    h, w = labels.shape
    anns: list[dict[str, Any]] = []
    for k in np.unique(labels).tolist():
        if k >= len(classes):  # a class map's ignore label: no class
            continue
        mask = labels == k
        anns.append({
            "id": len(anns) + 1, "image_id": 1, "category_id": int(k) + 1, "segmentation": encode(mask),
            "area": int(mask.sum()), "bbox": bbox(mask), "iscrowd": 0, "score": 1.0,
        })  # fmt: skip
    image = {"id": 1, "file_name": file_name, "height": int(h), "width": int(w)}
    return {"images": [image], "annotations": anns, "categories": categories(classes)}


def write_run_files(
    docs: Iterable[tuple[int, Path]], classes: tuple[str, ...], dataset: Path, results: Path
) -> list[str]:
    """coco.json (`dataset`) and coco-results.json (`results`) of (image id, per-image file) pairs, written
    atomically in one pass over the files (the annotations streamed through a temporary file: memory holds
    one image's at a time, and the image list). Returns one problem line per file that could not be read."""
    problems, images, n_ann = [], [], 0
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=dataset.parent) as anns:
        for image_id, path in docs:
            try:  # a file another process may have changed: read as data, written back as strict JSON
                doc = read_json_object(path, MAX_IMAGE_DOC)
                image = {**doc["images"][0], "id": image_id}
                name = image.get("file_name")
                lines = [
                    json.dumps({**a, "id": n_ann + i + 1, "image_id": image_id, "file_name": name}, allow_nan=False)
                    for i, a in enumerate(doc["annotations"])
                ]
                json.dumps(image, allow_nan=False)
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                problems.append(f"{path}: cannot read it for the run's COCO file ({e})")
                continue
            images.append(image)
            for line in lines:
                n_ann += 1
                anns.write(("," if n_ann > 1 else "") + line)
        cats = json.dumps(categories(classes))
        for path, head, tail in (
            (dataset, '{"images": ' + json.dumps(images) + ', "annotations": [', '], "categories": ' + cats + "}\n"),
            (results, "[", "]\n"),
        ):
            anns.seek(0)
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(head)
                shutil.copyfileobj(anns, f)
                f.write(tail)
    return problems
