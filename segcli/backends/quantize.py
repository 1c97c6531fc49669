"""`segcli quantize`: post-training static int8 quantization of a model's convolutions and linears.

The network is exported to ONNX (`export.export_onnx`: static at the preset's one view size, else dynamic),
then quantized by onnxruntime in the QDQ form (weights int8 per output channel, activations uint8 per
tensor, ranges by min / max over the calibration views). The calibration views are exactly what the
network receives when the preset runs on the calibration images (windows, resized images), recorded
one image at a time without running the network. The result is an exported ONNX model with its sidecar:
`--model OUT.onnx` runs it like any export.

Chosen by measurement (benchmarks/int8.py): on a 2-core AVX512-VNNI EPYC, UPerNet-ConvNeXt-T at 512²,
onnxruntime runs the QDQ model 2.9× faster than eager float32; OpenVINO running the same QDQ file was 1.8×.

Before anything is written the quantized model is compared with the float32 network on check images (those
of the folder not used for calibration, else the calibration images, as recorded): the share of pixels
labelled alike, seconds per image, and with ground truth each model's mIoU. A model below `min_agreement`
or losing more than `max_miou_drop` points of mIoU is not written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.presets import Params
from ..errors import SegcliError, UsageError, first_line
from ..io.images import load_image, read_labels
from ..model import Segmentor
from .base import BackendError, Wrapped, share_text
from .onnx_session import onnxruntime, require_exporter
from .ort import dynamic_ok

OPS = ("Conv", "MatMul", "Gemm")  # what is quantized; everything else runs in float32 between QDQ pairs


@dataclass(frozen=True)
class QuantizeOptions:
    calib_images: int = 32  # images whose views set the activation ranges
    check_images: int = 32  # images the int8 model is compared with float32 on
    min_agreement: float = 0.95  # least share of pixels labelled as float32 labels them
    max_miou_drop: float = 0.5  # most mIoU points lost against float32 (with ground truth)
    ignore_index: int = 255  # ground-truth value left out of the mIoU
    reduce_zero_label: bool = False  # ground truth 0 is "other" (ADE20K): left out, the rest shifted down


@dataclass
class Comparison:
    """The int8 model against float32 on the check images."""

    images: int
    held_out: bool  # check images not used for calibration
    agreement: float  # share of pixels with the same label
    seconds: dict[str, float]  # per image: "float32" (eager PyTorch) and "int8" (onnxruntime)
    miou: dict[str, float] | None = None  # "float32", "int8", "drop" (points), with ground truth
    skipped: list[str] = field(default_factory=list)  # one line per image that could not be used

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "held_out": self.held_out,
            "label_agreement": self.agreement,
            "seconds_per_image": self.seconds,
            "speedup": self.seconds["float32"] / self.seconds["int8"] if self.seconds["int8"] > 0 else None,
            "miou": self.miou,
        }


class _Views(Wrapped):
    """Records every view the engine gives the network ([B, 3, h, w] float32) without running it."""

    def __init__(self, net: Segmentor) -> None:
        super().__init__(net)
        self.views: list[np.ndarray] = []

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        self.views += [v[None] for v in x.detach().float().cpu().numpy()]  # one [1, 3, h, w] per view
        k = self.net.heads.channels  # logits that say nothing (class index), but not all alike: the engine's check
        return torch.arange(k, dtype=x.dtype).view(1, k, 1, 1).expand(x.shape[0], k, *x.shape[-2:])


def split(images: list[Path], opts: QuantizeOptions) -> tuple[list[Path], list[Path], bool]:
    """(calibration images spread evenly over the sorted list, check images, whether they are held out)."""
    if not images:
        raise UsageError("no images to calibrate with")
    n = min(opts.calib_images, len(images))
    picks = sorted({round(i * (len(images) - 1) / max(n - 1, 1)) for i in range(n)})
    calib = [images[i] for i in picks]
    rest = [p for i, p in enumerate(images) if i not in set(picks)]
    if rest:
        return calib, rest[: opts.check_images], True
    return calib, calib[: opts.check_images], False


def check_model(net: Segmentor, params: Params) -> None:
    """What the int8 export cannot represent: a usage error naming it."""
    if net.heads.grouped or net.heads.image_level:
        raise UsageError("quantize takes models with one head (not a unified perceptual parser)")
    if params.resize_once:
        raise UsageError(
            "this preset resizes logits once from the model's resolution; an export gives them at the input size",
            hint="use --preset hf or mmseg",
        )


def views_of(seg: Any, params: Params, images: list[Path], skipped: list[str]) -> Iterator[np.ndarray]:
    """The network's input views for each image in turn (one image's views in memory at a time)."""
    from ..engine.predict import predict_many

    rec = _Views(seg.network)
    for path in images:
        try:
            rgb = load_image(path)
        except SegcliError as e:
            skipped.append(f"{path}: {e.message}")
            continue
        predict_many(rec, [rgb], params, labels=False)
        yield from rec.views
        rec.views.clear()


def quantize_file(fp32: Path, out: Path, views: Iterator[np.ndarray]) -> int:
    """`fp32` quantized into `out` (QDQ, int8 weights per channel, uint8 activations); the views it saw."""
    onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = "input"
    seen = 0

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            nonlocal seen
            v = next(views, None)
            seen += v is not None
            return None if v is None else {name: v}

    # (the calibration model outputs each tensor's min and max, not the tensor: a few numbers per view)
    pre = out.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(OPS),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    pre.unlink()
    return seen


def _miou(cm: np.ndarray) -> float:
    from ..evaluation.metrics import scores

    return float(scores(cm)["mIoU"]) * 100


def compare(
    seg: Any,
    seg8: Any,
    params: Params,
    images: list[Path],
    held_out: bool,
    gt: dict[Path, Path],
    opts: QuantizeOptions,
    progress: Callable[[], None] = lambda: None,
) -> Comparison:
    """`seg8` (the int8 export) against `seg` (float32) on `images`; `gt`: the ground truth of images."""
    from ..evaluation.metrics import confusion

    same = total = 0
    seconds = {"float32": 0.0, "int8": 0.0}
    k = seg.num_classes
    cms = {"float32": np.zeros((k, k), np.int64), "int8": np.zeros((k, k), np.int64)}
    skipped: list[str] = []
    used = scored = 0
    for path in images:
        try:
            rgb = load_image(path)
            truth = read_labels(gt[path]) if path in gt else None
        except SegcliError as e:
            skipped.append(f"{path}: {e.message}")
            continue
        labels = {}
        for what, s in (("float32", seg), ("int8", seg8)):
            t = time.perf_counter()
            labels[what] = s.predict(rgb, params)
            seconds[what] += time.perf_counter() - t
        same += int((labels["float32"] == labels["int8"]).sum())
        total += labels["float32"].size
        used += 1
        if truth is not None:
            if truth.shape != labels["float32"].shape:
                skipped.append(f"{gt[path]}: ground truth {truth.shape} but the image is {rgb.shape[:2]}")
            else:
                for what in cms:
                    cms[what] += confusion(
                        truth, labels[what], k, ignore_index=opts.ignore_index, reduce_zero_label=opts.reduce_zero_label
                    )
                scored += 1
        progress()
    if not used:
        raise UsageError("none of the check images could be read", hint="see the lines above")
    miou = None
    if scored:
        m32, m8 = _miou(cms["float32"]), _miou(cms["int8"])
        miou = {"float32": m32, "int8": m8, "drop": m32 - m8, "images": scored}
    per = {w: s / used for w, s in seconds.items()}
    return Comparison(used, held_out, same / max(total, 1), per, miou, skipped)


def verdict(c: Comparison, opts: QuantizeOptions) -> str | None:
    """Why the int8 model may not be written (None: it may)."""
    if c.agreement < opts.min_agreement:
        return (
            f"the int8 model labels {share_text(c.agreement, 2)} of pixels as float32 does "
            f"(--min-agreement {share_text(opts.min_agreement, 2)})"
        )
    if c.miou is not None and c.miou["drop"] > opts.max_miou_drop:
        return (
            f"the int8 model loses {c.miou['drop']:.2f} mIoU points ({c.miou['float32']:.2f} → "
            f"{c.miou['int8']:.2f}; --max-miou-drop {opts.max_miou_drop:g})"
        )
    return None


def workspace(out: Path) -> Path:
    """A temporary folder beside `out` (same file system: the results are renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def export_fp32(net: Segmentor, size: tuple[int, int] | None, path: Path) -> None:
    from .export import ExportOptions, export_onnx

    require_exporter()
    try:
        export_onnx(net, ExportOptions("onnx", size=size or (512, 512), dynamic=size is None), path)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
        raise BackendError(f"the model does not export to ONNX ({first_line(e)})") from None


@dataclass
class Quantized:
    path: Path
    sidecar: Path
    size: tuple[int, int] | None  # None: any height and width
    calibration: dict[str, Any]
    comparison: Comparison
    written: bool
    refused: str | None  # why it was not written

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sidecar": str(self.sidecar),
            "written": self.written,
            "refused": self.refused,
            "size": None if self.size is None else list(self.size),
            "dynamic": self.size is None,
            "calibration": self.calibration,
            "check": self.comparison.to_json(),
        }


