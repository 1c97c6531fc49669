"""An exported ONNX file (with the sidecar `segcli export` writes) run through onnxruntime, as a `SegModel`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..engine.heads import Heads
from ..errors import CheckpointError, ConfigError, UsageError, first_line
from ..fsutil import require_regular
from ..loading.formats import sidecar
from .onnx_session import onnxruntime, session


class OnnxRunner:
    """Implements the engine's `SegModel` with an onnxruntime session on the CPU, in float32."""

    device = torch.device("cpu")
    dtype = torch.float32

    model_format = "onnx"

    def __init__(self, path: Path, num_classes: int) -> None:
        self._require()
        doc = sidecar.read(path, self.model_format)
        self.path = path
        self.num_classes = num_classes
        self.threshold = sidecar.threshold(doc)  # a binary head: one logit channel
        self._heads = sidecar.heads(doc, num_classes, str(sidecar.path_for(path)))  # a parser's: several
        self.align_corners = bool(doc.get("align_corners", False))
        self.size = sidecar.input_size(doc)
        norm = sidecar.normalization(doc)
        self.normalization = norm
        self._mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(norm.std).view(1, 3, 1, 1)
        self._open(path)
        self._check_channels(path, num_classes)

    def _require(self) -> None:
        onnxruntime()  # before anything else: the one message when it is missing

    def _open(self, path: Path) -> None:
        try:
            require_regular(path)
            self.session = session(path)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise CheckpointError(
                f"{path}: not a loadable ONNX model ({first_line(e)})", hint="export it again"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def _check_channels(self, path: Path, num_classes: int) -> None:
        channels = self.session.get_outputs()[0].shape[1] if len(self.session.get_outputs()[0].shape) == 4 else None
        if isinstance(channels, int) and channels != self.heads.channels:
            raise ConfigError(
                f"{sidecar.path_for(path)}: lists {num_classes} classes but {path.name} outputs {channels} channels",
                hint="the sidecar belongs to another export",
            )

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        n = self.normalization
        if n.bgr:
            pixels = pixels.flip(1)
        return (pixels * n.scale - self._mean.to(pixels.dtype)) / self._std.to(pixels.dtype)

    @property
    def heads(self) -> Heads:
        return self._heads

    def __call__(
        self, x: torch.Tensor, upsample: bool = True
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # always at the input size
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            h, w = self.size
            raise UsageError(
                f"{self.path} was exported for {h}x{w} inputs, this view/window is {x.shape[-2]}x{x.shape[-1]}",
                hint=f"use --preset hf (resize to {h}x{w}), or --mode slide --crop {h}x{w} on images at least that "
                "large, or export with --dynamic",
            )
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        outs = self.session.run(None, {self.input_name: feed})
        if self.heads.image_level:  # a parser: (pixels [B, C, H, W], scene [B, S])
            return torch.from_numpy(outs[0]), torch.from_numpy(outs[1])
        return torch.from_numpy(outs[0])


class TorchScriptRunner(OnnxRunner):
    """The same `SegModel` over a TorchScript export (`segcli export -f torchscript`), run by torch.jit on the
    CPU in float32. A TorchScript archive is compiled code: it is loaded only as a `-m FILE.pt` named by
    the user, with the sidecar that says segcli wrote it."""

    model_format = "torchscript"

    def _require(self) -> None:
        pass

    def _open(self, path: Path) -> None:
        try:
            require_regular(path)
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # noqa: BLE001 - torch.jit raises RuntimeError and friends for bad archives
            raise CheckpointError(
                f"{path}: not a loadable TorchScript model ({first_line(e)})", hint="export it again"
            ) from None

    def _check_channels(self, path: Path, num_classes: int) -> None:
        pass  # the first forward's output is checked against the classes (`_run`)

    def _run(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = self.module(x.to(torch.float32))
        h = self.heads
        pixels, scene = out if h.image_level and isinstance(out, tuple) and len(out) == 2 else (out, None)
        ok = isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.shape[1] == h.channels
        if not ok or (h.image_level and not (isinstance(scene, torch.Tensor) and scene.shape[-1] == h.image_level)):
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"{sidecar.path_for(self.path)}: lists {self.num_classes} classes but {self.path.name} outputs {shape}",
                hint="the sidecar belongs to another export",
            )
        return pixels if scene is None else (pixels, scene)
