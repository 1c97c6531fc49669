"""Export to ONNX / TorchScript / fp16 safetensors, with a built-in parity check against the eager model.

ONNX has no adaptive average pooling, and exporters fail (or worse) on the PPM's 1/2/3/6 bins when the
deepest feature map is not a multiple of the bin count. For export, each bin is rewritten as pooling with
fixed weights for the exported size: an AvgPool when the map divides evenly, otherwise two small constant
matrices (rows and columns of the same bins PyTorch uses: [⌊i·n/s⌋, ⌈(i+1)·n/s⌉)), the same averages.
With `dynamic`, the matrices are built from the input's shape inside the graph instead.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .errors import SegcliError, UsageError
from .model import Segmentor
from .model.heads.ppm import PyramidPooling

FORMATS = ("onnx", "torchscript", "safetensors-fp16")
SIDECAR_FORMAT = "segcli-export/1"


class ExportError(SegcliError):
    """The exported model is missing a runtime, could not be written, or failed verification."""


def pool_matrix(n: torch.Tensor | int, s: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[s, n]: row i averages input positions ⌊i·n/s⌋ … ⌈(i+1)·n/s⌉-1, as adaptive_avg_pool does."""
    i = torch.arange(s)
    start = (i * n) // s
    end = ((i + 1) * n + s - 1) // s
    j = torch.arange(n)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


