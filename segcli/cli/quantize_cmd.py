"""`segcli quantize`: an int8 ONNX model from a float32 one, calibrated on the user's images and checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EXIT_FAILED, UsageError
from .common import (
    STATE,
    CropOpt,
    DebugOpt,
    JsonOpt,
    ModeOpt,
    PresetOpt,
    QuietOpt,
    RegistryOpt,
    ResizeOpt,
    StrideOpt,
    eprint,
    handle_errors,
)
from .evaluate_cmd import IgnoreOpt, ReduceZeroOpt
from .export_cmd import ModelArg, check_out
from .progress import Activity

CalibOpt = Annotated[
    Path,
    typer.Option("--calib", metavar="DIR", help="Images like those the model will segment (searched recursively)."),
]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", metavar="FILE", help="The int8 model (.onnx; FILE.json beside it).")
]
GtOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Ground-truth PNGs of the --calib images (same relative folder and stem): mIoU."),
]
GtSuffixOpt = Annotated[str, typer.Option(metavar="SUFFIX", help="Stem suffix of the ground-truth files.")]
CalibImagesOpt = Annotated[int, typer.Option(metavar="N", help="Images calibrated on (spread over the folder).")]
CheckImagesOpt = Annotated[
    int, typer.Option(metavar="N", help="Images compared on: the others of the folder, else the calibration images.")
]
AgreementOpt = Annotated[
    float, typer.Option(metavar="F", help="Least share of pixels labelled as float32 labels them (0..1).")
]
DropOpt = Annotated[float, typer.Option(metavar="POINTS", help="Most mIoU points lost against float32 (with --gt).")]


def _check_flags(out: Path, calib: Path, calib_images: int, check_images: int, agree: float, drop: float) -> None:
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out}: the int8 model is an ONNX file", hint="give a name ending in .onnx")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory", hint="give a file name, e.g. model-int8.onnx")
    if not calib.is_dir():
        raise UsageError(f"--calib {calib}: not a directory", hint="a folder of images like those you will segment")
    if calib_images < 1 or check_images < 1:
        raise UsageError("--calib-images and --check-images take 1 or more")
    if not 0.0 <= agree <= 1.0:
        raise UsageError(f"--min-agreement {agree}: give a share between 0 and 1, e.g. 0.95")
    if not drop >= 0.0:
        raise UsageError(f"--max-miou-drop {drop}: give 0 or more mIoU points, e.g. 0.5")


@handle_errors
def quantize(
    model: ModelArg,
    calib: CalibOpt,
    out: OutOpt,
    gt: GtOpt = None,
    gt_suffix: GtSuffixOpt = "",
    calib_images: CalibImagesOpt = 32,
    check_images: CheckImagesOpt = 32,
    min_agreement: AgreementOpt = 0.95,
    max_miou_drop: DropOpt = 0.5,
    ignore_index: IgnoreOpt = 255,
    reduce_zero_label: ReduceZeroOpt = False,
    preset: PresetOpt = None,
    resize: ResizeOpt = None,
    mode: ModeOpt = None,
    crop: CropOpt = None,
    stride: StrideOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Quantize a model to int8 (post-training, static: its convolutions and linears, in onnxruntime's QDQ
    form). The activation ranges come from the views the preset makes of the --calib images; the int8
    model is then compared with float32 (label agreement, speed, and with --gt the mIoU) and written only
    if it keeps --min-agreement and loses at most --max-miou-drop. Static at the preset's view size where
    its views have one size (slide windows, an HxW resize), else any size (not Swin). Run it with
    `segcli predict -m OUT.onnx` and the same preset options."""
    from ..api import Segmenter
    from ..engine.presets import check
    from ..io.inputs import IMAGE_EXTENSIONS, discover
    from ..quantization.check import ground_truth
    from ..quantization.options import QuantizeOptions
    from ..quantization.workflow import quantize as run

    _check_flags(out, calib, calib_images, check_images, min_agreement, max_miou_drop)
    overrides = {"resize": resize, "mode": mode, "crop": crop, "stride": stride}
    check(preset, **overrides)
    opts = QuantizeOptions(calib_images, check_images, min_agreement, max_miou_drop, ignore_index, reduce_zero_label)
    seg = Segmenter.from_pretrained(model, registry=STATE.registry)
    check_out(out, seg, directory=False)
    params = seg.params(preset, **overrides)
    images = [it.path for it in discover([str(calib)], extensions=IMAGE_EXTENSIONS).items]
    truth = ground_truth(images, calib, gt, gt_suffix)
    say = (lambda m: None) if quiet else (lambda m: eprint(f"segcli: {m}"))
    with Activity("quantizing", not quiet):
        result = run(seg, params, images, out, opts, gt=truth, log=say)
    for line in result.comparison.skipped:
        eprint(f"segcli: skipped {line}")
    doc = result.to_json()
    print(json.dumps(doc) if json_out else _summary(doc))
    if result.refused:
        eprint(f"segcli: error: {result.refused}; {out} not written")
        raise typer.Exit(EXIT_FAILED)
    if not quiet:
        eprint(f"segcli: wrote {out} (+ {result.sidecar.name}); run it with segcli predict -m {out}")


def _summary(doc: dict) -> str:
    c = doc["check"]
    s = c["seconds_per_image"]
    lines = [
        f"labels agree   {c['label_agreement'] * 100:.2f}% on {c['images']} "
        f"{'held-out' if c['held_out'] else 'calibration'} images",
        f"seconds/image  float32 {s['float32']:.3f}  int8 {s['int8']:.3f}  ({c['speedup']:.2f}x)",
    ]
    if m := c["miou"]:
        lines.append(f"mIoU           float32 {m['float32']:.2f}  int8 {m['int8']:.2f}  drop {m['drop']:.2f} points")
    return "\n".join(lines)
