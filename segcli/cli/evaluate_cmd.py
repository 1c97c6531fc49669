"""`segcli evaluate`: mIoU and friends of predictions (or of a model run on the fly) against ground truth."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..batch.request import Events, Inference
from ..errors import EXIT_FAILED, UsageError
from .common import STATE, DebugOpt, QuietOpt, RegistryOpt, eprint, handle_errors, with_inference
from .progress import Progress

if TYPE_CHECKING:
    from ..batch import ImageRecord
    from ..evaluation.evaluate import Pairing

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


def _classes(spec: str | None, num_classes: int | None) -> list[str]:
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
    elif spec in (registry := load_registry(STATE.registry)):
        names = list(registry[spec].info().classes)
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


class _Progress(Events):
    """The on-the-fly prediction's progress and error lines."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.progress = quiet, Progress(0, enabled=False)

    def say(self, level: str, message: str) -> None:
        if level != "info":
            self.progress.print_error(f"segcli: {level}: {message}")
        elif not self.quiet:
            eprint(f"segcli: {message}")

    def started(self, total: int) -> None:
        self.progress = Progress(total, enabled=not self.quiet).__enter__()

    def record(self, record: ImageRecord) -> None:
        if record.status == "failed":
            self.progress.print_error(f"segcli: error: {record.error}")
        self.progress.advance(record.status)


def _predict(model: str, images: Path, out: Path, inference: Inference, pairs: tuple[Path, str, str], quiet: bool):
    """Predict the images that have ground truth (`pairs`: its folder and both suffixes) into `out`; (class
    names, JSON fields for the report)."""
    from .. import batch
    from ..evaluation import evaluate as ev
    from ..io.inputs import discover

    if not images.is_dir():
        raise UsageError(f"--images {images}: not a directory")
    gt, gt_suffix, pred_suffix = pairs
    found = discover([str(images)])
    gt_keys = {ev.pair_key(p, gt, gt_suffix) for p in ev.label_files(gt)}
    found.items = [it for it in found.items if ev.strip_suffix(it.rel.with_suffix(""), pred_suffix) in gt_keys]
    if not found.items:
        raise UsageError(f"no image in {images} has ground truth in {gt}", hint="see --gt-suffix / --pred-suffix")
    events = _Progress(quiet)
    try:
        run = batch.predict(
            [str(images)],
            model,
            out,
            events=events,
            inference=inference,
            save="none",
            registry=STATE.registry,
            found=found,
        )
    finally:
        events.progress.__exit__()
    assert run.run is not None
    record = {"model": run.run.model, "inference": run.run.inference, "images": str(images), "backend": run.backend}
    return run.classes, record


def _pairing(pred: Path, gt: Path, gt_suffix: str, pred_suffix: str, quiet: bool) -> Pairing:
    from ..evaluation import evaluate as ev

    pairing = ev.pair(pred, gt, gt_suffix, pred_suffix)
    for p in pairing.gt_only:
        eprint(f"segcli: error: {p}: no prediction for this ground truth")
    if pairing.pred_only and not quiet:
        eprint(
            f"segcli: note: {len(pairing.pred_only)} prediction(s) without ground truth, e.g. {pairing.pred_only[0]}"
        )
    if not pairing.pairs:
        raise UsageError(
            f"no prediction / ground-truth pairs in {pred} and {gt}",
            hint="pairs share relative folder and stem; see --gt-suffix / --pred-suffix",
        )
    return pairing


def _write_reports(
    doc: dict[str, Any],
    result: Any,
    json_out: str | None,
    csv_out: Path | None,
    confusion_out: Path | None,
    report_out: Path | None,
) -> None:
    from ..evaluation import evaluate as ev
    from ..fsutil import atomic_write_bytes

    matrix = result.matrix
    if report_out:
        from ..report import scores

        scores.write(report_out, {**doc, "per_image": result.per_image}, matrix, doc.get("pred"), doc["gt"])
    if json_out and json_out != "-":
        atomic_write_bytes(Path(json_out), ev.json_text(doc).encode("utf-8"))
    if csv_out:
        ev.write_csv(doc, csv_out)
    if confusion_out:
        ev.write_confusion(matrix, confusion_out)
    if json_out == "-":
        sys.stdout.write(ev.json_text(doc))


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


def _raw_ade_warning(result: Any, ignore_index: int) -> None:
    eprint(
        f"segcli: warning: the ground truth holds the value 0 in {result.gt_with_zero} of {result.pairs} maps and "
        f"never the ignore value {ignore_index}: raw ADE20K annotations look like that (0 = other, 1..150 = "
        "classes); if these are, the scores above are shifted by one class: add --reduce-zero-label"
    )


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

    _check_options(absent, resize_pred, pred, model, images, gt, save_pred, num_classes, workers)
    if report_out is not None:
        _check_report(report_out)
    silent = quiet or json_out == "-"
    extra: dict[str, Any] = {"gt": str(gt)}
    tmp: Path | None = None
    try:
        if model is not None and images is not None:
            inference.check()
            tmp = None if save_pred else Path(tempfile.mkdtemp(prefix="segcli-eval-"))
            pred = save_pred or tmp
            assert pred is not None
            names, extra_model = _predict(model, images, pred, inference, (gt, gt_suffix, pred_suffix), silent)
            extra.update(extra_model)
        else:
            names = _classes(classes, num_classes)
        assert pred is not None
        extra["pred"] = str(pred) if tmp is None else None
        pairing = _pairing(pred, gt, gt_suffix, pred_suffix, quiet)
        settings = ev.Settings(len(names), ignore_index, reduce_zero_label, resize_pred, workers)
        with Progress(len(pairing.pairs), enabled=not silent) as progress:
            result = ev.evaluate(
                pairing.pairs,
                settings,
                per_image=per_image or report_out is not None,
                progress=lambda ok: progress.advance("done" if ok else "failed"),
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in result.failures:
        eprint(f"segcli: error: {f['error']}")
    if result.raw_ade_suspect(settings):
        _raw_ade_warning(result, ignore_index)
    extra["unpaired"] = {
        "gt_without_prediction": [str(p) for p in pairing.gt_only],
        "prediction_without_gt": [str(p) for p in pairing.pred_only],
    }
    doc = ev.report(result, names, settings, absent, extra)
    if not per_image:
        doc["per_image"] = None
    if not silent:
        _table(doc)
    _write_reports(doc, result, json_out, csv_out, confusion_out, report_out)
    if result.failures or pairing.gt_only:
        raise typer.Exit(EXIT_FAILED)
