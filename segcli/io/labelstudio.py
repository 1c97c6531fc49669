"""Label Studio pre-annotations: one task per image with a `BrushLabels` result per class present, and the
labeling config that names the classes.

Label Studio's brush RLE (its frontend's `rle-pack`, `label_studio_converter.brush.decode_rle`): a bit
stream of a 32-bit value count, the word size − 1 (5 bits: 8), four run-length field sizes − 1 (4 bits
each: 3, 4, 8, 16), then chunks — a repeat bit, a 2-bit index into the sizes, the run length − 1 in that
many bits, and the value (one word for a repeat run) — padded to whole bytes, as a list of byte values. The
values are the mask as RGBA, four per pixel, 255 inside and 0 outside (their `mask2rle`). Written here from
the mask's runs, without materialising the RGBA array.

A task (`task`): {"data": {IMAGE: reference}, "predictions": [{"model_version", "score", "result": [...]}]},
each result {"type": "brushlabels", "from_name", "to_name", "original_width", "original_height",
"image_rotation": 0, "value": {"format": "rle", "rle", "brushlabels": [class name]}}.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ..fsutil import atomic_path, read_regular

MAX_TASK_BYTES = 1 << 30

SIZES = (3, 4, 8, 16)  # run-length field widths
WORD = 8


def _chunk(length: int, value: int) -> str:
    """One repeat chunk (length ≤ 2^16) as bits."""
    for index, bits in enumerate(SIZES):
        if length <= 1 << bits:
            return f"1{index:02b}{length - 1:0{bits}b}{value:08b}"
    raise ValueError(f"a run of {length} values does not fit one chunk")


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's RLE of a bool mask [H, W] (see the module docstring)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    n = flat.size * 4
    edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    bits = [f"{n:032b}", f"{WORD - 1:05b}", *(f"{s - 1:04b}" for s in SIZES)]
    limit = 1 << SIZES[-1]
    for a, b in itertools.pairwise(edges.tolist()):
        value, length = (255 if flat[a] else 0), int(b - a) * 4
        while length > limit:
            bits.append(_chunk(limit, value))
            length -= limit
        bits.append(_chunk(length, value))
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode("ascii"), dtype=np.uint8) - 48).tolist()


def task(
    labels: np.ndarray,
    classes: tuple[str, ...],
    reference: str,
    *,
    from_name: str = "tag",
    to_name: str = "image",
    model_version: str = "segcli",
) -> dict[str, Any]:
    """The pre-annotated task of a label map [H, W]; `reference` is what Label Studio loads the image from."""
    h, w = labels.shape
    results = []
    for k in np.unique(labels).tolist():
        if k >= len(classes):  # a class map's ignore label: no class
            continue
        results.append({
            "id": f"c{k}", "type": "brushlabels", "from_name": from_name, "to_name": to_name,
            "original_width": int(w), "original_height": int(h), "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle(labels == k), "brushlabels": [classes[k]]},
        })  # fmt: skip
    prediction = {"model_version": model_version, "score": 1.0, "result": results}
    return {"data": {to_name: reference}, "predictions": [prediction]}


def labeling_config(
    classes: tuple[str, ...], palette: np.ndarray, *, from_name: str = "tag", to_name: str = "image"
) -> str:
    """The labeling-config XML the tasks belong to: an Image and a BrushLabels with each class's colour."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr('#{:02x}{:02x}{:02x}'.format(*palette[i]))}/>"
        for i, name in enumerate(classes)
    )
    return (
        f'<View>\n  <Image name={quoteattr(to_name)} value={quoteattr("$" + to_name)} zoom="true"/>\n'
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n{labels}\n  </BrushLabels>\n"
        "</View>\n"
    )


def write_tasks(files: list[Path], out: Path) -> list[str]:
    """The tasks of the images' task files as one JSON list at `out` (atomically, one file in memory at a
    time); one problem line per file that cannot be read."""
    problems, first = [], True
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for path in files:
            try:
                doc = json.loads(read_regular(path, MAX_TASK_BYTES))
                if not isinstance(doc, dict) or "data" not in doc:
                    raise ValueError("not a Label Studio task")
                line = json.dumps(doc, allow_nan=False)  # strict JSON out, whatever the file held
            except (OSError, ValueError, RecursionError) as e:
                problems.append(f"{path}: cannot read it for the run's Label Studio tasks ({e})")
                continue
            f.write(("" if first else ",\n") + line)
            first = False
        f.write("]\n")
    return problems
