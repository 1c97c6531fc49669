"""An exported ONNX file (with the sidecar JSON `segcli export` writes) as a model the engine can run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .classes import class_set_for
from .config import ModelInfo, Origin, read_json
from .errors import ConfigError, UsageError
from .export import SIDECAR_FORMAT, require_onnxruntime
from .model.segmentor import Normalization
from .presets import Protocol


def read_sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(path.suffix + ".json")
    if not side.is_file():
        raise ConfigError(f"{path}: no {side.name} beside it",
                          hint="segcli runs ONNX files together with the sidecar JSON `segcli export` writes")  # fmt: skip
    doc = read_json(side)
    if doc.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{side}: not a segcli export sidecar ({SIDECAR_FORMAT} expected)")
    if doc.get("model_format") != "onnx":
        raise ConfigError(f"{side}: describes a {doc.get('model_format')} export, not ONNX")
    if doc["output"]["name"] != "logits" or doc["input"]["name"] != "input":
        raise ConfigError(
            f"{path}: exported with --labels or --with-preprocess; segcli predict needs the logits model",
            hint="export again without --labels / --with-preprocess",
        )
    return doc


def onnx_info(path: Path) -> ModelInfo:
    doc = read_sidecar(path)
    pr = doc.get("protocol", {})
    proto = Protocol(int(pr.get("crop_size", 512)), pr.get("mode", "whole"), pr.get("stride"),
                     bool(doc.get("align_corners", False)), pr.get("resize"))  # fmt: skip
    size = tuple(doc["input"]["size"] or (512, 512))
    classes = class_set_for(tuple(doc["classes"]), doc.get("palette"))
    origin = Origin("onnx", doc["source"].get("repo"), doc["source"].get("revision"), path.name,
                    doc["source"].get("sha256"), str(path.resolve()))  # fmt: skip
    preset = doc.get("preset", {}).get("name", "hf")
    if doc["input"]["size"] is not None and not (proto.mode == "slide" and [proto.crop_size] * 2 == list(size)):
        preset = "hf"  # a fixed-size export runs the fixed-size preset unless it slides windows of that size
    return ModelInfo(str(path), None, classes, size, preset, origin, proto)  # type: ignore[arg-type]


class OnnxSegmentor(nn.Module):
    """Duck-types `Segmentor` for the engine: normalize(), forward(normalised NCHW) → logits, config."""

    def __init__(self, path: Path, info: ModelInfo) -> None:
        super().__init__()
        ort = require_onnxruntime()
        self.path = path
        doc = read_sidecar(path)
        n = doc["input"]["normalization"]
        norm = Normalization(tuple(n["mean"]), tuple(n["std"]), float(n["scale"]))
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.size = tuple(doc["input"]["size"]) if doc["input"]["size"] else None
        self.config = SimpleNamespace(num_classes=len(info.classes), normalization=norm)
        self.align_corners = bool(doc.get("align_corners", False))
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)
        self.scale = norm.scale
        self._device = nn.Parameter(torch.zeros(1), requires_grad=False)  # device / dtype for the engine

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels * self.scale - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            h, w = self.size
            raise UsageError(
                f"{self.path} was exported for {h}x{w} inputs, this view/window is {x.shape[-2]}x{x.shape[-1]}",
                hint=f"use --preset hf (resize to {h}x{w}), or --mode slide --crop {h}x{w} on images at least that "
                "large, or export with --dynamic",
            )
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(out[0])


