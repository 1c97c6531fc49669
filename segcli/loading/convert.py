"""Checkpoints of the three labs (mmsegmentation, the UPerNet authors, the PSPNet author) → segcli model
directories (model.safetensors + config.json).

Reading is the lab's format module (`formats.mmseg`, `formats.csail`, `formats.semseg`: weights-only
unpickling and a key table), writing `formats.native`; in between, every key and shape is checked against
the architecture the registry entry describes. The output is deterministic: converting the same files twice
gives identical bytes.
"""

from __future__ import annotations

import shutil
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, IntegrityError, UsageError
from ..fsutil import probe_writable
from ..model import Segmentor, SegmentorConfig
from ..model.segmentor import Normalization
from ..versions import made_by
from .checkpoint import match_state_dict
from .classes import ClassSet, class_set_for, derived_palette, known_set
from .formats import csail, mmseg, mmseg_config, native, semseg
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
        expects = f"--arch {spec.name} expects an mmsegmentation {spec.network.arch} checkpoint"
        state, meta = mmseg.read_with_meta(srcs, expects)
        if mmseg_config.config_text(meta) is not None:  # what the checkpoint says must agree with --arch
            said = mmseg_config.describe(meta, int(state[CLASSIFIER].shape[0]), str(srcs[0])).network
            _agree(said, _classifiers_of(spec.network, said), srcs[0], spec)
        return state
    state = READERS[spec.format](srcs, HEAD_OF_ARCH[spec.network.arch])  # the key table of its decoder
    if CLASSIFIERS.get(spec.network.arch, CLASSIFIER) not in state:
        raise CheckpointError(
            f"{srcs[0]}: no classifier weights: not a {spec.format} checkpoint of the kind --arch {spec.name} is",
            hint=f"--arch {spec.name} expects {' + '.join(spec.source_files) or 'its checkpoint'}",
        )
    return state


def _classifiers_of(network: SegmentorConfig, said: SegmentorConfig) -> SegmentorConfig:
    """`network` with the classifiers' sizes of the file (an entry's dataset may count other classes)."""
    out = replace(network, decode_head=replace(network.decode_head, num_classes=said.decode_head.num_classes))
    if out.auxiliary_head is not None and said.auxiliary_head is not None:
        out = replace(out, auxiliary_head=replace(out.auxiliary_head, num_classes=said.auxiliary_head.num_classes))
    return out


def _fields(obj: object, prefix: str = "") -> dict[str, object]:
    """A network description flattened to {"backbone.depth": 50, ...} (normalisation as the affine map it is)."""
    if isinstance(obj, Normalization):
        s = obj.scale
        return {f"{prefix}mean/scale": tuple(round(m / s, 3) for m in obj.mean), f"{prefix}std/scale":
                tuple(round(v / s, 3) for v in obj.std), f"{prefix}bgr": obj.bgr}  # fmt: skip
    if not is_dataclass(obj):
        return {prefix.rstrip("."): obj}
    out: dict[str, object] = {}
    for f in fields(obj):
        out.update(_fields(getattr(obj, f.name), f"{prefix}{f.name}."))
    return out


def _agree(said: SegmentorConfig, arch: SegmentorConfig, src: Path, spec: ModelSpec) -> None:
    """A field the checkpoint's config and --arch set differently changes the computation: refused by name."""
    a, b = _fields(said), _fields(arch)
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if differ:
        shown = "; ".join(f"{k}: the checkpoint {a.get(k)!r}, --arch {b.get(k)!r}" for k in differ[:4])
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise ConfigError(
            f"{src}: its own config and --arch {spec.name} describe different networks: {shown}{more}",
            hint="convert without --arch (the checkpoint's config is read), or name the entry it was trained as",
        )


def _source(srcs: list[Path], arch: str | None, license: str | None) -> dict[str, object]:
    """What config.json records about the converted files (one file: `file` / `sha256`, as before)."""
    names, digests = [s.name for s in srcs], [file_sha256(s, quiet=True) for s in srcs]
    files = {"file": names[0], "sha256": digests[0]} if len(srcs) == 1 else {"files": names, "sha256": digests}
    if arch is None:
        return {**files, "arch": None, "described_by": "the checkpoint's config", "converted_by": made_by()}
    return {**files, "arch": arch, "converted_by": made_by(), "license": license}


def _write(
    srcs: list[Path], state: dict[str, torch.Tensor], network: SegmentorConfig, where: str, out_dir: Path, **kw: Any
) -> Path:
    """`state` checked against `network` (every key and shape), written as a segcli/1 directory."""
    with torch.device("meta"):
        model = Segmentor(network)
    checked = match_state_dict(model, state, where)
    tensors = {
        key: t.detach().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous()
        for key, t in checked.items()
    }
    return native.write(out_dir, tensors, network, **kw)


