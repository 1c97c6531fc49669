"""The segmentor only wires the parts: normalise → backbone → decode head → logits at the input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..engine.heads import Heads
from .backbones import BackboneConfig, build_backbone
from .heads.fcn import FCNHead, FCNHeadConfig
from .heads.psp import PSPHead, PSPHeadConfig
from .heads.uper import UPerHead, UPerHeadConfig
from .heads.upp import UPPHead, UPPHeadConfig
from .layers import resize

HeadConfig = UPerHeadConfig | PSPHeadConfig | UPPHeadConfig
HEADS: dict[type, type[nn.Module]] = {UPerHeadConfig: UPerHead, PSPHeadConfig: PSPHead, UPPHeadConfig: UPPHead}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """x_model = (x_uint8 * scale - mean) / std, per channel, the channels in RGB order (BGR with `bgr`:
    the unified-perceptual-parsing model's Caffe-style input; mean and std are then in BGR order too)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1 / 255
    bgr: bool = False


@dataclass(frozen=True)
class SegmentorConfig:
    backbone: BackboneConfig
    decode_head: HeadConfig
    auxiliary_head: FCNHeadConfig | None = None
    normalization: Normalization = Normalization()

    @property
    def threshold(self) -> float | None:
        """A binary head's threshold (its one logit: label 1 where the sigmoid exceeds it); None otherwise."""
        return getattr(self.decode_head, "threshold", None)

    @property
    def num_classes(self) -> int:
        """The classes labels take (a binary head: 2 from its one channel)."""
        return 2 if self.threshold is not None else self.decode_head.num_classes

    @property
    def arch(self) -> str:
        if isinstance(self.decode_head, UPPHeadConfig):
            return "upp"
        return "pspnet" if isinstance(self.decode_head, PSPHeadConfig) else "upernet"

    @property
    def heads(self) -> Heads:
        d = self.decode_head
        if isinstance(d, UPPHeadConfig):
            return d.heads
        return Heads.binary(d.threshold) if d.threshold is not None else Heads.single(d.num_classes)


class Segmentor(nn.Module):
    """Normalised [B, 3, H, W] → logits [B, K, H, W] (decode-head logits at 1/4 or 1/8, bilinearly upsampled).

    Implements the engine's `SegModel`. The auxiliary head, when the checkpoint has one, is loaded (its keys
    are checked like any other) but only runs in `forward_aux`; inference never pays for it.
    """

    mean: torch.Tensor  # [1, 3, 1, 1] buffers
    std: torch.Tensor

    def __init__(self, cfg: SegmentorConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.decode_head = HEADS[type(cfg.decode_head)](cfg.decode_head)
        self.auxiliary_head = FCNHead(cfg.auxiliary_head) if cfg.auxiliary_head else None
        n = cfg.normalization
        # Not in the state dict; created on the CPU so a model built on "meta" still has real constants.
        self.register_buffer("mean", torch.tensor(n.mean, device="cpu").view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(n.std, device="cpu").view(1, 3, 1, 1), persistent=False)
        self.scale = n.scale

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in the 0..255 range (any float dtype) → the backbone's input."""
        if self.config.normalization.bgr:
            pixels = pixels.flip(1)
        mean, std = self.mean.to(pixels.dtype), self.std.to(pixels.dtype)
        return (pixels * self.scale - mean) / std

    @property
    def align_corners(self) -> bool:
        return bool(self.decode_head.align_corners)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features in NCHW layout (ConvNeXt's permutes leave channels-last strides, which make
        every later convolution and resize slower on CPUs)."""
        return [f.contiguous() for f in self.backbone(x)]

    @property
    def heads(self) -> Heads:
        return self.config.heads

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, C, H, W] (at the head's resolution without `upsample`); with image-level outputs
        (the parsing model's scene), the tuple (pixels, image logits [B, S])."""
        out = self.decode_head(self.features(x))  # [B, C, H/4, W/4] (or /8)
        pixels, image = out if isinstance(out, tuple) else (out, None)
        if upsample:
            pixels = resize(pixels, (x.shape[-2], x.shape[-1]), self.align_corners)
        return pixels if image is None else (pixels, image)

    def forward_aux(self, x: torch.Tensor) -> torch.Tensor:
        """Auxiliary-head logits [B, K, H, W] (training-time head; for checks and analysis)."""
        if self.auxiliary_head is None:
            raise ValueError("this model has no auxiliary head")
        return resize(self.auxiliary_head(self.features(x)), (x.shape[-2], x.shape[-1]), self.align_corners)


def network_size(cfg: SegmentorConfig) -> tuple[int, int]:
    """(parameter count, bytes of the fp32 state dict) of a network, without allocating it."""
    with torch.device("meta"):
        model = Segmentor(cfg)
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return params, nbytes
