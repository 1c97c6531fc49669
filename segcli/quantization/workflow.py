"""`quantize`: export, calibrate, compare with float32, then write the int8 model (+ its sidecar) or refuse.

Chosen by measurement (benchmarks/int8.py): onnxruntime runs the QDQ model faster than OpenVINO runs the same
file on the CPUs measured (README, `segcli quantize`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.ort import dynamic_ok
from ..engine.presets import Params
from ..errors import UsageError
from ..model import Segmentor
from .calibrate import OPS, check_model, export_fp32, quantize_file, split, views_of
from .check import Comparison, compare, verdict
from .options import QuantizeOptions


def workspace(out: Path) -> Path:
    """A temporary folder beside `out` (same file system: the results are renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


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


def quantize(
    seg: Any,
    params: Params,
    images: list[Path],
    out: Path,
    opts: QuantizeOptions | None = None,
    *,
    gt: dict[Path, Path] | None = None,
    log: Callable[[str], None] = lambda m: None,
    progress: Callable[[], None] = lambda: None,
) -> Quantized:
    """`seg`'s network quantized to int8 with the views `params` make of `images`, compared with float32 and
    written to `out` (+ its sidecar) when it keeps its labels; nothing is written otherwise."""
    from ..api import Segmenter
    from ..backends.export import ExportOptions
    from ..backends.selection import view_shape
    from ..loading.formats import sidecar

    opts = opts or QuantizeOptions()
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
