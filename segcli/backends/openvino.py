"""`--backend openvino`: segcli's ONNX export (the onnxruntime backend's: cached, keyed, verified and
sha256-checked) compiled by OpenVINO for the CPU (the `[openvino]` extra).

Static at the preset's view size where views have one size (the export is then a fixed-size one), else
dynamic height and width (not Swin: see `ort.dynamic_ok`). Compiled with float32 inference precision set
explicitly — OpenVINO's default on CPUs with AMX or AVX512-BF16 is bfloat16, which changes the labels —
and as many threads as torch uses. The compiled model is checked against the eager network (labels ≥
99.9 % equal) every time it is built: compiling is seconds, and nothing compiled is cached on disk (a
compiled blob could not be checked before OpenVINO reads it).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..errors import first_line
from ..extras import require
from ..loading.info import ModelInfo
from ..model import Segmentor
from .base import BackendError, Wrapped
from .ort import VERIFY_SHAPE, export_file, require_ort, verify

COMPILE_S = 10.0  # auto's budget for compiling + checking an export made already (ConvNeXt-T, 2-core EPYC: 12 s)


def openvino() -> ModuleType:
    return require("openvino", "openvino", "it runs --backend openvino")


def require_openvino() -> None:
    """OpenVINO, and what makes and checks the ONNX export it compiles."""
    openvino()
    require_ort()


class OvModel(Wrapped):
    """The export compiled by OpenVINO; float32 views of its size (any size when dynamic) run there, any
    other call runs the eager network."""

    memory_factor = 2.0  # its own buffers hold a pass's output besides the engine's copies (engine.memory)

    def __init__(self, net: Segmentor, path: Path, size: tuple[int, int] | None) -> None:
        super().__init__(net)
        ov = openvino()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        self.compiled: Any = ov.Core().compile_model(str(path), "CPU", {**config, "PERFORMANCE_HINT": "LATENCY"})
        self.size = size  # None: any size

    def runs(self, x: torch.Tensor, upsample: bool = True) -> bool:
        """Whether the compiled export computes this call (logits at the input size of a float32 view)."""
        return upsample and x.dtype == torch.float32 and (self.size is None or tuple(x.shape[-2:]) == self.size)

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.runs(x, upsample):
            return self.net(x, upsample)
        feed = np.ascontiguousarray(x.detach().cpu().numpy())
        request = self.compiled.create_infer_request()  # one per call: calls from several threads do not share it
        out = request.infer([feed])[self.compiled.output(0)]
        return torch.from_numpy(np.array(out))  # [B, K, H, W] at the input size (copied out of OpenVINO's buffer)


def load(net: Segmentor, info: ModelInfo, size: tuple[int, int] | None, log: Any = None) -> OvModel:
    """An `OvModel` of `net` (the export at `size`, None: dynamic), checked against the eager network."""
    require_openvino()
    path = export_file(net, info, size, log)
    if log is not None:
        log("compiling the ONNX export with OpenVINO (float32) ...")
    try:
        model = OvModel(net, path, size)
    except Exception as e:  # noqa: BLE001 - OpenVINO's own errors for a graph it cannot compile
        raise BackendError(
            f"OpenVINO cannot compile the export ({first_line(e)})", hint="use --backend torch"
        ) from None
    verify(net, model, size or VERIFY_SHAPE, "the OpenVINO-compiled export")
    return model
