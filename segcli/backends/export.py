"""Export to ONNX / TorchScript / fp16 safetensors, with a built-in parity check against the eager model.

The exported graph is a copy of the model with every `ExportForm` module in its export form (the PPM's
adaptive pooling as fixed pooling, concatenations built plainly), optionally wrapped with preprocessing
and argmax. The sidecar JSON (`formats.sidecar`) and the safetensors model directory (`formats.native`)
are written by their format modules.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..loading.formats import native
from ..loading.formats.sidecar import Layout
from ..loading.info import ModelInfo
from ..model import Segmentor
from ..model.backbones import SwinConfig
from ..model.layers import ExportForm
from ..versions import made_by
from .onnx_session import session

FORMATS = ("onnx", "torchscript", "safetensors-fp16")


def prepare(model: Segmentor, dynamic: bool) -> Segmentor:
    """A float32 copy of `model` with every module in its export form."""
    m = copy.deepcopy(model).eval().float()
    for mod in m.modules():
        if isinstance(mod, ExportForm):
            mod.to_export_form(dynamic)
    return m


class Exportable(nn.Module):
    """What gets exported: optional preprocessing (uint8 RGB NHWC in), the network, optional argmax."""

    def __init__(self, model: Segmentor, with_preprocess: bool, labels: bool) -> None:
        super().__init__()
        self.model, self.with_preprocess, self.labels = model, with_preprocess, labels

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.with_preprocess:  # [B, H, W, 3] uint8 RGB
            x = self.model.normalize(x.permute(0, 3, 1, 2).float())
        logits = self.model(x)  # [B, K, H, W] (a binary head: [B, 1, H, W]; a parser: and the scene's [B, S])
        if not self.labels:
            return logits
        assert isinstance(logits, torch.Tensor)  # `validate`: a parser exports logits only
        t = self.model.config.threshold
        return logits.argmax(1) if t is None else (logits[:, 0].sigmoid() > t).long()


@dataclass(frozen=True)
class ExportOptions:
    fmt: str
    size: tuple[int, int] = (512, 512)
    dynamic: bool = False
    with_preprocess: bool = False
    labels: bool = False
    opset: int = 18

    @property
    def layout(self) -> Layout:
        return Layout(self.fmt, None if self.dynamic else self.size, self.with_preprocess, self.labels)


def example_input(size: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random uint8 RGB pixels [1, H, W, 3]."""
    return torch.randint(0, 256, (1, *size, 3), dtype=torch.uint8, generator=generator)


def to_model_input(pixels: torch.Tensor, model: Segmentor, opts: ExportOptions) -> torch.Tensor:
    return pixels if opts.with_preprocess else model.normalize(pixels.permute(0, 3, 1, 2).float())


def export_onnx(model: Segmentor, opts: ExportOptions, path: Path) -> None:
    wrapper = Exportable(prepare(model, opts.dynamic), opts.with_preprocess, opts.labels).eval()
    x = to_model_input(example_input(opts.size).expand(2, -1, -1, -1), model, opts)  # batch 2: 1 would specialise
    dims: dict[int, Any] = {0: torch.export.Dim("batch")}
    if opts.dynamic:
        h, w = (1, 2) if opts.with_preprocess else (2, 3)
        dims.update({h: torch.export.Dim("height"), w: torch.export.Dim("width")})
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (x,),
                str(path),
                dynamo=True,
                opset_version=opts.opset,
                external_data=False,
                verbose=False,
                input_names=["pixels" if opts.with_preprocess else "input"],
                output_names=[
                    "labels" if opts.labels else "logits",
                    *(["scene"] if model.config.arch == "upp" else []),
                ],
                dynamic_shapes=(dims,),
            )
    finally:
        onnx_log.setLevel(level)


def export_torchscript(model: Segmentor, opts: ExportOptions, path: Path) -> None:
    wrapper = Exportable(prepare(model, dynamic=False), opts.with_preprocess, opts.labels).eval()
    x = to_model_input(example_input(opts.size), model, opts)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the pooling sizes are constants on purpose
        traced = torch.jit.trace(wrapper, (x,), check_trace=False)
    traced.save(str(path))


# the seconds an export takes on an idle 2-core machine (benchmarks/export_time.py measured tiny and real
# ConvNeXt and PSPNet networks): torch.export's tracing and decompositions and the ONNX optimizer work per
# graph node, so the modules predict the time and the parameters hardly do (TorchScript's save aside)
FIXED = {"onnx": 2.5, "onnx-dynamic": 4.0, "torchscript": 0.3}
PER_MODULE = {"onnx": 0.025, "onnx-dynamic": 0.08, "torchscript": 0.005}
PER_MILLION_PARAMS = {"onnx": 0.01, "onnx-dynamic": 0.01, "torchscript": 0.04}


