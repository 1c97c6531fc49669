"""The stable Python API: `Segmenter`.

from segcli import Segmenter
seg = Segmenter.from_pretrained("upernet-convnext-tiny")
labels = seg.predict("photo.jpg")          # numpy [H, W] class indices
logits = seg.logits("photo.jpg", "hf")     # torch float32 [K, H, W] (one forward's logits)
probs = seg.probs("photo.jpg", "mmseg-ms")   # probabilities averaged over the preset's 12 views

parser = Segmenter.from_pretrained("upp-resnet50-upernet")
parsed = parser.parse("photo.jpg")         # object / part / material maps, the scene's top 5
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .engine import Prediction, SegModel, predict_many, presets
from .engine.presets import Params
from .errors import UsageError
from .io.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .loading.checkpoint import load_weights
from .loading.class_map import ClassMap
from .loading.info import ModelInfo
from .loading.registry import load_registry
from .loading.sources import resolve
from .model import Segmentor

if TYPE_CHECKING:
    from .backends import Choice
    from .engine.grouped import Grouping
    from .engine.lazy import LazyImage

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` → cuda, then mps, then cpu; anything else as torch understands it (checked for availability)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but torch sees no CUDA GPU", hint="use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device mps requested but it is not available", hint="use --device cpu or auto")
    return dev


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device | None = None, family: str | None = None
) -> torch.dtype:
    """A dtype name or torch dtype (None: float32); "auto" → what `hardware.auto_dtype` picks for `family`
    on `device` (float32 without a device)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype.lower() == "auto":
        from .backends.hardware import auto_dtype

        return auto_dtype(device, family) if device is not None else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UsageError(f"unsupported dtype {dtype}", hint="auto, float32, bfloat16 or float16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise UsageError(f"unsupported dtype {dtype!r}", hint="auto, float32, bfloat16 or float16") from None


def family(info: ModelInfo) -> str | None:
    """The backbone family of a model ("convnext", "swin", "resnet"; None for an export)."""
    if info.network is None:
        return None
    return type(info.network.backbone).__name__.removesuffix("Config").lower()


@dataclass
class Parsing:
    """What a unified perceptual parser sees in an image, at the image's own size."""

    object: np.ndarray  # [H, W] object labels (the model's classes; 0 "-")
    part: np.ndarray  # [H, W] global part labels (`Segmenter.part_classes`; 0 where the object has no parts)
    material: np.ndarray  # [H, W] material labels (`Segmenter.material_classes`; 0 "-")
    scene: list[tuple[str, float]]  # the five most probable scenes with their probabilities, most probable first


class Segmenter:
    """A loaded model plus what is needed to run it on images (classes, palette, presets)."""

    def __init__(self, model: SegModel, info: ModelInfo) -> None:
        if isinstance(model, Segmentor):
            model.eval()
        self.model = model  # what runs: the network, or the network through another backend
        self.network = model  # the loaded network (or ONNX runner) itself
        self.info = info
        runs = {"onnx": "onnxruntime", "torchscript": "torchscript"}
        self.backend = "torch" if isinstance(model, Segmentor) else runs[getattr(model, "model_format", "onnx")]
        self.backend_choice: Choice | None = None
        self.class_map: ClassMap | None = None
        self.grouping: Grouping | None = None  # the engine's side of the class map

    def map_classes(self, class_map: ClassMap | str | os.PathLike[str]) -> ClassMap:
        """Merge the model's classes as `class_map` (a `ClassMap`, or a JSON / CSV file; see
        `segcli.loading.class_map`) says, from now on: labels, probabilities, colours and every output are
        the map's classes (`probs` / `logits`: one channel per output class, and when the map ignores
        classes one more, last channel: theirs together). Once per Segmenter."""
        from .engine.grouped import Grouping
        from .loading.class_map import load

        if self.class_map is not None:
            raise UsageError("this Segmenter's classes are merged already", hint="load the model again")
        cm = class_map if isinstance(class_map, ClassMap) else load(Path(class_map), self.info.class_set)
        outputs = len(cm.class_set.classes)
        self.grouping = Grouping(self.model.heads, cm.table, outputs, cm.ignore_label)  # refuses a parser's head
        self.class_map, self.info = cm, replace(self.info, class_set=cm.class_set)
        return cm

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        registry: str | os.PathLike[str] | None = None,
        backend: str = "torch",
    ) -> Segmenter:
        """Load a model from a registry name, a Hub repo id (`owner/name[@revision]`) or a local directory.
        `dtype`: "float32" (the default), "bfloat16", "float16" (not on a CPU), or "auto" (bfloat16 where the
        hardware computes it natively and the model family keeps its labels; see `segcli.hardware`).

        Weights are fetched into the Hugging Face cache on first use (see `segcli download`), verified
        against the registry's sha256, and loaded strictly: any missing, unexpected or mis-shaped key is
        an error. `registry` adds a user registry file (else $SEGCLI_REGISTRY).

        `backend`: "torch" (eager; the default here), "compile", "onnxruntime", "openvino" or "auto" (the fastest measured
        on this machine for the default preset's views; see `use_backend`).
        """
        dev = resolve_device(device)
        auto = isinstance(dtype, str) and dtype.lower() == "auto"
        dt = None if auto else resolve_dtype(dtype)  # None (the default): float32
        if dev.type == "cpu" and dt == torch.float16:
            raise UsageError(
                "float16 on the CPU is emulated: minutes per image instead of seconds",
                hint="use --dtype auto (bfloat16 where the CPU has AVX512-BF16 or AMX, else float32) or float32",
            )
        resolved = resolve(os.fspath(source), load_registry(registry))
        if dt is None:  # auto: by the hardware and the model family
            dt = resolve_dtype("auto", dev, family(resolved.info))
        if resolved.info.network is None:  # an exported ONNX or TorchScript file
            from .backends.onnx_file import OnnxRunner, TorchScriptRunner

            if dt != torch.float32:
                raise UsageError("exported models run in the precision they were exported in", hint="drop --dtype")
            runner = TorchScriptRunner if resolved.info.origin.kind == "torchscript" else OnnxRunner
            seg = cls(runner(resolved.weights, len(resolved.info.classes)), resolved.info)
        else:
            with torch.device("meta"):
                model = Segmentor(resolved.info.network)
            load_weights(model, resolved.weights, dt)
            seg = cls(model.to(dev), resolved.info)
        if backend != "torch":
            seg.use_backend(backend)
        return seg

    def use_backend(
        self,
        backend: str,
        preset: str | Params | None = None,
        *,
        calibrate: bool = True,
        remeasure: bool = False,
        log: Callable[[str], None] | None = None,
        run_images: int | None = None,
    ) -> Choice:
        """Run the network through `backend` from now on: "torch", "compile" (torch.compile), "onnxruntime"
        (its ONNX export, made once and cached), "openvino" (that export compiled by OpenVINO) or "auto" (the fastest of those measured here for the views of
        `preset`, default the model's; measuring ~1 min once per machine, model and view size, when
        `calibrate`, else torch until a figure is cached; measured anew when `remeasure`). Returns what was
        chosen and why. `run_images`: the run it serves; nothing cached, `auto` then measures only when that costs
        at most a tenth of the run (`backends.budget`)."""
        from .backends import select

        params = self.params(preset) if not isinstance(preset, Params) else preset
        info = self.info if self.class_map is None else replace(self.info, class_set=self.class_map.source_set)
        self.model, choice = select(
            self.network, info, params, backend, allow_calibration=calibrate, remeasure=remeasure, log=log,
            run_images=run_images,
        )  # fmt: skip
        self.backend, self.backend_choice = choice.backend, choice
        return choice

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def palette(self) -> np.ndarray:
        """[num_classes, 3] uint8 RGB colour of each class index."""
        return self.info.class_set.palette_array

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    @property
    def maps(self) -> tuple[str, ...]:
        """The label maps besides the objects' that this model gives ("part", "material" for a parser)."""
        return tuple(k for k in ("part", "material") if k in self.info.head_sets)

    @property
    def scenes(self) -> tuple[str, ...]:
        """The scene classes of a parsing model (empty for others)."""
        return self.info.head_sets["scene"].classes if "scene" in self.info.head_sets else ()

    @property
    def part_classes(self) -> list[str]:
        return list(self.info.head_sets["part"].classes) if "part" in self.info.head_sets else []

    @property
    def material_classes(self) -> list[str]:
        return list(self.info.head_sets["material"].classes) if "material" in self.info.head_sets else []

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def runtime(self) -> dict[str, Any]:
        """What besides the parameters changes the outputs: dtype, device type, backend, a class map."""
        out: dict[str, Any] = {
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device.type,
            "backend": self.backend,
        }
        return out if self.class_map is None else {**out, "class_map": self.class_map.to_json()}

    def inference(self, params: Params) -> dict[str, Any]:
        """The `inference` record of outputs made with `params`: the parameters and the runtime."""
        return {**params.to_json(), **self.runtime}

    def params(self, preset: str | Params | None = None, **overrides: Any) -> Params:
        """The resolved inference parameters of `preset` (default: the model's) with `overrides` applied:
        resize ("none" | "SHORT[:LONG]" | "HxW"), resample, mode ("whole" | "slide"), crop, stride, blend
        ("flat" | "gaussian" | "hann"), scales, flip, tile_batch. Unknown names or invalid values raise UsageError. Resolved `Params` pass as is."""
        if isinstance(preset, Params) and not any(v is not None for v in overrides.values()):
            return preset
        if isinstance(preset, Params):
            raise UsageError("give either resolved Params or a preset name with overrides, not both")
        proto = replace(self.info.protocol, align_corners=self.network.align_corners)
        if overrides.get("tile_batch") is None and self.device.type != "cpu":
            overrides["tile_batch"] = 4  # windows batch well on accelerators; on CPUs it only costs memory
        return presets.resolve(preset or self.info.default_preset, proto, self.info.input_size, **overrides)

    def run(
        self,
        image: ImageInput,
        preset: str | Params | None = None,
        *,
        labels: bool = True,
        probs: bool = False,
        logits: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        **overrides: Any,
    ) -> Prediction:
        """Everything `predict` / `logits` compute, in one pass: labels, float16 probabilities and/or
        float32 logits at the image's size, plus the resolved parameters."""
        params = self.params(preset, **overrides)
        rgb = load_image(image, max_pixels=max_pixels)
        return predict_many(
            self.model, [rgb], params, labels=labels, probs=probs, logits=logits, grouping=self.grouping
        )[0]

    def run_many(
        self,
        images: list[np.ndarray],
        params: Params,
        *,
        probs: bool = False,
        progress: Callable[[int, int], None] | None = None,
        confidence: bool = False,
    ) -> list[Prediction]:
        """Labels (and float16 probabilities; with `confidence`, the largest probability and the normalised
        entropy per pixel) of decoded RGB uint8 images [H, W, 3] with resolved `params`; same-size images
        share forward passes; `progress(done, total)`: their windows (of every view) done. What batch
        prediction calls."""
        return predict_many(
            self.model, images, params, probs=probs, progress=progress, confidence=confidence, grouping=self.grouping
        )

    def stream(
        self,
        image: np.ndarray | LazyImage,
        params: Params,
        emit: Callable[[int, dict[str, np.ndarray]], None],
        progress: Callable[[int, int], None] | None = None,
        probs: bool = False,
        confidence: bool = False,
    ) -> Prediction:
        """Run one image (a `LazyImage` read by rows, or an array) handing each band of finished label rows
        to `emit(first_row, maps)`, top to bottom: outputs of any size in bounded memory (rasters); `probs`
        adds the uint8-scaled probabilities [K, rows, W] to the maps, `confidence` the float32 "confidence"
        and "entropy" rows."""
        from .engine.stream import predict_rows

        return predict_rows(self.model, image, params, emit, progress, probs, confidence, self.grouping)

    def logits(self, image: ImageInput, preset: str | Params | None = None, **overrides: Any) -> torch.Tensor:
        """Float32 logits [num_classes, H, W] on the CPU, at the image's own size (a parser's: its objects').
        A preset that averages probabilities (several views, a softmax per window) has none to give: a
        UsageError that says so; `probs` gives what it computes."""
        params = self.params(preset, **overrides)
        if why := params.averages:
            raise UsageError(
                f"preset {params.preset} {why}: its result is averaged probabilities, not logits",
                hint="use probs(), or overrides that make it one forward pass (scales=1.0, flip=False, mode='whole')",
            )
        out = self.run(image, params, labels=False, logits=True).logits
        assert out is not None  # asked for
        return out

    def probs(self, image: ImageInput, preset: str | Params | None = None, **overrides: Any) -> torch.Tensor:
        """Float32 class probabilities [num_classes, H, W] on the CPU at the image's own size: the softmax (a
        binary head: 1 - sigmoid, sigmoid), averaged over the views and windows that the preset averages (a
        parser's: its objects')."""
        params = self.params(preset, **overrides)
        out = self.run(image, params, labels=False, logits=True).logits  # log-probabilities when averaged
        assert out is not None
        if self.model.heads.binary_threshold is not None:  # one logit (of the mean probability, when averaged)
            return self.model.heads.softmax(out)
        return out.exp() if params.averages else out.softmax(0)

    def predict(self, image: ImageInput, preset: str | Params | None = None, **overrides: Any) -> np.ndarray:
        """Class indices [H, W] at the image's own size (uint8 up to 256 classes, else uint16)."""
        labels = self.run(image, preset, **overrides).labels
        assert labels is not None
        return labels

    def parse(self, image: ImageInput, preset: str | Params | None = None, **overrides: Any) -> Parsing:
        """Objects, parts, materials and the scene of an image (a unified perceptual parsing model only).
        Every preset and override works; each head's probabilities are averaged over the views."""
        if not self.scenes or self.maps != ("part", "material"):
            raise UsageError(
                f"{self.info.name} is not a unified perceptual parser: it has no part, material or scene head",
                hint="use predict() / logits(), or load upp-resnet50-upernet",
            )
        pred = self.run(image, preset, **overrides)
        assert pred.labels is not None and pred.image_probs is not None  # a parser's run has both
        top = np.argsort(-pred.image_probs, kind="stable")[:5]
        scene = [(self.scenes[i], float(pred.image_probs[i])) for i in top]
        return Parsing(pred.labels, pred.maps["part"], pred.maps["material"], scene)

    def __repr__(self) -> str:
        return f"Segmenter({self.info.name!r}, classes={self.num_classes}, device={self.device}, dtype={self.dtype})"
