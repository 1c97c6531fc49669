"""`segcli evaluate`'s workflow: predict with a model first (optional) → pair → score → the report files.

`class_names` resolves `--classes`; `predict_first` runs `segcli.batch.predict` over the images that have
ground truth; `pairs` pairs the prediction and ground-truth folders; `score` sums one confusion matrix over
the pairs; `write_files` writes the JSON, CSV, confusion matrix and HTML report asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch.request import Events, Inference
from ..errors import UsageError
from . import evaluate as ev


@dataclass(frozen=True)
class Suffixes:
    """Stem suffixes of the ground-truth and of the prediction / image files (Cityscapes-style names)."""

    gt: str = ""
    pred: str = ""


@dataclass
class Evaluation:
    pairing: ev.Pairing
    result: ev.Result
    doc: dict[str, Any]  # the JSON report


def class_names(spec: str | None, num_classes: int | None, registry: str | Path | None = None) -> list[str]:
    """The class names of `--classes` (a bundled set, a registry model, a model directory or a file of
    names), or `num_classes` generic ones."""
    from ..loading.classes import KNOWN_SETS, known_set, read_class_names
    from ..loading.registry import load_registry

    if spec is None:
        if num_classes is None:
            raise UsageError(
                "say what the classes are", hint="--classes ade20k | cityscapes | MODEL | FILE, or --num-classes N"
            )
        return [f"class_{i}" for i in range(num_classes)]
    if spec in KNOWN_SETS:
        names = list(known_set(spec).classes)
    elif spec in (specs := load_registry(registry)):
        names = list(specs[spec].info().classes)
    elif Path(spec).is_file():
        names = list(read_class_names(Path(spec)))
    elif (Path(spec) / "config.json").is_file():  # a model directory: its classes, without loading weights
        from ..loading.info import Origin
        from ..loading.sources import read_info

        pre = Path(spec) / "preprocessor_config.json"
        info = read_info(Path(spec) / "config.json", pre if pre.is_file() else None, spec, Origin("local"))
        names = list(info.classes)
    else:
        raise UsageError(
            f"--classes {spec!r}: not a class set ({', '.join(KNOWN_SETS)}), a registry model, a model directory "
            "or a file"
        )
    if num_classes is not None and num_classes != len(names):
        raise UsageError(f"--num-classes {num_classes} but --classes {spec} has {len(names)} names")
    return names


def predict_first(
    model: str,
    images: Path,
    out: Path,
    gt: Path,
    suffixes: Suffixes,
    inference: Inference,
    events: Events,
    registry: str | Path | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Predict the images of `images` that have ground truth in `gt` into `out` (palette PNGs);
    (the model's class names, what the report records of the prediction)."""
    from ..batch import predict
    from ..io.inputs import IMAGE_EXTENSIONS, discover

    if not images.is_dir():
        raise UsageError(f"--images {images}: not a directory")
    found = discover([str(images)], extensions=IMAGE_EXTENSIONS)
    gt_keys = {ev.pair_key(p, gt, suffixes.gt) for p in ev.label_files(gt)}
    found.items = [it for it in found.items if ev.strip_suffix(it.rel.with_suffix(""), suffixes.pred) in gt_keys]
    if not found.items:
        raise UsageError(f"no image in {images} has ground truth in {gt}", hint="see --gt-suffix / --pred-suffix")
    run = predict(
        [str(images)], model, out, events=events, inference=inference, save="none", registry=registry, found=found
    )
    assert run.run is not None
    record = {
        "model": run.run.model,
        "preset": run.run.preset,
        "inference": run.run.inference,
        "images": str(images),
        "backend": run.backend,
    }
    return list(run.classes), record


def pairs(pred: Path, gt: Path, suffixes: Suffixes = Suffixes()) -> ev.Pairing:
    """The prediction / ground-truth pairs of two folders (and what stayed unpaired); none at all is a usage
    error."""
    pairing = ev.pair(pred, gt, suffixes.gt, suffixes.pred)
    if not pairing.pairs:
        raise UsageError(
            f"no prediction / ground-truth pairs in {pred} and {gt}",
            hint="pairs share relative folder and stem; see --gt-suffix / --pred-suffix",
        )
    return pairing


def score(
    pairing: ev.Pairing,
    names: list[str],
    settings: ev.Settings,
    *,
    convention: str = "nan",
    per_image: bool = False,
    extra: dict[str, Any] | None = None,
    progress: Callable[[bool], None] = lambda ok: None,
) -> Evaluation:
    """Score the pairs (mmseg's IoUMetric: one confusion matrix over the whole set); `extra` goes into the
    JSON report."""
    result = ev.evaluate(pairing.pairs, settings, per_image=per_image, progress=progress)
    unpaired = {
        "gt_without_prediction": [str(p) for p in pairing.gt_only],
        "prediction_without_gt": [str(p) for p in pairing.pred_only],
    }
    doc = ev.report(result, names, settings, convention, {**(extra or {}), "unpaired": unpaired})
    return Evaluation(pairing, result, doc)


def write_files(
    e: Evaluation, json_file: Path | None, csv_file: Path | None, confusion: Path | None, html: Path | None
) -> None:
    """The report files asked for, each written atomically."""
    from ..fsutil import atomic_write_bytes

    if html:
        from ..report import scores

        square = e.result.matrix[:, : e.result.matrix.shape[0]]  # pixels predicted as no class: in the rows' totals
        scores.write(html, {**e.doc, "per_image": e.result.per_image}, square, e.doc.get("pred"), e.doc["gt"])
    if json_file:
        atomic_write_bytes(json_file, ev.json_text(e.doc).encode("utf-8"))
    if csv_file:
        ev.write_csv(e.doc, csv_file)
    if confusion:
        ev.write_confusion(e.result.matrix[:, : e.result.matrix.shape[0]], confusion)
