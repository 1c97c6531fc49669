"""Inference presets: named, documented bundles of preprocessing and inference parameters."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    mode: str = "whole"  # whole image in one forward pass
    resize: str = "fixed"  # "fixed": to the model's preprocessor size, aspect ratio not kept


PRESETS: dict[str, Preset] = {
    "hf": Preset(
        "hf",
        "the Hub preprocessor (SegformerImageProcessor): Pillow bilinear resize of the uint8 image to the "
        "model's input size (512x512), x/255, ImageNet mean/std; logits bilinearly resized back "
        "(align_corners=False). Reproduces transformers' published logits.",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}", hint=f"presets: {', '.join(PRESETS)}") from None