def ground_truth(images: list[Path], root: Path, gt: Path | None, suffix: str = "") -> dict[Path, Path]:
    """Each image's ground-truth PNG in `gt` (same relative folder and stem, `suffix` after the stem)."""
    if gt is None:
        return {}
    from ..evaluation.evaluate import label_files, pair_key

    if not gt.is_dir():
        raise UsageError(f"--gt {gt}: not a directory")
    truth = {pair_key(p, gt, suffix): p for p in label_files(gt)}
    found = {im: truth[k] for im in images if (k := pair_key(im, root, "")) in truth}
    if not found:
        raise UsageError(f"no image in {root} has ground truth in {gt}", hint="same relative folder and stem")
    return found


def quantize(
    seg: Any,
    params: Params,
    images: list[Path],
    out: Path,
    opts: QuantizeOptions = QuantizeOptions(),
    *,
    gt: dict[Path, Path] | None = None,
    log: Callable[[str], None] = lambda m: None,
    progress: Callable[[], None] = lambda: None,
) -> Quantized:
    """`seg`'s network quantized to int8 with the views `params` make of `images`, compared with float32 and
    written to `out` (+ its sidecar) when it keeps its labels; nothing is written otherwise."""
    from ..api import Segmenter
    from ..loading.formats import sidecar
    from .export import ExportOptions
    from .selection import view_shape

    net = seg.network
    if not isinstance(net, Segmentor):
        raise UsageError(f"{seg.info.name}: already an exported model", hint="quantize the PyTorch model it came from")
    check_model(net, params)
    size = view_shape(params)
    if size is None and not dynamic_ok(net):
        raise UsageError(
            "Swin models quantize at one fixed view size", hint="use --mode slide, or --resize HxW (e.g. 512x512)"
        )
    calib, check, held_out = split(images, opts)
    tmp = workspace(out)
    try:
        log(f"exporting to ONNX ({'dynamic' if size is None else f'{size[0]}x{size[1]}'}) ...")
        export_fp32(net, size, tmp / "fp32.onnx")
        skipped: list[str] = []
        log(f"calibrating on the views of {len(calib)} images ...")
        seen = quantize_file(tmp / "fp32.onnx", tmp / "int8.onnx", views_of(seg, params, calib, skipped))
        if not seen:
            raise UsageError("none of the calibration images could be read", hint="see the lines above")
        layout = ExportOptions("onnx", size=size or (512, 512), dynamic=size is None).layout
        doc = sidecar.describe(seg.info, net.config.normalization, net.align_corners, params.to_json(), layout)
        calibration = {
            "images": len(calib) - len(skipped),
            "files": [str(p) for p in calib],
            "views": seen,
            "method": "onnxruntime static QDQ; weights int8 per channel, activations uint8 per tensor, min/max",
            "ops": list(OPS),
        }
        sidecar.write(tmp / "int8.onnx", {**doc, "quantization": calibration})
        log(f"comparing int8 with float32 on {len(check)} images ...")
        seg8 = Segmenter.from_pretrained(tmp / "int8.onnx")
        c = compare(seg, seg8, params, check, held_out, gt or {}, opts, progress)
        c.skipped = skipped + c.skipped
        refused = verdict(c, opts)
        side = sidecar.path_for(out)
        if refused is None:
            sidecar.write(tmp / "int8.onnx", {**doc, "quantization": {**calibration, "check": c.to_json()}})
            (tmp / "int8.onnx").replace(out)
            (tmp / "int8.onnx.json").replace(side)
        return Quantized(out, side, size, calibration, c, refused is None, refused)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
