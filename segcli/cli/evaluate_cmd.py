"""`segcli evaluate`: mIoU and friends of predictions (or of a model run on the fly) against ground truth."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..batch.request import Inference
from ..errors import EXIT_FAILED, UsageError
from .common import STATE, DebugOpt, QuietOpt, RegistryOpt, eprint, handle_errors, with_inference
from .progress import Progress
from .reporter import Reporter

if TYPE_CHECKING:
    from ..evaluation.evaluate import Pairing, Result

GtOpt = Annotated[
    Path, typer.Option(metavar="DIR", help="Ground-truth label maps (index PNGs), paired by relative path and stem.")
]
PredOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Predicted label maps (segcli predict's PNGs, or index PNGs).")
]
EvalModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="MODEL", help="Predict on the fly with this model (needs --images)."),
]
ImagesOpt = Annotated[Path | None, typer.Option(metavar="DIR", help="Images to predict on (with --model).")]
SavePredOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Keep the on-the-fly predictions here (palette PNGs).")
]
GtSuffixOpt = Annotated[
    str, typer.Option(metavar="SUFFIX", help="Stem suffix of ground-truth files, e.g. _gtFine_labelTrainIds.")
]
PredSuffixOpt = Annotated[
    str, typer.Option(metavar="SUFFIX", help="Stem suffix of prediction / image files, e.g. _leftImg8bit.")
]
ClassesOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SET|MODEL|FILE",
        help="ade20k | cityscapes | voc2012 | a registry model | a model directory | a file of names.",
    ),
]
NumClassesOpt = Annotated[
    int | None, typer.Option(metavar="K", help="Number of classes (generic names without --classes).")
]
IgnoreOpt = Annotated[int, typer.Option(metavar="V", help="Ground-truth value left out of every count.")]
ReduceZeroOpt = Annotated[
    bool, typer.Option("--reduce-zero-label", help="Ground truth 0 → ignored, k → k-1 (raw ADE20K annotations).")
]
AbsentOpt = Annotated[
    str,
    typer.Option(
        metavar="nan|zero",
        help="nan: classes absent from GT and prediction are left out of the means (mmseg); zero: they count as 0.",
    ),
]
ResizePredOpt = Annotated[
    str | None, typer.Option(metavar="nearest", help="nearest: resize predictions to the GT size instead of failing.")
]
PerImageOpt = Annotated[bool, typer.Option("--per-image", help="Add per-image aAcc / mIoU to the JSON.")]
JsonOutOpt = Annotated[
    str | None, typer.Option("--json", metavar="FILE|-", help="Write the JSON report to FILE, or - for stdout.")
]
CsvOpt = Annotated[Path | None, typer.Option("--csv", metavar="FILE", help="Per-class metrics as CSV.")]
ConfusionOpt = Annotated[
    Path | None,
    typer.Option(
        "--confusion",
        metavar="FILE",
        help="The confusion matrix (rows: ground truth, columns: prediction), .npy or .csv.",
    ),
]
ReportOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE.html",
        help="An HTML report: per-class IoU / accuracy bars, the row-normalised confusion matrix as a heat map "
        "with the top confusions, the per-image mIoU histogram (static, offline; the [report] extra).",
    ),
]
NO_OVERRIDES = Inference()  # the model's preset as it is (`with_inference` passes the options given)
WorkersOpt = Annotated[int, typer.Option(metavar="N", help="Threads decoding label maps.")]


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
            metrics = (pct(r[m]) for m in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"))
            table.add_row(r["name"], *metrics, f"{r['gt_pixels']:,}")
    m = doc["summary"]
    table.add_section()
    table.add_row("mean", *(pct(m[k]) for k in ("mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall")), "")
    Console(stderr=True, width=None if sys.stderr.isatty() else 120).print(table)
    rule = (
        "classes absent from both count as 0"
        if doc["convention"] == "zero"
        else "mmseg convention: absent classes left out"
    )
    eprint(f"aAcc {pct(m['aAcc'])}  mIoU {pct(m['mIoU'])}  mAcc {pct(m['mAcc'])}  ({doc['pairs']} pairs, {rule})")


def _check_options(
    absent: str,
    resize_pred: str | None,
    pred: Path | None,
    model: str | None,
    images: Path | None,
    gt: Path,
    save_pred: Path | None,
    num_classes: int | None,
    workers: int,
) -> None:
    from ..evaluation.metrics import CONVENTIONS
    from ..fsutil import overlap

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
    if num_classes is not None and not 1 <= num_classes <= 65536:
        raise UsageError(f"--num-classes {num_classes}: must be 1..65536")
    if not 1 <= workers <= 64:
        raise UsageError(f"--workers {workers}: must be 1..64")
    for flag, folder in (("--gt", gt), ("--images", images)):
        how = overlap(save_pred, folder) if save_pred is not None and folder is not None else None
        if how is not None:
            raise UsageError(
                f"--save-pred {save_pred} {how} {flag} {folder}: predictions would be mixed with (or overwrite) it",
                hint="keep predictions in a folder of their own, outside --gt and --images",
            )


def _check_report(path: Path) -> None:
    from ..report.html import require_report

    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--report {path}: name an .html file", hint="e.g. --report scores.html")
    require_report()


def _pairing_notes(pairing: Pairing, quiet: bool) -> None:
    for p in pairing.gt_only:
        eprint(f"segcli: error: {p}: no prediction for this ground truth")
    if pairing.pred_only and not quiet:
        eprint(
            f"segcli: note: {len(pairing.pred_only)} prediction(s) without ground truth, e.g. {pairing.pred_only[0]}"
        )


def _failures(result: Result) -> None:
    for f in result.failures:
        eprint(f"segcli: error: {f['error']}")


def _warnings(doc: dict[str, Any]) -> None:
    """Said after the table, where they are read (and in the JSON)."""
    for w in doc["warnings"]:
        eprint(f"segcli: warning: {w}")


@handle_errors
@with_inference
def evaluate(
    gt: GtOpt,
    pred: PredOpt = None,
    model: EvalModelOpt = None,
    images: ImagesOpt = None,
    save_pred: SavePredOpt = None,
    gt_suffix: GtSuffixOpt = "",
    pred_suffix: PredSuffixOpt = "",
    classes: ClassesOpt = None,
    num_classes: NumClassesOpt = None,
    ignore_index: IgnoreOpt = 255,
    reduce_zero_label: ReduceZeroOpt = False,
    absent: AbsentOpt = "nan",
    resize_pred: ResizePredOpt = None,
    per_image: PerImageOpt = False,
    json_out: JsonOutOpt = None,
    csv_out: CsvOpt = None,
    confusion_out: ConfusionOpt = None,
    report_out: ReportOutOpt = None,
    workers: WorkersOpt = 2,
    inference: Inference = NO_OVERRIDES,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Evaluate segmentation against ground truth: aAcc, mIoU, mAcc, mDice, mFscore and per-class IoU / Acc
    / Dice / F-score, from one confusion matrix over the whole dataset (mmsegmentation's IoUMetric).

    Either --pred DIR --gt DIR, or --model M --images DIR --gt DIR (predicts first, with the model's preset
    unless told otherwise). Unpaired files are listed; the exit code is 1 when some ground truth has no
    prediction or some pair could not be read."""
    from ..evaluation import evaluate as ev
    from ..evaluation import workflow as wf

    _check_options(absent, resize_pred, pred, model, images, gt, save_pred, num_classes, workers)
    if report_out is not None:
        _check_report(report_out)
    silent, suffixes = quiet or json_out == "-", wf.Suffixes(gt_suffix, pred_suffix)
    extra: dict[str, Any] = {"gt": str(gt)}
    if model is None and inference.class_map is not None:  # saved predictions are scored as they are
        raise UsageError(
            "--class-map merges the classes of predictions made here (--model with --images)",
            hint="predict with `segcli predict --class-map FILE`, then evaluate --pred that folder",
        )
    with tempfile.TemporaryDirectory(prefix="segcli-eval-") as tmp:
        if model is not None and images is not None:
            inference.check()
            pred = save_pred or Path(tmp)
            with (events := Reporter(silent)).scope:
                names, record = wf.predict_first(model, images, pred, gt, suffixes, inference, events, STATE.registry)
            extra.update(record)
        else:
            names = wf.class_names(classes, num_classes, STATE.registry)
        assert pred is not None
        extra["pred"] = None if pred == Path(tmp) else str(pred)
        pairing = wf.pairs(pred, gt, suffixes)
        _pairing_notes(pairing, quiet)
        settings = ev.Settings(len(names), ignore_index, reduce_zero_label, resize_pred, workers)
        with Progress(len(pairing.pairs), enabled=not silent) as progress:
            done = wf.score(
                pairing,
                names,
                settings,
                convention=absent,
                per_image=per_image or report_out is not None,
                extra=extra,
                progress=lambda ok: progress.advance("done" if ok else "failed"),
            )
    _failures(done.result)
    if not per_image:
        done.doc["per_image"] = None
    if not silent:
        _table(done.doc)
    wf.write_files(done, Path(json_out) if json_out not in (None, "-") else None, csv_out, confusion_out, report_out)
    if json_out == "-":
        sys.stdout.write(ev.json_text(done.doc))
    _warnings(done.doc)
    if done.result.failures or pairing.gt_only:
        raise typer.Exit(EXIT_FAILED)
