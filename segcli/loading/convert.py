"""Checkpoints of the three labs (mmsegmentation, the UPerNet authors, the PSPNet author) → segcli model
directories (model.safetensors + config.json).

Reading is the lab's format module (`formats.mmseg`, `formats.csail`, `formats.semseg`: weights-only
unpickling and a key table), writing `formats.native`; in between, every key and shape is checked against
the architecture the registry entry describes. The output is deterministic: converting the same files twice
gives identical bytes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..model import Segmentor
from ..versions import made_by
from .checkpoint import match_state_dict
from .classes import ClassSet, derived_palette, known_set
from .formats import csail, mmseg, native, semseg
from .formats.arch import HEAD_OF_ARCH, network_from_tables, tables_from_network
from .hub import file_sha256
from .registry import ModelSpec

READERS = {"mmseg": mmseg.read, "csail": csail.read, "semseg": semseg.read}


def _class_set(src: Path, spec: ModelSpec, k: int, classes: tuple[str, ...] | None) -> ClassSet:
    """The registry entry's dataset classes, or the names given, checked against the checkpoint's K."""
    if classes is None:
        dataset = known_set(spec.dataset)
        if k != len(dataset.classes):
            raise ConfigError(
                f"{src}: the checkpoint has {k} classes, {spec.dataset} has {len(dataset.classes)}",
                hint="give the class names with --classes FILE (JSON list or one name per line)",
            )
        return dataset
    if len(classes) != k:
        raise ConfigError(f"{src}: the checkpoint has {k} classes but {len(classes)} names were given")
    return ClassSet("custom", classes, derived_palette(k))


CLASSIFIER = "decode_head.classifier.weight"  # its rows: the classes (the object head's for upp)
CLASSIFIERS = {"upp": "decode_head.object_head.1.weight"}


def _read(srcs: list[Path], spec: ModelSpec) -> dict[str, torch.Tensor]:
    if spec.format == "mmseg":
        return mmseg.read(srcs, f"--arch {spec.name} expects an mmsegmentation {spec.network.arch} checkpoint")
    state = READERS[spec.format](srcs, HEAD_OF_ARCH[spec.network.arch])  # the key table of its decoder
    if CLASSIFIERS.get(spec.network.arch, CLASSIFIER) not in state:
        raise CheckpointError(
            f"{srcs[0]}: no classifier weights: not a {spec.format} checkpoint of the kind --arch {spec.name} is",
            hint=f"--arch {spec.name} expects {' + '.join(spec.source_files) or 'its checkpoint'}",
        )
    return state


def _source(srcs: list[Path], spec: ModelSpec) -> dict[str, object]:
    """What config.json records about the converted files (one file: `file` / `sha256`, as before)."""
    names, digests = [s.name for s in srcs], [file_sha256(s, quiet=True) for s in srcs]
    files = {"file": names[0], "sha256": digests[0]} if len(srcs) == 1 else {"files": names, "sha256": digests}
    return {**files, "arch": spec.name, "converted_by": made_by(), "license": spec.license}


def convert(srcs: Path | list[Path], spec: ModelSpec, out_dir: Path, classes: tuple[str, ...] | None = None) -> Path:
    """Convert `srcs` (the checkpoint file(s) of the architecture `spec` describes, in its format) into `out_dir`."""
    srcs = [srcs] if isinstance(srcs, Path) else sorted(srcs)
    state = _read(srcs, spec)
    k = int(state[CLASSIFIERS.get(spec.network.arch, CLASSIFIER)].shape[0])
    class_set = _class_set(srcs[0], spec, k, classes)
    backbone, head = tables_from_network(spec.network)
    network = replace(
        network_from_tables(backbone, head, k, f"--arch {spec.name}"), normalization=spec.network.normalization
    )
    with torch.device("meta"):
        model = Segmentor(network)
    where = f"{' + '.join(map(str, srcs))} as --arch {spec.name}"
    checked = match_state_dict(model, state, where)
    tensors = {
        key: t.detach().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous()
        for key, t in checked.items()
    }
    heads = spec.info().head_sets
    return native.write(
        out_dir, tensors, network, class_set, spec.preset, spec.evaluation, _source(srcs, spec), head_sets=heads
    )
