"""Inference presets: named, documented bundles of inference parameters, and explicit overrides.

`hf`        the Hub preprocessor: Pillow bilinear resize to the model's input size (512×512), whole image.
`mmseg`     mmsegmentation's single-scale test protocol behind the model zoo's mIoU: keep-ratio resize to
            short side = crop (512 or 640) with the long side ≤ 4×crop, plain bilinear (cv2 geometry);
            sliding windows (crop, stride 2/3·crop) for ConvNeXt, the whole image for Swin.
`mmseg-ms`  `mmseg` at 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 × the resize target, each with and without a
            horizontal flip (12 views); softmax probabilities averaged (mmseg `--aug-test`).
`csail`     the UPerNet authors' test (mit_semseg eval.py): short side 300, 375, 450, 525, 600 (long side ≤
            1000), both sides rounded up to a multiple of 8 (dilated) or 32 (UPerNet) by stretching, Pillow
            bilinear, whole image; softmax at the original size averaged over the five; no flip.
`semseg`    the PSPNet author's test (hszhao/semseg tool/test.py): long side = base size (512, or 2048 for
            Cityscapes), float bilinear; windows of 473 (713) with stride ⌈2/3·crop⌉, an image smaller than
            a window padded (centred) with the mean colour, every window also run flipped; softmax averaged
            over the flip and over windows, resized back.
`semseg-ms` `semseg` at 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 × the base size, probabilities averaged.
`upp`       the unified perceptual parser's test (unifiedparsing test.py): short side 300, 400, 500, 600
            (long side ≤ 1000), sides rounded up to a multiple of 8 by stretching, plain bilinear (cv2
            geometry); each head's softmax at the original size averaged over the four (the scene too).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import UsageError

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
MAX_SIDE = 16384  # resize targets, crops and strides: 1..MAX_SIDE pixels
SCALE_RANGE = (1 / 64, 16.0)  # ratios of the resize target
MODES = ("whole", "slide")
RESAMPLES = ("pil", "bilinear", "float")  # Pillow (antialiased) | cv2 geometry, uint8 | the same, float32
CSAIL_SIZES = (300, 375, 450, 525, 600)
UPP_SIZES = (300, 400, 500, 600)


@dataclass(frozen=True)
class Protocol:
    """A model's evaluation protocol (data from weights.toml / config.json), which presets refer to."""

    crop_size: int = 512
    mode: str = "whole"
    stride: int | None = None  # default: 2/3 of the crop, as mmseg's configs use (341 for 512, 426 for 640)
    align_corners: bool = False
    resize: str | None = None  # the test pipeline's resize (default: keep ratio, short side crop, long ≤ 4×crop)

    @property
    def slide_stride(self) -> int:
        return self.stride or self.crop_size * 2 // 3