class FixedAdaptivePool(nn.Module):
    """adaptive_avg_pool2d(x, s) for inputs of exactly (h, w): AvgPool2d when s divides both, else x's
    rows and columns multiplied by constant averaging matrices."""

    def __init__(self, s: int, h: int, w: int) -> None:
        super().__init__()
        self.s, self.h, self.w = s, h, w
        self.even = h % s == 0 and w % s == 0
        self.register_buffer("rows", pool_matrix(h, s), persistent=False)  # [s, h]
        self.register_buffer("cols", pool_matrix(w, s).t().contiguous(), persistent=False)  # [w, s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.even:
            return F.avg_pool2d(x, (self.h // self.s, self.w // self.s))
        return torch.matmul(torch.matmul(self.rows.to(x.dtype), x), self.cols.to(x.dtype))  # [B, C, s, s]


class ShapeAdaptivePool(nn.Module):
    """adaptive_avg_pool2d(x, s) with the averaging matrices built from x's shape (dynamic export)."""

    def __init__(self, s: int) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = pool_matrix(x.shape[-2], self.s, x.dtype)
        cols = pool_matrix(x.shape[-1], self.s, x.dtype).t()
        return torch.matmul(torch.matmul(rows, x), cols)


def _deepest_size(model: Segmentor, size: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Input size of every PyramidPooling module for an input of `size` (recorded with hooks)."""
    seen: dict[int, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.__setitem__(id(mod), tuple(args[0].shape[-2:])))
             for m in model.modules() if isinstance(m, PyramidPooling)]  # fmt: skip
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *size))
    finally:
        for h in hooks:
            h.remove()
    return seen


def prepare(model: Segmentor, size: tuple[int, int] | None) -> Segmentor:
    """A copy of `model` whose PPM pooling exports everywhere: fixed for `size`, from shapes if None. The
    fused convolution of upsampled inputs (in-place updates) is replaced by its plain form."""
    m = copy.deepcopy(model).eval().float()
    for mod in m.modules():
        if hasattr(mod, "fused"):
            mod.fused = False
    sizes = _deepest_size(m, size) if size is not None else {}
    for ppm in (mod for mod in m.modules() if isinstance(mod, PyramidPooling)):
        for branch in ppm:
            s = branch[0].output_size
            s = s if isinstance(s, int) else s[0]
            branch[0] = FixedAdaptivePool(s, *sizes[id(ppm)]) if size is not None else ShapeAdaptivePool(s)
    return m


class Exportable(nn.Module):
    """What gets exported: optional preprocessing (uint8 RGB NHWC in), the network, optional argmax."""

    def __init__(self, model: Segmentor, with_preprocess: bool, labels: bool) -> None:
        super().__init__()
        self.model, self.with_preprocess, self.labels = model, with_preprocess, labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_preprocess:  # [B, H, W, 3] uint8 RGB
            x = self.model.normalize(x.permute(0, 3, 1, 2).float())
        logits = self.model(x)  # [B, K, H, W]
        return logits.argmax(1) if self.labels else logits


@dataclass(frozen=True)
class ExportOptions:
    fmt: str
    size: tuple[int, int] = (512, 512)
    dynamic: bool = False
    with_preprocess: bool = False
    labels: bool = False
    opset: int = 18


def example_input(opts: ExportOptions, generator: torch.Generator | None = None, image: np.ndarray | None = None):
    h, w = opts.size
    if image is None:
        pixels = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=generator)
    else:
        pixels = torch.from_numpy(np.ascontiguousarray(image))[None]
    return pixels


def to_model_input(pixels: torch.Tensor, model: Segmentor, opts: ExportOptions) -> torch.Tensor:
    return pixels if opts.with_preprocess else model.normalize(pixels.permute(0, 3, 1, 2).float())


def export_onnx(model: Segmentor, opts: ExportOptions, path: Path) -> None:
    prepared = prepare(model, None if opts.dynamic else opts.size)
    wrapper = Exportable(prepared, opts.with_preprocess, opts.labels).eval()
    x = to_model_input(example_input(opts).expand(2, -1, -1, -1), model, opts)  # batch 2: size 1 would specialise
    kwargs: dict[str, Any] = {"input_names": ["pixels" if opts.with_preprocess else "input"],
                              "output_names": ["labels" if opts.labels else "logits"]}  # fmt: skip
    if opts.dynamic:
        h, w = (1, 2) if opts.with_preprocess else (2, 3)
        batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
        kwargs["dynamic_shapes"] = ({0: batch, h: height, w: width},)
    else:
        batch = torch.export.Dim("batch")
        kwargs["dynamic_shapes"] = ({0: batch},)
    import logging
    import warnings

    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (x,), str(path), dynamo=True, opset_version=opts.opset, external_data=False,
                              verbose=False, **kwargs)  # fmt: skip
    finally:
        onnx_log.setLevel(level)


def export_torchscript(model: Segmentor, opts: ExportOptions, path: Path) -> None:
    prepared = prepare(model, opts.size)
    wrapper = Exportable(prepared, opts.with_preprocess, opts.labels).eval()
    x = to_model_input(example_input(opts), model, opts)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (x,), check_trace=False)
    traced.save(str(path))


def sidecar(seg: Any, opts: ExportOptions, params: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to use the exported file without segcli."""
    info = seg.info
    n = seg.model.config.normalization
    o = info.origin
    return {
        "format": SIDECAR_FORMAT,
        "exported_by": f"segcli {__version__}",
        "model_format": opts.fmt,
        "input": {
            "name": "pixels" if opts.with_preprocess else "input",
            "layout": "NHWC uint8 RGB 0..255" if opts.with_preprocess else "NCHW float32, normalised",
            "size": None if opts.dynamic else list(opts.size),
            "dynamic": ["batch", "height", "width"] if opts.dynamic else ["batch"],
            "normalization": {"mean": list(n.mean), "std": list(n.std), "scale": n.scale,
                              "formula": "(pixel * scale - mean) / std per RGB channel"},  # fmt: skip
        },
        "output": {"name": "labels" if opts.labels else "logits",
                   "layout": "NHW int64 class indices" if opts.labels else "NCHW float32 logits at the input size"},  # fmt: skip
        "classes": list(info.classes),
        "palette": [list(map(int, c)) for c in info.class_set.palette],
        "align_corners": seg.model.align_corners,
        "preset": {"name": info.default_preset, "resolved": params},
        "protocol": {"crop_size": info.protocol.crop_size, "mode": info.protocol.mode, "stride": info.protocol.stride,
                     "resize": info.protocol.resize},  # fmt: skip
        "source": {"name": info.name, "kind": o.kind, "repo": o.repo, "revision": o.revision, "sha256": o.sha256,
                   "path": o.path},  # fmt: skip
    }


def write_sidecar(path: Path, doc: dict[str, Any]) -> Path:
    from .outputs import atomic_write_bytes

    side = path.with_suffix(path.suffix + ".json")
    atomic_write_bytes(side, (json.dumps(doc, indent=2) + "\n").encode())
    return side


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Output of the exported file for input `x` (onnxruntime / torch.jit)."""
    if fmt == "onnx":
        ort = require_onnxruntime()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(x).numpy()


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "onnxruntime is not installed: it runs ONNX models (verification, --model FILE.onnx)",
            hint="pip install 'segcli[onnx]'",
        ) from None
    return onnxruntime


@dataclass
class Verification:
    checks: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)


def verify(model: Segmentor, path: Path, opts: ExportOptions, atol: float, image: np.ndarray) -> Verification:
    """Run the exported file and the eager model on a random input and a real-looking image; compare."""
    eager = Exportable(model, opts.with_preprocess, opts.labels).eval()
    checks = []
    inputs = {"random": example_input(opts, torch.Generator().manual_seed(0)), "image": example_input(opts, image=image)}
    if opts.dynamic:  # another size than the one traced
        h, w = opts.size
        inputs["random, other size"] = example_input(ExportOptions(opts.fmt, (h + 37, w - 21)), torch.Generator().manual_seed(1))
    for name, pixels in inputs.items():
        x = to_model_input(pixels, model, opts)
        with torch.no_grad():
            ref = eager(x).numpy()
        out = run_exported(path, opts.fmt, x)
        if opts.labels:
            diff, agree = None, float((out == ref).mean())
            ok = agree >= 0.999
        else:
            diff = float(np.abs(out - ref).max())
            agree = float((out.argmax(1) == ref.argmax(1)).mean())
            ok = diff <= atol
        checks.append({"input": name, "shape": list(x.shape), "max_abs_diff": diff, "label_agreement": agree, "ok": ok})
    return Verification(checks)


def validate(opts: ExportOptions, model: Segmentor) -> None:
    if opts.fmt not in FORMATS:
        raise UsageError(f"unknown --format {opts.fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    if opts.dynamic and opts.fmt != "onnx":
        raise UsageError("--dynamic applies to ONNX only", hint="TorchScript exports are traced at --size")
    if min(opts.size) < 32:
        raise UsageError(f"--size {opts.size[0]}x{opts.size[1]} is too small (at least 32x32)")
    from .model.backbones import SwinConfig

    if opts.dynamic and isinstance(model.config.backbone, SwinConfig):
        raise UsageError("--dynamic height/width is not supported for Swin backbones",
                         hint="export Swin models at a fixed --size (the batch dimension stays dynamic)")  # fmt: skip


def save_native(model: Segmentor, info: Any, out_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """A model directory (model.safetensors in `dtype` + config.json in segcli's format) that
    `Segmenter.from_pretrained` loads; float16 halves the download, and loading casts back to float32."""
    from safetensors.torch import save

    from .arch import tables_from_network
    from .convert import NATIVE_FORMAT
    from .outputs import atomic_write_bytes

    state = model.state_dict()
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in sorted(state.items())}
    backbone, head = tables_from_network(model.config)
    n, p = model.config.normalization, info.protocol
    config = {
        "format": NATIVE_FORMAT,
        "architecture": model.config.arch,
        "backbone": backbone,
        "head": head,
        "id2label": {str(i): name for i, name in enumerate(info.classes)},
        "palette": [list(map(int, c)) for c in info.class_set.palette],
        "preprocess": {"mean": list(n.mean), "std": list(n.std), "scale": n.scale, "size": list(info.input_size)},
        "segcli": {"preset": info.default_preset, "crop_size": p.crop_size, "mode": p.mode, "stride": p.stride,
                   "align_corners": p.align_corners, "resize": p.resize},  # fmt: skip
        "source": {"name": info.name, "sha256": info.origin.sha256, "repo": info.origin.repo,
                   "revision": info.origin.revision, "converted_by": f"segcli {__version__}", "dtype": str(dtype)},  # fmt: skip
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return out_dir
