"""mmsegmentation .pth checkpoints → segcli model directories (model.safetensors + config.json).

The .pth is read with `torch.load(weights_only=True)`: tensors and plain containers only. A checkpoint whose
pickle needs code to run (custom classes in its metadata) is refused with an explanation — there is no
fallback to full unpickling. Keys are renamed by a table, every key and shape is checked against the
architecture, and the output is deterministic: converting the same file twice gives identical bytes.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .arch import network_from_tables, tables_from_network
from .checkpoint import match_state_dict
from .classes import ClassSet, derived_palette, known_set
from .errors import CheckpointError, ConfigError
from .hub import file_sha256
from .model import Segmentor
from .outputs import atomic_write_bytes
from .registry import ModelSpec

NATIVE_FORMAT = "segcli/1"

# mmseg name → segcli name: ConvModule norms are `bn` in mmseg and `batch_norm` here (the Hub's layout);
# the classifier is `conv_seg` there. Backbone names are the same.
MMSEG_KEYS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^module\."), ""),  # saved from a DataParallel wrapper
    (re.compile(r"^(decode_head|auxiliary_head)\.conv_seg\."), r"\1.classifier."),
    (re.compile(r"^(decode_head|auxiliary_head)\.(.+)\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$"),
     r"\1.\2.batch_norm.\3"),
]  # fmt: skip


def map_key(key: str) -> str:
    for pattern, repl in MMSEG_KEYS:
        key = pattern.sub(repl, key)
    return key


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an mmseg checkpoint ({'state_dict': ..., 'meta': ...} or a bare state dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).strip().splitlines()
        culprit = next((line for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0] if detail else "")
        if "weights_only" in str(e) or "GLOBAL" in str(e) or "Unsupported" in str(e):
            raise CheckpointError(
                f"{path}: refusing to unpickle: the checkpoint holds objects that need code to run "
                f"({culprit.strip()[:160]}); segcli reads .pth files with torch.load(weights_only=True) only",
                hint="if you trust the file, re-save only its state_dict (plain tensors) with torch.save in the "
                "environment that made it, then convert that file",
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0][:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})",
                              hint="the file may be truncated: download it again") from None  # fmt: skip
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in this checkpoint")
    return state


def read_classes(path: Path) -> tuple[str, ...]:
    """Class names from a JSON list, a JSON {"0": name} mapping, or a text file with one name per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read class names ({e.strerror or e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            data = data.get("id2label", data)
            try:
                data = [data[k] for k in sorted(data, key=int)]
            except (ValueError, TypeError):
                raise ConfigError(f"{path}: expected a list of names or an {{id: name}} mapping") from None
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise ConfigError(f"{path}: expected a list of class names")
        return tuple(data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def convert(src: Path, spec: ModelSpec, out_dir: Path, classes: tuple[str, ...] | None = None) -> Path:
    """Convert `src` (an mmseg checkpoint of the architecture `spec` describes) into `out_dir`."""
    raw = read_pth(src)
    state = {map_key(k): v for k, v in raw.items()}
    cls_w = state.get("decode_head.classifier.weight")
    if cls_w is None:
        raise CheckpointError(
            f"{src}: no decode_head.conv_seg.weight: not a segmentation checkpoint of the form mmseg writes",
            hint=f"--arch {spec.name} expects an mmsegmentation {spec.network.arch} checkpoint",
        )
    k = int(cls_w.shape[0])
    dataset = known_set(spec.dataset)
    if classes is None:
        if k != len(dataset.classes):
            raise ConfigError(
                f"{src}: the checkpoint has {k} classes, {spec.dataset} has {len(dataset.classes)}",
                hint="give the class names with --classes FILE (JSON list or one name per line)",
            )
        class_set = dataset
    else:
        if len(classes) != k:
            raise ConfigError(f"{src}: the checkpoint has {k} classes but {len(classes)} names were given")
        class_set = ClassSet("custom", classes, derived_palette(k))
    backbone, head = tables_from_network(spec.network)
    network = network_from_tables(backbone, head, k, f"--arch {spec.name}")
    with torch.device("meta"):
        model = Segmentor(network)
    checked = match_state_dict(model, state, f"{src} as --arch {spec.name}")
    tensors = {key: checked[key].detach().to(torch.float32 if checked[key].is_floating_point() else torch.int64)
               .contiguous() for key in sorted(checked)}  # fmt: skip

    from safetensors.torch import save

    # one metadata key only: safetensors writes metadata in hash-map order, which would vary between runs
    weights = save(tensors, metadata={"format": "pt"})
    proto = spec.evaluation
    config: dict[str, Any] = {
        "format": NATIVE_FORMAT,
        "architecture": network.arch,
        "backbone": backbone,
        "head": head,
        "id2label": {str(i): name for i, name in enumerate(class_set.classes)},
        "palette": [list(c) for c in class_set.palette],
        "segcli": {"preset": spec.preset, "crop_size": proto.crop_size, "mode": proto.mode, "stride": proto.stride,
                   "align_corners": proto.align_corners, "resize": proto.resize},  # fmt: skip
        "source": {"file": src.name, "sha256": file_sha256(src, quiet=True), "arch": spec.name,
                   "converted_by": f"segcli {__version__}", "license": spec.license},  # fmt: skip
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "model.safetensors", weights)
    atomic_write_bytes(out_dir / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return out_dir