def check_output(out_dir: Path, srcs: list[Path], overwrite: bool = False) -> None:
    """Before any checkpoint is read: `out_dir` can hold the conversion — a folder (or a path one can be made
    at) that is writable, not an existing model directory unless `overwrite`, with room for the weights."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory", hint="name a folder for the model")
    if not overwrite and any((out_dir / name).exists() for name in (native.CONFIG, native.WEIGHTS)):
        raise UsageError(
            f"--out {out_dir}: already holds a model (config.json / model.safetensors)",
            hint="choose another folder, or add --overwrite to replace it",
        )
    try:
        probe_writable(out_dir)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot write there ({e.strerror or e})") from None
    here = out_dir
    while not here.exists() and here != here.parent:
        here = here.parent
    need = sum(s.stat().st_size for s in srcs if s.is_file())  # float32 weights: about the checkpoints' size
    free = shutil.disk_usage(here).free
    if free < need:
        raise UsageError(
            f"--out {out_dir}: {free / 2**20:.0f} MiB free, the weights need about {need / 2**20:.0f} MiB",
            hint="free some space or choose another disk",
        )


def _check_published(srcs: list[Path], spec: ModelSpec) -> None:
    """A file named as the entry's published checkpoint must be it: mmcv writes the first digits of its
    sha256 into the name (`sha256_prefix`), checked before the file is read (by `segcli download`, and here
    on the by-hand route)."""
    if not spec.sha256_prefix or not spec.urls:
        return
    published = Path(spec.urls[0]).name
    for src in srcs:
        if src.name != published:
            continue
        digest = file_sha256(src, quiet=True)
        if not digest.startswith(spec.sha256_prefix):
            raise IntegrityError(
                f"{src}: named as {spec.name}'s published checkpoint, but its sha256 is {digest}, which does not "
                f"start with {spec.sha256_prefix}",
                hint=f"download it again (segcli download {spec.name} --force); your own checkpoint of this "
                "architecture converts under another file name",
            )


def convert(srcs: Path | list[Path], spec: ModelSpec, out_dir: Path, classes: tuple[str, ...] | None = None) -> Path:
    """Convert `srcs` (the checkpoint file(s) of the architecture `spec` describes, in its format) into `out_dir`."""
    srcs = [srcs] if isinstance(srcs, Path) else sorted(srcs)
    _check_published(srcs, spec)
    state = _read(srcs, spec)
    k = int(state[CLASSIFIERS.get(spec.network.arch, CLASSIFIER)].shape[0])
    if spec.network.threshold is not None and k == 1:  # a binary head: one logit, two classes
        k = 2
    class_set = _class_set(srcs[0], spec, k, classes)
    backbone, head = tables_from_network(spec.network)
    network = replace(
        network_from_tables(backbone, head, k, f"--arch {spec.name}"), normalization=spec.network.normalization
    )
    where = f"{' + '.join(map(str, srcs))} as --arch {spec.name}"
    source = _source(srcs, spec.name, spec.license)
    kw = dict(classes=class_set, preset=spec.preset, protocol=spec.evaluation, source=source)
    return _write(srcs, state, network, where, out_dir, **kw, head_sets=spec.info().head_sets)


def convert_described(src: Path, out_dir: Path, classes: tuple[str, ...] | None = None) -> Path:
    """Convert an mmseg checkpoint by what it says about itself: the network from the config it carries, the
    classes from its metadata (or `classes`), its test mode as the protocol."""
    state, meta = mmseg.read_with_meta([src], "an mmsegmentation checkpoint (the .pth that mmseg's train.py saves)")
    k = int(state[CLASSIFIER].shape[0])
    said = mmseg_config.describe(meta, k, str(src))
    names = classes or said.classes
    if names is None:
        raise ConfigError(
            f"{src}: the checkpoint names no classes (meta['dataset_meta'])", hint="give them with --classes FILE"
        )
    k = said.network.num_classes  # a binary head: 2 classes from its one channel
    if len(names) != k:
        raise ConfigError(f"{src}: the checkpoint has {k} classes but {len(names)} names", hint="see --classes")
    try:
        class_set = class_set_for(tuple(names), said.palette if classes is None else None)
    except ConfigError as e:
        raise ConfigError(f"{src}: {e.message}") from None
    kw = dict(classes=class_set, preset="mmseg", protocol=said.protocol, source=_source([src], None, None))
    return _write([src], state, said.network, f"{src} as its config describes it", out_dir, **kw)
