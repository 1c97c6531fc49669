"""Evaluation of predicted label maps against ground truth: pairing, parallel accumulation, reports."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError, UsageError
from ..fsutil import atomic_write_bytes
from ..io.images import read_labels
from ..io.inputs import IMAGE_EXTENSIONS
from ..io.layout import RUN_FILES
from .metrics import METRICS, LabelRangeError, UnreducedLabelsError, confusion, scores

EVALUATION_SCHEMA = "segcli.evaluation/1"


@dataclass(frozen=True)
class Pair:
    key: str  # <relative folder>/<stem without suffix>
    pred: Path
    gt: Path


@dataclass
class Pairing:
    pairs: list[Pair] = field(default_factory=list)
    gt_only: list[Path] = field(default_factory=list)  # ground truth without a prediction
    pred_only: list[Path] = field(default_factory=list)  # predictions without ground truth


def label_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if f.lower().endswith(".png") and not f.startswith(".")]
    return sorted(out)


def strip_suffix(name: PurePath, suffix: str) -> str:
    """`<folder>/<stem>` with the stem suffix (e.g. `_leftImg8bit`) removed: the key pairs are matched by."""
    stem = name.name[: -len(suffix)] if suffix and name.name.endswith(suffix) else name.name
    return (name.parent / stem).as_posix()


def pair_key(path: Path, root: Path, suffix: str) -> str:
    return strip_suffix(path.relative_to(root).with_suffix(""), suffix)


def _known(key: str, gts: dict[str, Path]) -> str:
    """`key`, or — when only that has ground truth — `key` without a trailing image extension: segcli
    predict names the outputs of `x.jpg` and `x.png` in one folder `x.jpg.png` and `x.png.png`."""
    stem, dot, ext = key.rpartition(".")
    if key not in gts and dot and "/" not in ext and f".{ext.lower()}" in IMAGE_EXTENSIONS and stem in gts:
        return stem
    return key


def pair(pred_dir: Path, gt_dir: Path, gt_suffix: str = "", pred_suffix: str = "") -> Pairing:
    """Pair prediction and ground-truth PNGs by relative folder and stem (suffixes removed).

    A prediction folder written by `segcli predict` holds <stem>.png (palette) and maybe <stem>_label.png
    (the same indices): the palette PNG is used, and a _label.png alone stands in for it. Its run-level
    files (legend.png) and report folder are not predictions."""
    for name, d in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not d.is_dir():
            raise UsageError(f"{name} {d}: not a directory")
    gts = {pair_key(p, gt_dir, gt_suffix): p for p in label_files(gt_dir)}
    preds: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for p in label_files(pred_dir):
        top = p.relative_to(pred_dir).parts[0]
        if RUN_FILES.fullmatch(top) and (p.parent == pred_dir or top.lower() == "segcli-report"):
            continue
        key = _known(pair_key(p, pred_dir, pred_suffix), gts)
        if key.endswith("_label") and key not in gts:  # road_label.png of road.jpg, unless road_label has GT
            labels[_known(key[: -len("_label")], gts)] = p
        else:
            preds[key] = p
    for key, p in labels.items():
        preds.setdefault(key, p)
    result = Pairing()
    for key in sorted(gts):
        if key in preds:
            result.pairs.append(Pair(key, preds[key], gts[key]))
        else:
            result.gt_only.append(gts[key])
    result.pred_only = [preds[k] for k in sorted(set(preds) - set(gts))]
    return result


@dataclass(frozen=True)
class Settings:
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    resize_pred: str | None = None  # "nearest": resize predictions to the ground truth's size
    workers: int = 2


@dataclass
class Result:
    matrix: np.ndarray  # [K, K + 1]: rows ground truth, columns prediction, the last "no class" (`confusion`)
    pairs: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    gt_with_zero: int = 0  # ground-truth maps holding the value 0, and the ignore value: raw ADE20K annotations
    gt_with_ignore: int = 0  # have 0 ("other") and never 255, reduced ones have 255 (see `raw_ade_suspect`)

    def raw_ade_suspect(self, s: Settings) -> bool:
        """ADE20K-sized classes, no --reduce-zero-label, 0 in the ground truth and never the ignore value."""
        return s.num_classes == 150 and not s.reduce_zero_label and self.gt_with_zero > 0 and self.gt_with_ignore == 0


def pair_matrix(p: Pair, s: Settings) -> tuple[np.ndarray, bool, bool]:
    """The pair's confusion matrix, and whether its ground truth holds 0 and the ignore value."""
    gt = read_labels(p.gt)
    pred = read_labels(p.pred)
    if gt.shape != pred.shape:
        if s.resize_pred != "nearest":
            raise ImageError(
                f"{p.pred}: prediction is {pred.shape[1]}x{pred.shape[0]} but {p.gt} is {gt.shape[1]}x{gt.shape[0]}",
                hint="predict at the ground truth's size, or pass --resize-pred nearest",
            )
        pred = np.asarray(Image.fromarray(pred).resize(gt.shape[::-1], Image.Resampling.NEAREST))
    where = f"{p.gt} (with {p.pred.name})"
    cm = confusion(
        gt, pred, s.num_classes, ignore_index=s.ignore_index, reduce_zero_label=s.reduce_zero_label, where=where,
        misses=True,
    )  # fmt: skip
    return cm, bool((gt == 0).any()), bool((gt == s.ignore_index).any())