def estimate_seconds(net: nn.Module, fmt: str, dynamic: bool = False) -> float:
    """About how long exporting `net` as `fmt` takes on an idle 2-core machine (more on a busy one)."""
    kind = "onnx-dynamic" if fmt == "onnx" and dynamic else fmt
    modules = sum(1 for _ in net.modules())
    params = sum(p.numel() for p in net.parameters()) / 1e6
    return FIXED[kind] + PER_MODULE[kind] * modules + PER_MILLION_PARAMS[kind] * params


def export_file(net: Segmentor, info: ModelInfo, opts: ExportOptions, out: Path, preset: dict[str, Any]) -> Path:
    """`net` exported to `out` (written atomically) with its sidecar (`preset`: the inference parameters it
    records); returns the sidecar's path."""
    from ..fsutil import atomic_path
    from ..loading.formats import sidecar

    with atomic_path(out) as tmp:
        (export_onnx if opts.fmt == "onnx" else export_torchscript)(net, opts, tmp)
    doc = sidecar.describe(info, net.config.normalization, net.align_corners, preset, opts.layout)
    return sidecar.write(out, doc)


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> list[np.ndarray]:
    """Outputs of the exported file for input `x` (onnxruntime / torch.jit): the logits or labels (and a
    parser's scene logits)."""
    if fmt == "onnx":
        s = session(path)
        return list(s.run(None, {s.get_inputs()[0].name: x.numpy()}))
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        out = module(x)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@dataclass
class Verification:
    checks: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)


def _check(
    name: str, x: torch.Tensor, refs: list[np.ndarray], outs: list[np.ndarray], labels: bool, atol: float, k: int
) -> dict[str, Any]:
    """One input's comparison: every output (a parser's scene too) within `atol`, the first `k` channels'
    argmax agreement (a parser's objects)."""
    ref, out = refs[0], outs[0]
    if len(outs) != len(refs):
        return {"input": name, "shape": list(x.shape), "max_abs_diff": None, "label_agreement": None, "ok": False}
    if labels:
        diff, agree = None, float((out == ref).mean())
        ok = agree >= 0.999
    else:
        diff = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs, strict=True))
        agree = float((out[:, :k].argmax(1) == ref[:, :k].argmax(1)).mean())
        ok = diff <= atol
    return {"input": name, "shape": list(x.shape), "max_abs_diff": diff, "label_agreement": agree, "ok": ok}


def verify(model: Segmentor, path: Path, opts: ExportOptions, atol: float, image: np.ndarray) -> Verification:
    """Run the exported file and the eager model on a random input and a real-looking image; compare."""
    eager = Exportable(model, opts.with_preprocess, opts.labels).eval()
    inputs = {
        "random": example_input(opts.size, torch.Generator().manual_seed(0)),
        "image": torch.from_numpy(np.ascontiguousarray(image))[None],
    }
    if opts.dynamic:  # another size than the one traced
        h, w = opts.size
        inputs["random, other size"] = example_input((h + 37, w - 21), torch.Generator().manual_seed(1))
    checks = []
    for name, pixels in inputs.items():
        x = to_model_input(pixels, model, opts)
        with torch.no_grad():
            out = eager(x)
        refs = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
        k = model.heads.primary
        checks.append(_check(name, x, refs, run_exported(path, opts.fmt, x), opts.labels, atol, k))
    return Verification(checks)


def validate(opts: ExportOptions, model: Segmentor) -> None:
    if opts.fmt not in FORMATS:
        raise UsageError(f"unknown --format {opts.fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    if model.config.arch == "upp" and opts.labels:
        raise UsageError(
            "--labels: a unified perceptual parser's labels are four maps (the parts read within the objects'), "
            "not one argmax",
            hint="export its logits (leave --labels out): `segcli predict -m FILE` reads all four heads from them",
        )
    if opts.dynamic and opts.fmt != "onnx":
        raise UsageError("--dynamic applies to ONNX only", hint="TorchScript exports are traced at --size")
    if min(opts.size) < 32:
        raise UsageError(f"--size {opts.size[0]}x{opts.size[1]} is too small (at least 32x32)")
    if opts.dynamic and isinstance(model.config.backbone, SwinConfig):
        raise UsageError(
            "--dynamic height/width is not supported for Swin backbones",
            hint="export Swin models at a fixed --size (the batch dimension stays dynamic)",
        )


def save_native(model: Segmentor, info: ModelInfo, out_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """A model directory (model.safetensors in `dtype` + config.json in segcli's format) that
    `Segmenter.from_pretrained` loads; float16 halves the download, and loading casts back to float32."""
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    o = info.origin
    source = {
        "name": info.name,
        "sha256": o.sha256,
        "repo": o.repo,
        "revision": o.revision,
        "converted_by": made_by(),
        "dtype": str(dtype),
    }
    preset, protocol = info.default_preset, info.protocol
    return native.write(
        out_dir, tensors, model.config, info.class_set, preset, protocol, source, info.input_size, info.head_sets
    )
