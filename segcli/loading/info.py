"""What segcli knows about a loaded model, whatever its source: `ModelInfo`, and where it came from: `Origin`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.presets import Protocol
from ..model.segmentor import SegmentorConfig
from .classes import ClassSet


@dataclass(frozen=True)
class Origin:
    """Where the weights come from, recorded in every output for provenance."""

    kind: str  # "registry" | "hub" | "local" | "converted" | "onnx"
    repo: str | None = None
    revision: str | None = None
    filename: str | None = None
    sha256: str | None = None
    path: str | None = None  # local directory or file


@dataclass(frozen=True)
class ModelInfo:
    """The one description every source resolves to (registry entry, Hub repository, local directory, export).

    `network` is None for an exported model: its graph is in the file, not described by a config."""

    name: str
    network: SegmentorConfig | None
    class_set: ClassSet
    input_size: tuple[int, int] = (512, 512)  # (H, W) the `hf` preset resizes to (preprocessor_config.json)
    default_preset: str = "hf"
    origin: Origin = field(default_factory=lambda: Origin("local"))
    protocol: Protocol = field(default_factory=Protocol)  # what the `mmseg` presets use
    head_sets: dict[str, ClassSet] = field(default_factory=dict)  # other heads' classes: part, material, scene

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_set.classes
