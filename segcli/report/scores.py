"""`segcli evaluate --report FILE.html`: per-class IoU and accuracy (sorted bars), the row-normalised
confusion matrix as a heat map with the largest confusions listed, the per-image mIoU histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_write_bytes

TOP_CONFUSIONS = 20


def confusions(matrix: np.ndarray, classes: list[str], top: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The largest confusions, by pixels: ground-truth class → predicted class, with the share of the
    ground-truth class's pixels it takes (ties: the larger share first)."""
    rows = matrix.sum(1, keepdims=True).astype(np.float64)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    np.fill_diagonal(share, 0.0)
    flat = [(share[i, j], int(matrix[i, j]), i, j) for i, j in zip(*np.nonzero(share), strict=True)]
    flat.sort(key=lambda t: (-t[1], -t[0], t[2], t[3]))
    return [{"gt": classes[i], "pred": classes[j], "share": s, "pixels": n} for s, n, i, j in flat[:top]]


def _sorted_bars(doc: dict[str, Any], metric: str, title: str, salt: str) -> str:
    from . import charts

    rows = sorted((r for r in doc["classes"] if r[metric] is not None), key=lambda r: (-r[metric], r["index"]))
    return charts.bars(
        [r["name"] for r in rows], [r[metric] for r in rows], title=title, xlabel=metric, percent=True, salt=salt
    )


def write(path: Path, doc: dict[str, Any], matrix: np.ndarray, pred: str | None, gt: str) -> Path:
    """The report of an evaluation (`doc`: evaluate.report's JSON; `matrix`: its confusion matrix)."""
    from . import charts
    from .html import render

    classes = [r["name"] for r in doc["classes"]]
    rows = matrix.sum(1, keepdims=True).astype(np.float64)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    per_image = [r["mIoU"] for r in doc.get("per_image") or [] if r["mIoU"] is not None]
    summary = [(k, "-" if v is None else f"{100 * v:.2f}%") for k, v in doc["summary"].items()]
    backend = doc.get("backend")
    html = render(
        "evaluate.html",
        title="segcli evaluate",
        model=(doc.get("model") or {}).get("name"),
        preset=doc.get("preset"),
        backend=backend.get("backend") if isinstance(backend, dict) else backend,
        images=doc.get("images"),
        pred=pred,
        gt=gt,
        pairs=doc["pairs"],
        failures=doc["failures"],
        num_classes=doc["num_classes"],
        ignore_index=doc["ignore_index"],
        reduce_zero_label=doc["reduce_zero_label"],
        convention=doc["convention"],
        summary=summary,
        iou_chart=_sorted_bars(doc, "IoU", "IoU per class, best first", "iou"),
        acc_chart=_sorted_bars(doc, "Acc", "Accuracy per class (recall of its ground-truth pixels)", "acc"),
        heatmap=charts.heatmap(normalised, classes, title="Confusion matrix (rows normalised)"),
        confusions=confusions(matrix, classes),
        hist=charts.histogram(per_image, title="mIoU per image", xlabel="mIoU") if per_image else None,
    )
    atomic_write_bytes(path, html.encode("utf-8"))
    return path
