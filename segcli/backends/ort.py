"""`--backend onnxruntime`: the network exported to ONNX once (cached), run by onnxruntime on the CPU.

The export lives in segcli's cache under a key of the weights' sha256, the opset, the torch and segcli
versions and the shape policy: a fixed `HxW` where the preset's views have one size (`slide` windows, an HxW
resize; the pyramid pooling is then fixed pooling), views of any other size running eagerly; else `dynamic`
(any height and width; not Swin, whose window partition the exporter cannot make dynamic). An export is
checked against the network it was made from (labels ≥ 99.9 % equal) before it enters the cache, and its
own sha256 is checked whenever it is loaded again. `auto` exports the network with its BatchNorm folded, an
explicit `--backend onnxruntime` the network as loaded: the same function to ~1e-6, so both share one export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..engine.memory import check_pass
from ..errors import ResourceError, first_line
from ..fsutil import read_json_object, umask
from ..loading.hub import segcli_cache, sha256_file
from ..loading.info import ModelInfo
from ..model import Segmentor
from ..model.backbones import SwinConfig
from .base import BackendError, Wrapped, share_text
from .onnx_session import onnxruntime, require_exporter, session

OPSET = 18
VERIFY_COPIES = 6  # logits held at once while an export is traced and checked (engine.memory.check_pass)
VERIFY_SHAPE = (96, 128)  # a dynamic export is checked at a size it was not traced at (512x512)


def dynamic_ok(net: Segmentor) -> bool:
    """Whether the network exports with a dynamic height and width."""
    return not isinstance(net.config.backbone, SwinConfig)


def require_ort() -> None:
    """onnxruntime and the exporter (the backend exports the network, then runs the export)."""
    onnxruntime()
    require_exporter()


class OrtModel(Wrapped):
    """The export in an onnxruntime session (as many threads as torch uses); float32 views of the export's
    size (any size for a dynamic export) run there, any other call runs the eager network."""

    memory_factor = 2.0  # its arena holds a pass's output besides the engine's copies (engine.memory)

    def __init__(self, net: Segmentor, path: Path, size: tuple[int, int] | None) -> None:
        super().__init__(net)
        self.session = session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.size = size  # None: any size

    def runs(self, x: torch.Tensor, upsample: bool = True) -> bool:
        """Whether the export computes this call (logits at the input size, of a float32 view it takes)."""
        return upsample and x.dtype == torch.float32 and (self.size is None or tuple(x.shape[-2:]) == self.size)

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.runs(x, upsample):
            return self.net(x, upsample)
        feed = np.ascontiguousarray(x.detach().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: feed})[0])  # [B, K, H, W] at the input size


def weights_sha256(net: Segmentor, info: ModelInfo) -> str:
    """The weights file's sha256 (verified at load), else a hash of the loaded state dict."""
    if info.origin.sha256:
        return info.origin.sha256
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def export_key(net: Segmentor, info: ModelInfo, size: tuple[int, int] | None) -> dict[str, Any]:
    shape = "dynamic" if size is None else f"{size[0]}x{size[1]}"
    return {
        "weights_sha256": weights_sha256(net, info),
        "backend": "onnxruntime",
        "opset": OPSET,
        "torch": torch.__version__,
        "segcli": __version__,
        "shape": shape,
        "network": repr(net.config),  # the architecture it computes
    }


def verify(net: Segmentor, model: Wrapped, shape: tuple[int, int], what: str = "the ONNX export") -> None:
    """`model`'s logits (an export run another way) on a random input against the eager network's: labels
    ≥ 99.9 % equal, logits within 1e-3 of their largest magnitude."""
    x = torch.randn((1, 3, *shape), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref, out = net(x), model(x)
    assert isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor)
    agree = float((ref.argmax(1) == out.argmax(1)).float().mean())
    diff = float((ref - out).abs().max())
    if agree < 0.999 or not diff <= 1e-3 * max(1.0, float(ref.abs().max())):
        raise BackendError(
            f"{what} disagrees with the PyTorch model (labels {share_text(agree, 2)} equal, max diff {diff:.3g})",
            hint="use --backend torch, and report this with the model's name",
        )