@dataclass(frozen=True)
class Resize:
    """How the image is resized before inference (the text forms `--resize` takes):

    `none`; `SHORT[:LONG]` keep ratio (mmseg); `HxW` fixed; `SHORT:LONG/M` keep ratio then each side rounded
    up to a multiple of M by stretching (CSAIL; scales multiply SHORT only); `long:L` the long side L, the
    other in proportion (semseg; scales multiply L)."""

    kind: str = "none"  # "none" | "keep" | "fixed" | "multiple" | "long"
    short: int = 0
    long: int = 0
    height: int = 0
    width: int = 0
    multiple: int = 0

    @classmethod
    def parse(cls, text: str | Resize) -> Resize:
        if isinstance(text, Resize):
            return text
        t = str(text).strip().lower()
        if t == "none":
            return cls("none")
        if m := re.fullmatch(r"(\d{1,6})x(\d{1,6})", t):
            return cls("fixed", height=_side(m[1], text), width=_side(m[2], text))
        if m := re.fullmatch(r"(\d{1,6}):(\d{1,6})/(\d{1,3})", t):
            multiple = int(m[3])
            if not 1 <= multiple <= 256:
                raise UsageError(f"invalid resize {text!r}: the multiple must be 1..256", hint="e.g. 300:1000/32")
            return cls("multiple", short=_side(m[1], text), long=_side(m[2], text), multiple=multiple)
        if m := re.fullmatch(r"long:(\d{1,6})", t):
            return cls("long", long=_side(m[1], text))
        if m := re.fullmatch(r"(\d{1,6})(?::(\d{1,6}))?", t):
            short = _side(m[1], text)
            return cls("keep", short=short, long=_side(m[2], text) if m[2] else 4 * short)
        raise UsageError(
            f"invalid resize {text!r}",
            hint="use none, SHORT[:LONG] (keep ratio, e.g. 512:2048), HxW (e.g. 512x512), SHORT:LONG/M or long:L",
        )

    def __str__(self) -> str:
        if self.kind == "keep":
            return f"{self.short}:{self.long}"
        if self.kind == "multiple":
            return f"{self.short}:{self.long}/{self.multiple}"
        if self.kind == "long":
            return f"long:{self.long}"
        if self.kind == "fixed":
            return f"{self.height}x{self.width}"
        return "none"


@dataclass(frozen=True)
class Params:
    """Fully resolved inference parameters; recorded in every prediction's JSON."""

    preset: str
    resize: Resize = field(default_factory=Resize)
    resample: str = "bilinear"  # image resampling: "pil" (antialiased) | "bilinear" (cv2 geometry) | "float"
    mode: str = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile_batch: int = 1
    align_corners: bool = False  # of the views' results resized back to the image
    # the PSPNet author's windows (semseg): softmax per window, probabilities averaged over windows; each
    # window also run mirrored; a window smaller than the crop padded (centred) with the mean colour
    window_softmax: bool = False
    window_flip: bool = False
    window_pad: bool = False
    # the CSAIL tests: a whole image's logits resized once, from the model's own resolution (1/4, 1/8)
    # straight to the image size (not first to the view's size); whole mode only
    resize_once: bool = False
    blend: str = "flat"  # slide windows: "flat" (mmseg's mean) | "gaussian" | "hann" (engine.slide)

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def averages(self) -> str | None:
        """What makes the result averaged probabilities rather than one forward's logits (None: nothing)."""
        if self.views > 1:
            return f"averages the softmax of {self.views} views"
        if self.window_softmax:
            return "averages the softmax of its windows"
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["resize"] = str(self.resize)
        d["crop"] = list(self.crop) if self.crop else None
        d["stride"] = list(self.stride) if self.stride else None
        d["scales"] = list(self.scales)
        for key in (
            "window_softmax",
            "window_flip",
            "window_pad",
            "resize_once",
        ):  # recorded when used: older runs' fingerprints hold
            if not d[key]:
                del d[key]
        if d["blend"] == "flat":
            del d["blend"]
        return d


def _side(text: str, whole: Any) -> int:
    v = int(text)
    if not 1 <= v <= MAX_SIDE:
        raise UsageError(
            f"invalid resize {whole!r}: sizes must be 1..{MAX_SIDE} pixels", hint="e.g. 512:2048 or 512x512"
        )
    return v


def _pair(v: Any, name: str) -> tuple[int, int]:
    pair: tuple[int, int] | None = None
    if isinstance(v, int) and not isinstance(v, bool):
        pair = (v, v)
    elif isinstance(v, str) and (m := re.fullmatch(r"\s*(\d{1,6})\s*(?:x\s*(\d{1,6}))?\s*", v)):
        pair = (int(m[1]), int(m[2] or m[1]))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        pair = (int(v[0]), int(v[1]))
    if pair is None or not all(1 <= side <= MAX_SIDE for side in pair):
        raise UsageError(f"invalid {name} {v!r}", hint=f"give N or HxW with sides 1..{MAX_SIDE}, e.g. {name}=512")
    return pair


