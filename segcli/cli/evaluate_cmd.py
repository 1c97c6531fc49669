"""`segcli evaluate`: mIoU and friends of predictions (or of a model run on the fly) against ground truth."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import EXIT_FAILED, UsageError
from .common import STATE, DeviceOpt, DtypeOpt, PresetOpt, QuietOpt, eprint, handle_errors
from .progress import Progress


def _classes(spec: str | None, num_classes: int | None) -> list[str]:
    from ..classes import KNOWN_SETS, known_set
    from ..convert import read_classes
    from ..registry import load_registry

    if spec is None:
        if num_classes is None:
            raise UsageError("say what the classes are", hint="--classes ade20k | cityscapes | MODEL | FILE, or --num-classes N")
        return [f"class_{i}" for i in range(num_classes)]
    if spec in KNOWN_SETS:
        names = list(known_set(spec).classes)
    elif spec in (registry := load_registry(STATE.registry)):
        names = list(registry[spec].info().classes)
    elif Path(spec).is_file():
        names = list(read_classes(Path(spec)))
    else:
        raise UsageError(f"--classes {spec!r}: not a class set (ade20k, cityscapes), a registry model or a file")
    if num_classes is not None and num_classes != len(names):
        raise UsageError(f"--num-classes {num_classes} but --classes {spec} has {len(names)} names")
    return names


def _table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    table = Table(header_style="bold")
    for col in ("class", "IoU", "Acc", "Dice", "Fscore", "Precision", "Recall", "GT pixels"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in doc["classes"]:
        if r["gt_pixels"] or r["pred_pixels"]:
            table.add_row(r["name"], *(pct(r[m]) for m in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")),
                          f"{r['gt_pixels']:,}")  # fmt: skip
    m = doc["summary"]
    table.add_section()
    table.add_row("mean", *(pct(m[k]) for k in ("mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall")), "")
    Console(stderr=True, width=None if sys.stderr.isatty() else 120).print(table)
    eprint(f"aAcc {pct(m['aAcc'])}  mIoU {pct(m['mIoU'])}  mAcc {pct(m['mAcc'])}  ({doc['pairs']} pairs, "
           f"{'classes absent from both count as 0' if doc['convention'] == 'zero' else 'mmseg convention: absent classes left out'})")  # fmt: skip


@handle_errors
def evaluate(
    gt: Annotated[Path, typer.Option(help="Ground-truth label maps (index PNGs), paired by relative path and stem.")],
    pred: Annotated[Path | None, typer.Option(help="Predicted label maps (segcli predict's PNGs, or index PNGs).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Predict on the fly with this model (needs --images).")] = None,
    images: Annotated[Path | None, typer.Option(help="Images to predict on (with --model).")] = None,
    save_pred: Annotated[Path | None, typer.Option(help="Keep the on-the-fly predictions here (palette PNGs).")] = None,
    gt_suffix: Annotated[str, typer.Option(help="Stem suffix of ground-truth files, e.g. _gtFine_labelTrainIds.")] = "",
    pred_suffix: Annotated[str, typer.Option(help="Stem suffix of prediction / image files, e.g. _leftImg8bit.")] = "",
    classes: Annotated[str | None, typer.Option(help="ade20k | cityscapes | a registry model | a file of names.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes (generic names without --classes).")] = None,
    ignore_index: Annotated[int, typer.Option(help="Ground-truth value left out of every count.")] = 255,
    reduce_zero_label: Annotated[
        bool, typer.Option("--reduce-zero-label", help="Ground truth 0 → ignored, k → k-1 (raw ADE20K annotations).")
    ] = False,
    absent: Annotated[
        str, typer.Option(help="nan: classes absent from GT and prediction are left out of the means (mmseg); zero: they count as 0.")
    ] = "nan",
    resize_pred: Annotated[str | None, typer.Option(help="nearest: resize predictions to the GT size instead of failing.")] = None,
    per_image: Annotated[bool, typer.Option("--per-image", help="Add per-image aAcc / mIoU to the JSON.")] = False,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the JSON report to FILE, or - for stdout.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Per-class metrics as CSV.")] = None,
    confusion_out: Annotated[Path | None, typer.Option("--confusion", help="The confusion matrix, .npy or .csv.")] = None,
    workers: Annotated[int, typer.Option(help="Threads decoding label maps.")] = 2,
    preset: PresetOpt = None,
    resize: Annotated[str | None, typer.Option(help="With --model: none | SHORT[:LONG] | HxW.")] = None,
    mode: Annotated[str | None, typer.Option(help="With --model: whole | slide.")] = None,
    crop: Annotated[str | None, typer.Option(help="With --model: slide window size.")] = None,
    stride: Annotated[str | None, typer.Option(help="With --model: slide window stride.")] = None,
    scales: Annotated[str | None, typer.Option(help="With --model: ratios, e.g. 0.5,1,1.5.")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="With --model: add flipped views.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
) -> None:
    """Evaluate segmentation against ground truth: aAcc, mIoU, mAcc, mDice, mFscore and per-class IoU / Acc
    / Dice / F-score, from one confusion matrix over the whole dataset (mmsegmentation's IoUMetric).

    Either --pred DIR --gt DIR, or --model M --images DIR --gt DIR (predicts first, with the model's preset
    unless told otherwise). Unpaired files are listed; the exit code is 1 when some ground truth has no
    prediction or some pair could not be read."""
    from .. import evaluate as ev
    from ..metrics import CONVENTIONS

    if absent not in CONVENTIONS:
        raise UsageError(f"--absent {absent!r}", hint="nan (mmseg) or zero (CSAIL / semseg)")
    if resize_pred not in (None, "nearest"):
        raise UsageError(f"--resize-pred {resize_pred!r}", hint="only nearest (labels cannot be interpolated)")
    if (pred is None) == (model is None):
        raise UsageError("give either --pred DIR or --model M --images DIR (with --gt DIR)")
    if model is not None and images is None:
        raise UsageError("--model needs --images DIR")
    if not gt.is_dir():
        raise UsageError(f"--gt {gt}: not a directory")
    to_stdout = json_out == "-"
    extra: dict[str, Any] = {"gt": str(gt)}
    tmp = None
    if model is not None:
        pred, names, extra_model = _predict(model, images, gt, save_pred, gt_suffix, pred_suffix, preset, device, dtype,
                                            quiet or to_stdout, dict(resize=resize, mode=mode, crop=crop, stride=stride,
                                                                     scales=scales, flip=flip))  # fmt: skip
        tmp = None if save_pred else pred
        extra.update(extra_model)
        pred_suffix_used = pred_suffix
    else:
        names = _classes(classes, num_classes)
        pred_suffix_used = pred_suffix
    extra["pred"] = str(pred) if tmp is None else None
    pairing = ev.pair(pred, gt, gt_suffix, pred_suffix_used)
    for p in pairing.gt_only:
        eprint(f"segcli: error: {p}: no prediction for this ground truth")
    if pairing.pred_only and not quiet:
        eprint(f"segcli: note: {len(pairing.pred_only)} prediction(s) without ground truth, e.g. {pairing.pred_only[0]}")
    if not pairing.pairs:
        raise UsageError(f"no prediction / ground-truth pairs in {pred} and {gt}",
                         hint="pairs share relative folder and stem; see --gt-suffix / --pred-suffix")  # fmt: skip
    settings = ev.Settings(len(names), ignore_index, reduce_zero_label, resize_pred, workers)
    progress = Progress(len(pairing.pairs), enabled=not (quiet or to_stdout))
    with progress:
        result = ev.evaluate(pairing.pairs, settings, per_image=per_image,
                             progress=lambda ok: progress.advance("done" if ok else "failed"))  # fmt: skip
    for f in result.failures:
        eprint(f"segcli: error: {f['error']}")
    extra["unpaired"] = {"gt_without_prediction": [str(p) for p in pairing.gt_only],
                         "prediction_without_gt": [str(p) for p in pairing.pred_only]}  # fmt: skip
    doc = ev.report(result, names, settings, absent, extra)
    if tmp is not None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if not (quiet or to_stdout):
        _table(doc)
    if json_out and not to_stdout:
        from ..outputs import atomic_write_bytes

        atomic_write_bytes(Path(json_out), ev.json_text(doc).encode("utf-8"))
    if csv_out:
        ev.write_csv(doc, csv_out)
    if confusion_out:
        ev.write_confusion(result.matrix, confusion_out)
    if to_stdout:
        sys.stdout.write(ev.json_text(doc))
    if result.failures or pairing.gt_only:
        raise typer.Exit(EXIT_FAILED)


def _predict(model, images, gt, save_pred, gt_suffix, pred_suffix, preset, device, dtype, quiet, overrides):
    """Predict the images that have ground truth into save_pred (or a temporary folder)."""
    from .. import batch
    from .. import evaluate as ev
    from ..api import Segmenter
    from ..inputs import discover
    from ..presets import check

    check(preset, **overrides)
    if not images.is_dir():
        raise UsageError(f"--images {images}: not a directory")
    items = discover([str(images)]).items
    gt_keys = {ev._key(p, gt, gt_suffix) for p in ev._pngs(gt)}

    def key(name: Path) -> str:
        stem = name.name[: -len(pred_suffix)] if pred_suffix and name.name.endswith(pred_suffix) else name.name
        return (name.parent / stem).as_posix()

    wanted = [it for it in items if key(it.name) in gt_keys]
    if not wanted:
        raise UsageError(f"no image in {images} has ground truth in {gt}", hint="see --gt-suffix / --pred-suffix")
    seg = Segmenter.from_pretrained(model, device=device, dtype=dtype, registry=STATE.registry)
    params = seg.params(preset, **overrides)
    out = save_pred or Path(tempfile.mkdtemp(prefix="segcli-eval-"))
    progress = Progress(len(wanted), enabled=not quiet)
    with progress:
        run = batch.run(seg, wanted, params, batch.Options(out, frozenset()), report=lambda r: progress.advance(r["status"]))
    for f in run.failures:
        eprint(f"segcli: error: {f['error']}")
    return out, seg.classes, {"model": batch.model_record(seg), "inference": params.to_json(), "images": str(images)}