def load(net: Segmentor, info: ModelInfo, size: tuple[int, int] | None, log: Any = None) -> OrtModel:
    """An `OrtModel` of `net` (export at `size`, None: dynamic), exporting and verifying it on first use."""
    require_ort()
    key = export_key(net, info, size)
    folder = _folder(key)
    intact = _intact(folder, key)
    if intact:
        try:
            return OrtModel(net, folder / "model.onnx", size)
        except Exception:  # noqa: BLE001 - onnxruntime's own errors for a file it cannot load: export again
            intact = False
    try:
        return _export(net, key, size, folder, log, replace=intact is False)
    except OSError as e:
        raise BackendError(
            f"cannot write the ONNX export into {folder.parent} ({e.strerror or e})",
            hint="make segcli's cache writable (or point $SEGCLI_CACHE elsewhere), or use --backend torch",
        ) from None


def export_file(net: Segmentor, info: ModelInfo, size: tuple[int, int] | None, log: Any = None) -> Path:
    """The cached, verified export `load` uses (made now when missing): what another runtime compiles."""
    load(net, info, size, log)
    path = _folder(export_key(net, info, size)) / "model.onnx"
    if not path.is_file():  # (only if the cache lost it between the two lines)
        raise BackendError(f"the ONNX export is missing from {path.parent}", hint="run again, or use --backend torch")
    return path


def _folder(key: dict[str, Any]) -> Path:
    return segcli_cache() / "exports" / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _intact(folder: Path, key: dict[str, Any]) -> bool | None:
    """Whether the cached export in `folder` is this model's, as written (None: there is none): its record
    names this key (weights, architecture, opset, versions, shape) and the file's own sha256. Anything else
    (another model's export copied in, a damaged file, a FIFO or a device in its place) is made again."""
    if not folder.exists():
        return None
    try:
        doc = read_json_object(folder / "export.json", 1 << 20)
        return all(doc.get(k) == v for k, v in key.items()) and doc.get("sha256") == sha256_file(folder / "model.onnx")
    except (OSError, ValueError):
        return False


def _export(
    net: Segmentor, key: dict[str, Any], size: tuple[int, int] | None, folder: Path, log: Any, replace: bool
) -> OrtModel:
    from .export import ExportOptions, export_onnx

    if log is not None:
        log(f"exporting the model to ONNX ({key['shape']}; once, cached in {folder.parent}) ...")
    # tracing runs the network at the export's size, the check both networks (their outputs, and the arena)
    try:
        check_pass(net.device, net.heads.channels, size or (512, 512), VERIFY_COPIES, "exporting to onnxruntime")
    except ResourceError as e:
        raise BackendError(e.message, hint="use --backend torch") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        opts = ExportOptions("onnx", size=size or (512, 512), dynamic=size is None, opset=OPSET)
        try:
            export_onnx(net, opts, tmp / "model.onnx")
            model = OrtModel(net, tmp / "model.onnx", size)
        except Exception as e:  # noqa: BLE001 - the exporter and onnxruntime raise many kinds
            raise BackendError(
                f"the model does not export to ONNX ({first_line(e)})", hint="use --backend torch"
            ) from None
        verify(net, model, size or VERIFY_SHAPE)
        doc = {**key, "sha256": sha256_file(tmp / "model.onnx")}
        (tmp / "export.json").write_text(json.dumps(doc, indent=1))
        os.chmod(tmp, 0o777 & ~umask())
        if replace:  # the damaged export this one replaces
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process put its (equal) export there first: keep that one
            os.rename(tmp, folder)
        return model  # the session holds the graph in memory: where the file ends up no longer matters
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