def _scales(v: Any) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in (v.split(",") if isinstance(v, str) else v))
    except (TypeError, ValueError):
        raise UsageError(f"invalid scales {v!r}", hint="give ratios like 0.5,0.75,1.0") from None
    lo, hi = SCALE_RANGE
    if not vals or any(s <= 0 for s in vals):
        raise UsageError(f"invalid scales {v!r}: ratios must be positive")
    if len(vals) > 32 or not all(math.isfinite(s) and lo <= s <= hi for s in vals):
        raise UsageError(
            f"invalid scales {v!r}: give 1 to 32 finite ratios between 1/64 and 16", hint="e.g. 0.5,0.75,1.0"
        )
    return vals


def _mmseg(name: str, proto: Protocol) -> Params:
    crop = proto.crop_size
    slide = proto.mode == "slide"
    params = Params(
        name,
        Resize.parse(proto.resize) if proto.resize else Resize("keep", short=crop, long=4 * crop),
        "bilinear",
        proto.mode,
        (crop, crop) if slide else None,
        (proto.slide_stride,) * 2 if slide else None,
        align_corners=proto.align_corners,
    )
    return replace(params, scales=MS_RATIOS, flip=True) if name == "mmseg-ms" else params


def _csail(name: str, proto: Protocol) -> Params:
    """`csail` (Pillow resize, five sizes) and `upp` (cv2-style resize, four sizes): the same procedure."""
    resize = Resize.parse(proto.resize) if proto.resize else Resize("multiple", short=300, long=1000, multiple=8)
    if resize.kind != "multiple":
        resize = Resize("multiple", short=300, long=1000, multiple=8)
    sizes, resample = (CSAIL_SIZES, "pil") if name == "csail" else (UPP_SIZES, "bilinear")
    scales = tuple(size / resize.short for size in sizes)
    # the logits go from the model's resolution straight to the image with the network's own align_corners
    # (the authors' eval.py uses False, which their networks share)
    return Params(name, resize, resample, "whole", scales=scales, align_corners=proto.align_corners, resize_once=True)


def _semseg(name: str, proto: Protocol) -> Params:
    resize = Resize.parse(proto.resize) if proto.resize else Resize("long", long=512)
    crop = proto.crop_size
    stride = proto.stride or math.ceil(crop * 2 / 3)
    scales = MS_RATIOS if name == "semseg-ms" else (1.0,)
    return Params(
        name,
        resize,
        "float",
        "slide",
        (crop, crop),
        (stride, stride),
        scales,
        align_corners=False,
        window_softmax=True,
        window_flip=True,
        window_pad=True,
    )


def _base(name: str, proto: Protocol, input_size: tuple[int, int]) -> Params:
    if name == "hf":
        return Params(
            "hf",
            Resize("fixed", height=input_size[0], width=input_size[1]),
            "pil",
            "whole",
            align_corners=proto.align_corners,
        )
    if name in ("mmseg", "mmseg-ms"):
        return _mmseg(name, proto)
    if name in ("csail", "upp"):
        return _csail(name, proto)
    if name in ("semseg", "semseg-ms"):
        return _semseg(name, proto)
    raise UsageError(f"unknown preset {name!r}", hint=f"presets: {', '.join(PRESETS)}")


PRESETS = {
    "hf": "Hub preprocessor: Pillow bilinear resize to 512x512, whole image (transformers' published logits)",
    "mmseg": "mmseg single-scale test: keep-ratio short side = crop (long <= 4x), slide (ConvNeXt) or whole",
    "mmseg-ms": "mmseg multi-scale + flip test: ratios 0.5-1.75 x flip, softmax averaged (12 views)",
    "csail": "UPerNet authors' test: short side 300-600 (5 sizes), rounded up to x8/x32, softmax averaged",
    "semseg": "PSPNet author's test: long side 512/2048, 473/713 windows each flipped, softmax averaged",
    "semseg-ms": "semseg at 0.5-1.75 x the long side, probabilities averaged",
    "upp": "unified perceptual parser's test: short side 300-600 (4 sizes), rounded up to x8, softmax averaged",
}
BLENDS = ("flat", "gaussian", "hann")  # how slide windows are averaged (engine.slide)
OVERRIDES = ("resize", "resample", "mode", "crop", "stride", "scales", "flip", "tile_batch", "blend")


