"""onnxruntime in one place: its import (one missing-extra message), the exporter's packages, and the one
session factory that the ONNX-file runner, the onnxruntime backend and export verification use."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..extras import require

PURPOSE = "it runs ONNX models (--model FILE.onnx, --backend onnxruntime, export verification)"


def onnxruntime() -> ModuleType:
    return require("onnxruntime", "onnx", PURPOSE)


def require_exporter() -> None:
    """torch's ONNX exporter's own dependencies."""
    for module in ("onnx", "onnxscript"):
        require(module, "onnx", "torch's ONNX exporter needs it")


def session(path: Path) -> Any:
    """An onnxruntime CPU session of the file at `path`, with as many threads as torch uses; idle threads do
    not spin (they leave the cores to torch and to the decoding / writing threads)."""
    ort = onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
