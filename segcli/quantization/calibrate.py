"""The calibration: the views the network receives when a preset runs on the calibration images, and the
network's ONNX export quantized with their activation ranges.

The export is static at the preset's one view size, else dynamic (`backends.export.export_onnx`), and
quantized by onnxruntime in the QDQ form (weights int8 per output channel, activations uint8 per tensor,
ranges by min / max over the calibration views). The views are recorded one image at a time without running
the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.base import BackendError, Wrapped
from ..backends.onnx_session import onnxruntime, require_exporter
from ..engine.presets import Params
from ..errors import SegcliError, UsageError, first_line
from ..io.images import load_image
from ..model import Segmentor
from .options import QuantizeOptions

OPS = ("Conv", "MatMul", "Gemm")  # what is quantized; everything else runs in float32 between QDQ pairs


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
    picks = {round(i * (len(images) - 1) / max(n - 1, 1)) for i in range(n)}
    calib = [images[i] for i in sorted(picks)]
    rest = [p for i, p in enumerate(images) if i not in picks]
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


def export_fp32(net: Segmentor, size: tuple[int, int] | None, path: Path) -> None:
    from ..backends.export import ExportOptions, export_onnx

    require_exporter()
    try:
        export_onnx(net, ExportOptions("onnx", size=size or (512, 512), dynamic=size is None), path)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
        raise BackendError(f"the model does not export to ONNX ({first_line(e)})") from None
