"""weights.toml → frozen `ModelSpec`s: the built-in registry plus an optional user registry."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..engine.presets import MODES, PRESETS, Protocol, Resize
from ..errors import ConfigError, UsageError
from ..fsutil import read_regular
from ..model.backbones import ResNetConfig, SwinConfig
from ..model.segmentor import Normalization, SegmentorConfig
from .classes import KNOWN_SETS, head_sets, known_set, parsing_head
from .formats.arch import network_from_tables
from .formats.schema import CROP, MEAN, RESIZE, SCALE, STD, Bool, Float, List, Str, Table
from .info import ModelInfo, Origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_REGISTRY = "SEGCLI_REGISTRY"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"  # the Hub's rules for a repo name part
URL = r"(https?|file)://[^\s]+"
# the checkpoint formats segcli converts (`segcli.loading.formats.<name>`, `convert.READERS`) → who publishes them
FORMATS = {"mmseg": "mmsegmentation", "csail": "the UPerNet authors (CSAIL)", "semseg": "the PSPNet author"}
# how each lab's code computes what a checkpoint's shapes do not say: defaults of an entry's backbone table
CONVENTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "mmseg": {"resnet": {"dilate_conv2": False}},  # mmseg's BasicBlock: conv2 undilated
    "csail": {"resnet": {"dilate_conv2": True}},  # mit_semseg's _nostride_dilate: every 3×3 conv
    "semseg": {},  # bottlenecks only
}
MAX_REGISTRY_BYTES = 4 << 20


def _no_dots(pattern: str) -> str:
    return rf"(?!.*\.\.)(?!.*\.$){pattern}"


ENTRY = Table(
    {
        "repo": Str(max_len=200, pattern=_no_dots(rf"{NAME}/{NAME}")),
        "revision": Str(max_len=256, pattern=_no_dots(r"[A-Za-z0-9][A-Za-z0-9_./-]*")),
        "filename": Str(max_len=256, pattern=_no_dots(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")),
        "sha256": Str(max_len=64),
        "url": Str(max_len=2048, pattern=URL),
        "urls": List(Str(max_len=2048, pattern=URL), 1, 4),
        "download_page": Str(max_len=2048, pattern=r"https?://[^\s]+"),
        "files": List(Str(max_len=512), 1, 4),
        "format": Str(choices=tuple(FORMATS)),
        "sha256_prefix": Str(max_len=64),
        "license": Str(max_len=200),
        "dataset": Str(max_len=64),
        "crop_size": CROP,
        "stride": CROP,
        "preset": Str(max_len=32),
        "mode": Str(max_len=32),
        "resize": RESIZE,
        "description": Str(max_len=2000),
        "protocol": Str(max_len=2000),
        "miou": Float(0.0, 100.0),
        "miou_ms": Float(0.0, 100.0),
        "preprocess": Table({"mean": MEAN, "std": STD, "scale": SCALE, "bgr": Bool()}, ("mean", "std"), closed=True),
        "backbone": Table({}),  # the architecture tables: checked by `formats.arch`
        "head": Table({}),
    },
    required=("license", "dataset", "backbone", "crop_size", "preset"),
    closed=True,
)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    name: str
    license: str
    dataset: str
    network: SegmentorConfig
    crop_size: int
    preset: str
    repo: str | None = None  # Hub safetensors: repo, revision, filename, sha256
    revision: str = "main"
    filename: str | None = None
    sha256: str | None = None
    urls: tuple[str, ...] = ()  # checkpoint file(s) converted locally (`segcli download` / `segcli convert`)
    format: str = "mmseg"  # of those files: mmseg | csail (encoder + decoder) | semseg
    download_page: str | None = None  # files that cannot be fetched automatically (Google Drive): get them here
    files: tuple[str, ...] = ()  # ... these, found on that page
    sha256_prefix: str | None = None  # the hash prefix mmcv puts in published file names
    mode: str = "whole"
    stride: int | None = None
    resize: str | None = None
    description: str = ""
    miou: float | None = None
    miou_ms: float | None = None
    protocol: str = ""
    registry_file: str = ""

    @property
    def needs_conversion(self) -> bool:
        return bool(self.urls) or self.download_page is not None

    @property
    def url(self) -> str | None:
        return self.urls[0] if self.urls else None

    @property
    def source_files(self) -> tuple[str, ...]:
        """The checkpoint file names `segcli convert` takes for this entry."""
        return tuple(Path(u).name for u in (self.urls or self.files))

    @property
    def backbone_name(self) -> str:
        """e.g. `convnext 3-3-9-3 /96`, `swin 2-2-6-2 /96 w7` or `resnet50-d8 (psp)`."""
        b = self.network.backbone
        if isinstance(b, ResNetConfig):
            dilated = "-d8" if max(b.dilations) > 1 else ""
            return f"resnet{b.depth}{dilated} ({self.network.arch})"
        text = f"{'-'.join(map(str, b.depths))} /{b.out_channels[0]}"
        return f"swin {text} w{b.window_size}" if isinstance(b, SwinConfig) else f"convnext {text}"

    @property
    def evaluation(self) -> Protocol:
        """The structured protocol (crop, mode, stride) that `protocol` describes in words."""
        align = self.network.decode_head.align_corners
        return Protocol(self.crop_size, self.mode, self.stride, align, self.resize)

    def info(self) -> ModelInfo:
        origin = Origin("registry", self.repo, self.revision if self.repo else None, self.filename, self.sha256)
        return ModelInfo(
            self.name,
            self.network,
            known_set(self.dataset),
            (512, 512),
            self.preset,
            origin,
            self.evaluation,
            head_sets(self.dataset) if self.network.arch == "upp" else {},
        )


def _network(entry: dict[str, Any], where: str) -> SegmentorConfig:
    """The entry's network: its backbone and head tables (a `upp` head takes its parts, materials and
    scenes from the dataset), its `preprocess` normalisation."""
    head = entry.get("head")
    if isinstance(head, dict) and head.get("type") == "upp":
        try:
            head = {**parsing_head(entry["dataset"]), **head}
        except ConfigError as e:
            raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
    backbone = entry["backbone"]
    if isinstance(backbone, dict):  # the lab's conventions, where the entry does not say
        backbone = {**CONVENTIONS[entry.get("format", "mmseg")].get(str(backbone.get("type")), {}), **backbone}
    network = network_from_tables(backbone, head, len(known_set(entry["dataset"]).classes), where)
    if network.arch == "upp":  # the dataset's class sets name the heads' channels: the sizes must agree
        d, sets = network.decode_head, head_sets(entry["dataset"])
        sizes = {"part": d.part_classes, "material": d.material_classes, "scene": d.scene_classes}  # type: ignore[union-attr]
        for name, n in sizes.items():
            if n != len(sets[name].classes):
                raise ConfigError(
                    f"{where}: the {name} head has {n} classes but dataset {entry['dataset']} names "
                    f"{len(sets[name].classes)}",
                    hint=f"leave {name}_classes out: the dataset sets it",
                )
    if "preprocess" in entry:
        pre = entry["preprocess"]
        norm = Normalization(tuple(pre["mean"]), tuple(pre["std"]), pre.get("scale", 1 / 255), pre.get("bgr", False))
        network = SegmentorConfig(network.backbone, network.decode_head, network.auxiliary_head, norm)
    return network


def _spec(name: str, entry: Any, source: Path) -> ModelSpec:
    where = f"{source} [models.{name}]"
    if not re.fullmatch(_no_dots(NAME), name):
        raise ConfigError(
            f"{source}: model name {name[:60]!r} is not allowed",
            hint="names use letters, digits, '-', '_' and '.', start with a letter or digit, no '..' or '/'",
        )
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    entry = ENTRY.check({k: v for k, v in entry.items() if v != ""}, where, "")
    if entry.get("resize") is not None:
        try:
            Resize.parse(entry["resize"])
        except UsageError as e:
            raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
    if entry.get("mode", "whole") not in MODES:
        raise ConfigError(f"{where}: mode must be whole or slide, got {entry['mode']!r}")
    if entry["preset"] not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {entry['preset']!r} ({', '.join(PRESETS)})")
    if entry["dataset"] not in KNOWN_SETS:
        raise ConfigError(f"{where}: dataset {entry['dataset']!r} is not a bundled class set ({', '.join(KNOWN_SETS)})")
    sources = [k for k in ("repo", "url", "urls", "download_page") if entry.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"{where}: give exactly one of repo + filename (Hub safetensors), url / urls (checkpoints to convert) "
            "or download_page + files (checkpoints fetched by hand)"
        )
    if entry.get("download_page") and not entry.get("files"):
        raise ConfigError(f"{where}: download_page needs files (the checkpoint files to get there)")
    if entry.get("repo") and not entry.get("filename"):
        raise ConfigError(f"{where}: missing field(s) filename")
    sha = entry.get("sha256") or None
    if sha is not None and not _SHA256.match(sha):
        raise ConfigError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
    prefix = entry.get("sha256_prefix") or None
    if prefix is not None and not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
        raise ConfigError(f"{where}: sha256_prefix must be 8 to 64 lowercase hex digits, got {prefix!r}")
    network = _network(entry, where)
    return ModelSpec(
        name=name,
        repo=entry.get("repo"),
        revision=entry.get("revision", "main"),
        filename=entry.get("filename"),
        sha256=sha,
        urls=tuple(entry["urls"]) if entry.get("urls") else ((entry["url"],) if entry.get("url") else ()),
        format=entry.get("format", "mmseg"),
        download_page=entry.get("download_page"),
        files=tuple(entry.get("files", ())),
        sha256_prefix=prefix,
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
        resize=entry.get("resize"),
        registry_file=str(source),
    )


def parse_registry(text: str, source: Path) -> dict[str, ModelSpec]:
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML (nested too deeply)") from None
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
    return Path(__file__).resolve().parents[2] / "weights.toml"


def load_registry(user_file: str | os.PathLike[str] | None = None) -> dict[str, ModelSpec]:
    """Built-in entries, then those of `user_file` (or $SEGCLI_REGISTRY), which add or override names."""
    builtin = builtin_registry_path()
    specs = parse_registry(builtin.read_text(encoding="utf-8"), builtin)
    user = user_file or os.environ.get(ENV_REGISTRY) or None
    if user:
        path = Path(user).expanduser()
        try:
            text = read_regular(path, MAX_REGISTRY_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read registry file ({getattr(e, 'strerror', None) or e})") from None
        specs.update(parse_registry(text, path))
    return specs
