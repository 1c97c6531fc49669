"""Segmentation metrics from one confusion matrix, as mmsegmentation's IoUMetric defines them.

Counts are summed over the whole dataset in an int64 [K, K] confusion matrix (rows: ground truth, columns:
prediction); pixels whose ground truth is the ignore index are left out. From its diagonal I, row sums G
and column sums P:

    IoU = I / (P + G − I)    Acc = I / G    Dice = 2I / (P + G)    Precision = I / P    Recall = I / G
    F-score = 2 · Precision · Recall / (Precision + Recall)        aAcc = ΣI / ΣG

Conventions for classes whose ratio is 0/0 (absent from ground truth and prediction, or never hit):
`nan` (mmseg): they are NaN and the means are nanmeans over the other classes; `zero` (CSAIL / semseg
scripts): they count as 0 and the means are over all classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LabelRangeError, UnreducedLabelsError

METRICS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")
CONVENTIONS = ("nan", "zero")


def gt_lookup(num_classes: int, ignore_index: int, reduce_zero_label: bool, max_value: int) -> np.ndarray:
    """Table from raw ground-truth values to rows of the confusion matrix: 0..K-1, or K for ignored pixels,
    or -1 for values that are neither (an error). reduce_zero_label: 0 → ignored, k → k − 1."""
    lut = np.full(max_value + 1, -1, dtype=np.int64)
    values = np.arange(max_value + 1)
    mapped = np.where(values == 0, ignore_index, values - 1) if reduce_zero_label else values
    if reduce_zero_label:
        mapped = np.where(values == ignore_index, ignore_index, mapped)  # mmseg: 255 stays ignored
    lut[(mapped >= 0) & (mapped < num_classes)] = mapped[(mapped >= 0) & (mapped < num_classes)]
    lut[mapped == ignore_index] = num_classes
    return lut


def confusion(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    where: str = "",
    misses: bool = False,
) -> np.ndarray:
    """[K, K] int64 counts (rows ground truth, columns prediction) of one label-map pair; with `misses`,
    [K, K + 1]: the last column counts pixels predicted as the ignore index (a class map's ignored classes:
    no class, so a miss of the true one). Without, those pixels are left out."""
    k = num_classes
    if gt.dtype == np.uint8 and pred.dtype == np.uint8:
        # 8-bit maps: one histogram of (gt, pred) value pairs, then rows mapped by value (no per-pixel gather)
        key = (gt.astype(np.uint16) << 8) | pred
        pairs = np.bincount(key.ravel(), minlength=65536).reshape(256, 256)
        gt_values, pred_values = np.flatnonzero(pairs.sum(1)), np.flatnonzero(pairs.sum(0))
    else:
        pairs = None
        gt_values, pred_values = np.unique(gt), np.unique(pred)
    lut = gt_lookup(k, ignore_index, reduce_zero_label, max(int(gt_values.max(initial=0)), ignore_index, 255))
    bad = gt_values[lut[gt_values] < 0]
    if bad.size:
        if not reduce_zero_label and bad.tolist() == [k]:  # values 0..K: one too many, and 0 in use
            raise UnreducedLabelsError(
                f"{where}: ground-truth values run from 0 to {k} — one more than the {k} classes, the pattern of a "
                f"raw ADE20K-style annotation (0 = other)",
                hint="add --reduce-zero-label (0 → ignored, k → k-1), as mmseg's ADE20K config does",
            )
        raise LabelRangeError(
            f"{where}: ground-truth values {_show(bad)} are outside 0..{k - 1} and are not the ignore index {ignore_index}",
            hint="check --num-classes / --ignore-index / --reduce-zero-label",
        )
    outside = pred_values[(pred_values >= k) & (pred_values != ignore_index)]
    if outside.size:  # the ignore index (a class map's ignored pixels) is no class: a miss of the true class
        raise LabelRangeError(
            f"{where}: predicted values {_show(outside)} are outside 0..{k - 1}",
            hint="the predictions come from a model with other classes",
        )
    # the extra row collects ignored ground truth, the extra column predicted ignore values
    none = ignore_index >= k  # the ignore index can be predicted (column k); below k it is a class
    if pairs is not None:
        cm = np.zeros((k + 1, k + 1), dtype=np.int64)
        np.add.at(cm[:, :k], lut[gt_values], pairs[gt_values, :k])
        if none and ignore_index < 256:
            np.add.at(cm[:, k], lut[gt_values], pairs[gt_values, ignore_index])
    else:
        p = pred.astype(np.int64, copy=False)
        p = np.where(p == ignore_index, k, p) if none else p
        idx = lut[gt] * (k + 1) + p
        cm = np.bincount(idx.ravel(), minlength=(k + 1) * (k + 1)).reshape(k + 1, k + 1)
    return cm[:k] if misses else cm[:k, :k]


def _show(values: np.ndarray, n: int = 8) -> str:
    vals = [int(v) for v in values[:n]]
    return "[" + ", ".join(map(str, vals)) + (", …" if len(values) > n else "") + "]"


def scores(cm: np.ndarray, convention: str = "nan") -> dict[str, Any]:
    """Per-class metrics (arrays) and their means (`mIoU`, …) and `aAcc`, all as fractions (not %)."""
    cm = np.asarray(cm, dtype=np.int64)  # [K, K], or [K, K + 1] with misses (`confusion`)
    k = cm.shape[0]
    i = np.diag(cm[:, :k]).astype(np.float64)
    g = cm.sum(axis=1).astype(np.float64)
    p = cm[:, :k].sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = {
            "IoU": i / (p + g - i),
            "Acc": i / g,
            "Dice": 2 * i / (p + g),
            "Precision": i / p,
            "Recall": i / g,
        }
        per["Fscore"] = 2 * per["Precision"] * per["Recall"] / (per["Precision"] + per["Recall"])
        a_acc = i.sum() / g.sum() if g.sum() > 0 else float("nan")
    if convention == "zero":
        per = {k: np.nan_to_num(v, nan=0.0) for k, v in per.items()}
        means = {f"m{k}": float(v.mean()) for k, v in per.items()}
    else:
        means = {f"m{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in per.items()}
    return {
        "aAcc": float(a_acc),
        **means,
        "per_class": per,
        "gt_pixels": g.astype(np.int64),
        "pred_pixels": p.astype(np.int64),
        "intersection": i.astype(np.int64),
    }
