"""weights.toml → frozen `ModelSpec`s: the built-in registry plus an optional user registry."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .classes import KNOWN_SETS, known_set
from .config import ModelInfo, Origin
from .errors import ConfigError
from .model.backbones import BackboneConfig, ConvNeXtConfig, SwinConfig
from .model.heads.fcn import FCNHeadConfig
from .model.heads.uper import UPerHeadConfig
from .model.segmentor import SegmentorConfig
from .presets import MODES, PRESETS, Protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_REGISTRY = "SEGCLI_REGISTRY"
_BACKBONE_TYPES: dict[str, type] = {"convnext": ConvNeXtConfig, "swin": SwinConfig}
_HEAD_KEYS = {"channels", "pool_scales", "aux_channels", "aux_in_channels", "aux_num_convs", "auxiliary"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    name: str
    repo: str
    revision: str
    filename: str
    sha256: str | None
    license: str
    dataset: str
    network: SegmentorConfig
    crop_size: int
    preset: str
    mode: str = "whole"
    stride: int | None = None
    description: str = ""
    miou: float | None = None
    miou_ms: float | None = None
    protocol: str = ""
    registry_file: str = ""

    @property
    def backbone_name(self) -> str:
        """e.g. `convnext 3-3-9-3 /96` or `swin 2-2-6-2 /96 w7` (depths, first width, window)."""
        b = self.network.backbone
        text = f"{'-'.join(map(str, b.depths))} /{b.out_channels[0]}"
        return f"swin {text} w{b.window_size}" if isinstance(b, SwinConfig) else f"convnext {text}"

    @property
    def evaluation(self) -> Protocol:
        """The structured protocol (crop, mode, stride) that `protocol` describes in words."""
        return Protocol(self.crop_size, self.mode, self.stride)

    def info(self) -> ModelInfo:
        origin = Origin("registry", self.repo, self.revision, self.filename, self.sha256)
        return ModelInfo(
            self.name, self.network, known_set(self.dataset), (512, 512), self.preset, origin, self.evaluation
        )


_REQUIRED = ("repo", "filename", "license", "dataset", "backbone", "crop_size", "preset")
_OPTIONAL = ("revision", "sha256", "head", "description", "miou", "miou_ms", "protocol", "mode", "stride")


def _backbone(table: Any, where: str) -> BackboneConfig:
    if not isinstance(table, dict) or table.get("type") not in _BACKBONE_TYPES:
        raise ConfigError(f"{where}: `backbone` needs type = {' | '.join(map(repr, _BACKBONE_TYPES))}")
    cls = _BACKBONE_TYPES[table["type"]]
    args = {k: v for k, v in table.items() if k != "type"}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown backbone field(s) {', '.join(unknown)}", hint=f"known: {sorted(known)}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    return cls(**args)


def _network(backbone: BackboneConfig, head: dict[str, Any], num_classes: int, where: str) -> SegmentorConfig:
    unknown = sorted(set(head) - _HEAD_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown head field(s) {', '.join(unknown)}", hint=f"known: {sorted(_HEAD_KEYS)}")
    ch = backbone.out_channels
    decode = UPerHeadConfig(ch, num_classes, head.get("channels", 512), tuple(head.get("pool_scales", (1, 2, 3, 6))))
    aux = None
    if head.get("auxiliary", True):
        aux = FCNHeadConfig(
            head.get("aux_in_channels", ch[2]), num_classes, head.get("aux_channels", 256), head.get("aux_num_convs", 1)
        )
    return SegmentorConfig(backbone, decode, aux)


def _spec(name: str, entry: Any, source: Path) -> ModelSpec:
    where = f"{source} [models.{name}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if entry.get("mode", "whole") not in MODES:
        raise ConfigError(f"{where}: mode must be whole or slide, got {entry['mode']!r}")
    if entry["preset"] not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {entry['preset']!r} ({', '.join(PRESETS)})")
    if entry["dataset"] not in KNOWN_SETS:
        raise ConfigError(f"{where}: dataset {entry['dataset']!r} is not a bundled class set ({', '.join(KNOWN_SETS)})")
    sha = entry.get("sha256") or None
    if sha is not None and not _SHA256.match(sha):
        raise ConfigError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
    try:
        backbone = _backbone(entry["backbone"], where)
        network = _network(backbone, entry.get("head", {}), len(known_set(entry["dataset"]).classes), where)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    return ModelSpec(
        name=name,
        repo=entry["repo"],
        revision=entry.get("revision", "main"),
        filename=entry["filename"],
        sha256=sha,
        license=entry["license"],
        dataset=entry["dataset"],
        network=network,
        crop_size=int(entry["crop_size"]),
        preset=entry["preset"],
        description=entry.get("description", ""),
        miou=entry.get("miou"),
        miou_ms=entry.get("miou_ms"),
        protocol=entry.get("protocol", ""),
        mode=entry.get("mode", "whole"),
        stride=entry.get("stride"),
        registry_file=str(source),
    )


def parse_registry(text: str, source: Path) -> dict[str, ModelSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e})") from None
    if data.get("schema", 1) != 1:
        raise ConfigError(f"{source}: registry schema {data.get('schema')!r} is not supported (1 expected)")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: [models] must be a table of [models.NAME] entries")
    return {name: _spec(name, entry, source) for name, entry in models.items()}


def builtin_registry_path() -> Path:
    """weights.toml inside the installed package, or at the top of a source checkout."""
    packaged = resources.files("segcli") / "weights.toml"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "weights.toml"


def load_registry(user_file: str | os.PathLike[str] | None = None) -> dict[str, ModelSpec]:
    """Built-in entries, then those of `user_file` (or $SEGCLI_REGISTRY), which add or override names."""
    builtin = builtin_registry_path()
    specs = parse_registry(builtin.read_text(encoding="utf-8"), builtin)
    user = user_file or os.environ.get(ENV_REGISTRY) or None
    if user:
        path = Path(user).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read registry file ({e.strerror or e})") from None
        specs.update(parse_registry(text, path))
    return specs