def evaluate(
    pairs: list[Pair], s: Settings, *, per_image: bool = False, progress: Callable[[bool], None] = lambda ok: None
) -> Result:
    """Sum the confusion matrices of all pairs, decoding in `s.workers` threads. A pair that cannot be read
    is recorded and skipped; ground truth in the raw ADE20K form stops everything (UnreducedLabelsError)."""
    k = s.num_classes
    result = Result(np.zeros((k, k + 1), dtype=np.int64))  # the last column: predicted "no class" (misses)
    start = time.perf_counter()

    def one(p: Pair) -> tuple[Pair, tuple[np.ndarray, bool, bool] | None, str | None]:
        try:
            return p, pair_matrix(p, s), None
        except UnreducedLabelsError:
            raise
        except (ImageError, LabelRangeError) as e:
            return p, None, str(e)

    def results() -> Iterable[tuple[Pair, tuple[np.ndarray, bool, bool] | None, str | None]]:
        with ThreadPoolExecutor(max(1, s.workers)) as pool:
            chunk = 64 * max(1, s.workers)  # bounded read-ahead: results wait in order, not all at once
            for i in range(0, len(pairs), chunk):
                yield from pool.map(one, pairs[i : i + chunk])

    for p, scored, error in results():
        if scored is None:
            result.failures.append({"pred": str(p.pred), "gt": str(p.gt), "error": error or ""})
            progress(False)
            continue
        cm, has_zero, has_ignore = scored
        result.matrix += cm
        result.pairs += 1
        result.gt_with_zero += has_zero
        result.gt_with_ignore += has_ignore
        if per_image:
            sc = scores(cm)
            result.per_image.append(
                {
                    "name": p.key,
                    "pred": str(p.pred),
                    "gt": str(p.gt),
                    "aAcc": _num(sc["aAcc"]),
                    "mIoU": _num(sc["mIoU"]),
                    "pixels": int(cm.sum()),
                }
            )
        progress(True)
    result.seconds = time.perf_counter() - start
    return result


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def warnings(result: Result, s: Settings) -> list[str]:
    """What may make the scores wrong although every pair was read (the JSON's `warnings`, said last)."""
    if not result.raw_ade_suspect(s):
        return []
    return [
        f"the ground truth holds the value 0 in {result.gt_with_zero} of {result.pairs} maps and never the ignore "
        f"value {s.ignore_index}: raw ADE20K annotations look like that (0 = other, 1..150 = classes); if these "
        "are, every score is shifted by one class — run again with --reduce-zero-label"
    ]


def report(result: Result, classes: list[str], s: Settings, convention: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON document (unrounded fractions; NaN as null)."""
    sc = scores(result.matrix, convention)
    per = sc["per_class"]
    rows = []
    for i, name in enumerate(classes):
        row: dict[str, Any] = {"index": i, "name": name}
        row.update({m: _num(per[m][i]) for m in METRICS})
        row.update(
            gt_pixels=int(sc["gt_pixels"][i]),
            pred_pixels=int(sc["pred_pixels"][i]),
            intersection=int(sc["intersection"][i]),
        )
        rows.append(row)
    return {
        "schema": EVALUATION_SCHEMA,
        "convention": convention,
        "num_classes": s.num_classes,
        "ignore_index": s.ignore_index,
        "reduce_zero_label": s.reduce_zero_label,
        **extra,
        "pairs": result.pairs,
        "summary": {key: _num(sc[key]) for key in ("aAcc", *(f"m{m}" for m in METRICS))},
        "classes": rows,
        "failures": result.failures,
        "per_image": result.per_image if result.per_image else None,
        "seconds": result.seconds,
        "pairs_per_second": result.pairs / result.seconds if result.seconds > 0 else None,
        "warnings": warnings(result, s),
    }


def write_csv(doc: dict[str, Any], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "name", *METRICS, "gt_pixels", "pred_pixels", "intersection"])
    for r in doc["classes"]:
        w.writerow(
            [
                r["index"],
                r["name"],
                *("" if r[m] is None else repr(r[m]) for m in METRICS),
                r["gt_pixels"],
                r["pred_pixels"],
                r["intersection"],
            ]
        )
    means = doc["summary"]
    w.writerow(["", "mean", *("" if means[f"m{m}"] is None else repr(means[f"m{m}"]) for m in METRICS), "", "", ""])
    w.writerow(["", "aAcc", "" if means["aAcc"] is None else repr(means["aAcc"])])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def write_confusion(matrix: np.ndarray, path: Path) -> None:
    if path.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, matrix)
        atomic_write_bytes(path, buf.getvalue())
    elif path.suffix.lower() == ".csv":
        text = "\n".join(",".join(str(int(v)) for v in row) for row in matrix) + "\n"
        atomic_write_bytes(path, text.encode())
    else:
        raise UsageError(f"--confusion {path}: use a .npy or .csv file name")


def json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
