"""`segcli train`'s RUN/report.html: the loss, learning-rate and validation curves from RUN/log.jsonl, the
per-class IoU of the latest validation, and sample predictions next to their labels (RUN/report/).

Rewritten after every validation and when the run ends, from the log (so a resumed run's report is the
whole run's); static like the other reports: no scripts, no network, names escaped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..fsutil import atomic_write_bytes
from ..loading.classes import ClassSet
from .gallery import thumb_size

FOLDER = "report"  # RUN/report/: the samples' thumbnails
SAMPLES = 6  # validation images shown
UNLABELLED = (40, 40, 40)  # the ignore index in label thumbnails
LOSS_TERMS = ("total", "decode", "aux")


@dataclass
class Sample:
    """One validation image, its label and the prediction (index arrays at the image's size)."""

    name: str
    image: np.ndarray  # [H, W, 3] uint8
    label: np.ndarray  # [H, W] class indices, `ignore` where unlabelled
    pred: np.ndarray  # [H, W] class indices
    miou: float | None = None


def _encode(array: np.ndarray, kind: str) -> bytes:
    """JPEG for the image, PNG for the index pictures (exact colours)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(
        buf, format="JPEG" if kind == "image" else "PNG", **({"quality": 85} if kind == "image" else {})
    )
    return buf.getvalue()


def _small(sample: Sample, palette: np.ndarray, ignore: int) -> dict[str, np.ndarray]:
    """image / label / prediction as thumbnails (gallery.thumb_size) (indices resized by nearest)."""
    size = thumb_size(*sample.label.shape)
    out = {"image": np.asarray(Image.fromarray(sample.image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))}
    table = np.concatenate([palette, np.array([UNLABELLED], dtype=np.uint8)])
    for kind, idx in (("label", sample.label), ("pred", sample.pred)):
        small = np.asarray(Image.fromarray(idx.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
        out[kind] = table[np.where((small >= 0) & (small < len(palette)) & (small != ignore), small, len(palette))]
    return out


def save_samples(run: Path, samples: list[Sample], classes: ClassSet, ignore: int) -> list[dict[str, Any]]:
    """The samples' thumbnails in RUN/report/ (replaced atomically); what the page shows of each."""
    folder = run / FOLDER
    folder.mkdir(exist_ok=True)
    shown = []
    for n, sample in enumerate(samples[:SAMPLES]):
        files = {}
        for kind, array in _small(sample, classes.palette_array, ignore).items():
            name = f"sample-{n}-{kind}.{'jpg' if kind == 'image' else 'png'}"
            atomic_write_bytes(folder / name, _encode(array, kind))
            files[kind] = f"{FOLDER}/{name}"
        shown.append({"name": sample.name, "miou": sample.miou, **files})
    return shown


def _curves(records: list[dict[str, Any]]) -> dict[str, str | None]:
    from . import charts

    steps = [r for r in records if "total" in r]
    vals = [r for r in records if "val_mIoU" in r]
    loss = {t: ([r["iter"] for r in steps if t in r], [r[t] for r in steps if t in r]) for t in LOSS_TERMS}
    loss = {t: xy for t, xy in loss.items() if xy[0]}
    return {
        "loss_chart": charts.lines(loss, title="Training loss", xlabel="iteration", ylabel="loss", salt="loss")
        if steps
        else None,
        "lr_chart": charts.lines(
            {"lr": ([r["iter"] for r in steps], [r["lr"] for r in steps])},
            title="Learning rate (base group)", xlabel="iteration", ylabel="lr", salt="lr",
        )
        if steps
        else None,
        "val_chart": charts.lines(
            {"mIoU": ([r["iter"] for r in vals], [r["val_mIoU"] for r in vals]),
             "aAcc": ([r["iter"] for r in vals], [r["val_aAcc"] for r in vals])},
            title="Validation", xlabel="iteration", ylabel="", percent=True, salt="val",
        )
        if vals
        else None,
    }  # fmt: skip


def _per_class(records: list[dict[str, Any]], classes: ClassSet) -> str | None:
    from . import charts

    last = next((r for r in reversed(records) if r.get("val_IoU") is not None), None)
    if last is None:
        return None
    rows = [(i, v) for i, v in enumerate(last["val_IoU"]) if v is not None]
    rows.sort(key=lambda t: (-t[1], t[0]))
    return charts.bars(
        [classes.classes[i] for i, _ in rows],
        [v for _, v in rows],
        title=f"IoU per class at iteration {last['iter']}, best first",
        xlabel="IoU",
        colors=[classes.palette[i] for i, _ in rows],
        percent=True,
        salt="iou",
    )


def write(
    run: Path,
    records: list[dict[str, Any]],
    classes: ClassSet,
    about: dict[str, Any],
    samples: list[dict[str, Any]],
) -> Path:
    """RUN/report.html from the log's records; `about`: the run's settings; `samples`: save_samples'."""
    from .html import render

    vals = [r for r in records if "val_mIoU" in r]
    best = max(vals, key=lambda r: r["val_mIoU"], default=None)
    steps = [r for r in records if "total" in r]
    html = render(
        "train.html",
        title=f"segcli train — {run.name or run}",
        run=str(run),
        iteration=max((r["iter"] for r in records), default=0),
        total=about.get("iters"),
        best=best,
        last_loss=steps[-1] if steps else None,
        about=[(k, str(v)) for k, v in about.items()],
        classes=len(classes.classes),
        samples=samples,
        per_class_chart=_per_class(records, classes),
        **_curves(records),
    )
    path = run / "report.html"
    atomic_write_bytes(path, html.encode("utf-8"))
    return path