def check(name: str | None, **overrides: Any) -> None:
    """Syntax of a preset name and overrides, before any model is loaded (typos fail fast)."""
    if name is not None and name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", hint=f"presets: {', '.join(PRESETS)}")
    resolve("mmseg", Protocol(mode="slide"), **{k: v for k, v in overrides.items() if k != "mode"})
    if overrides.get("mode") not in (None, *MODES):
        raise UsageError(f"invalid mode {overrides['mode']!r}", hint="whole or slide")


def resolve(name: str, proto: Protocol, input_size: tuple[int, int] = (512, 512), **overrides: Any) -> Params:
    """The preset's parameters for a model, with explicit overrides applied (None = keep the preset's)."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise UsageError(f"unknown inference option(s) {', '.join(unknown)}", hint=f"known: {', '.join(OVERRIDES)}")
    p = _base(name, proto, input_size)
    o = {k: v for k, v in overrides.items() if v is not None}
    if "resize" in o:
        p = replace(p, resize=Resize.parse(o["resize"]))
    if "resample" in o:
        if o["resample"] not in RESAMPLES:
            raise UsageError(f"invalid resample {o['resample']!r}", hint="pil or bilinear")
        p = replace(p, resample=o["resample"])
    if "mode" in o:
        if o["mode"] not in MODES:
            raise UsageError(f"invalid mode {o['mode']!r}", hint="whole or slide")
        p = replace(p, mode=o["mode"])
    if "scales" in o:
        p = replace(p, scales=_scales(o["scales"]))
    if "flip" in o:  # False: no mirrored pass anywhere, the windows' own mirrors (semseg) included
        p = replace(p, flip=bool(o["flip"]), window_flip=p.window_flip and bool(o["flip"]))
    if "tile_batch" in o:
        if not 1 <= int(o["tile_batch"]) <= 256:
            raise UsageError("tile batch (--tile-batch, tile_batch=) must be at least 1 (and at most 256)")
        p = replace(p, tile_batch=int(o["tile_batch"]))
    if p.mode == "slide":
        crop = _pair(o["crop"], "crop") if "crop" in o else p.crop or (proto.crop_size,) * 2
        if "stride" in o:
            stride = _pair(o["stride"], "stride")
        else:  # the preset's stride goes with the preset's crop; another crop gets 2/3 of itself
            stride = p.stride if p.stride and "crop" not in o else (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
        if min(crop) < 1 or min(stride) < 1 or stride[0] > crop[0] or stride[1] > crop[1]:
            raise UsageError(f"invalid window: crop {crop}, stride {stride}", hint="need 1 <= stride <= crop")
        p = replace(p, crop=crop, stride=stride, resize_once=False)
        if "blend" in o:
            if o["blend"] not in BLENDS:
                raise UsageError(f"invalid blend {o['blend']!r}", hint=f"one of {', '.join(BLENDS)}")
            p = replace(p, blend=o["blend"])
    else:
        if "crop" in o or "stride" in o or o.get("blend", "flat") != "flat":
            raise UsageError(
                "crop, stride and blend (--crop/--stride/--blend, crop=/stride=/blend=) apply to slide mode",
                hint='add --mode slide (mode="slide" in Python)',
            )
        # one whole image: no windows to pad, to take a softmax of or to mirror one by one (a mirrored whole
        # image is a flipped view, averaged as views are)
        flip = p.flip or p.window_flip
        p = replace(p, crop=None, stride=None, flip=flip, window_softmax=False, window_pad=False, window_flip=False)
    return p
