"""How a loaded network runs: eager PyTorch, `torch.compile` (inductor), or its ONNX export in onnxruntime.

`auto` (the CLI's default) runs the fastest backend that is installed and supports the model, dtype, device
and views here, as measured on this machine; nothing is assumed about which wins. Every backend stays
exact: labels ≥ 99.9 % equal to eager float32 (tests), an ONNX export checked before it is cached.

selection.py    which backends qualify for a model, dtype, device and preset; `select` and auto's choice
calibrate.py    interleaved timing of the candidates, cached per machine, versions, architecture and view
base.py         `Wrapped`: a SegModel that delegates all but the call to the loaded network
compiled.py     torch.compile, warmed per view size
ort.py          the network's ONNX export, made once into segcli's cache, verified, run by onnxruntime
onnx_session.py onnxruntime's import and the one session factory
onnx_file.py    an exported ONNX file (with its sidecar) as a SegModel: `--model FILE.onnx`
export.py       ONNX / TorchScript / fp16 safetensors export with verification (`segcli export`)
hardware.py     what the machine computes natively (CPU flags, bfloat16) and what `--dtype auto` picks
"""

from .base import BackendError
from .selection import BACKENDS, MEASURE, Choice, check, check_measure, select, view_shape

__all__ = [
    "BACKENDS", "MEASURE", "BackendError", "Choice", "check", "check_measure", "select", "view_shape"
]  # fmt: skip
