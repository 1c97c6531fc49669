"""Recipes: mmseg's training configs per backbone family, as defaults (GUIDE §8; every value overridable).

* `resnet` (PSPNet, UPerNet-ResNet: `schedule_160k.py`): SGD lr 0.01, momentum 0.9, weight decay 5e-4;
  poly decay, power 0.9, to 1e-4, per iteration.
* `convnext` (`convnext-tiny_upernet_8xb2-amp-160k`): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05
  (none on 1-D parameters and biases), stage-wise learning-rate decay 0.9 (mmseg's
  `LearningRateDecayOptimizerConstructor`: stem and downsampling 0.9⁷, stage i 0.9^(6-i), the rest 1);
  linear warmup from 1e-6 × lr, then poly power 1.0 to 0.
* `upp` (the unified perceptual parser, CSAILVision/unifiedparsing `train.py`): SGD lr 0.02, momentum 0.9,
  weight decay 1e-4 except on biases and BatchNorm (their `group_weight`); their poly: iteration t ≥ 1
  runs at lr · (1 - (t - 1) / T)^0.9 (`adjust_learning_rate` sets the next iteration's after each step).
* `swin` (`swin-tiny-…_upernet_8xb2-160k`): AdamW lr 6e-5, weight decay 0.01 except on the absolute
  position embedding, the relative-position tables and norms; the same warmup and poly.

mmseg warms up over 1500 of 160000 iterations; a fine-tune of N iterations warms up over
min(1500, N // 10). The learning rate is a closed form of the iteration (`lr_at`), which is what makes a
resumed run's schedule the uninterrupted one's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import UsageError
from ..model.backbones import ConvNeXtConfig, SwinConfig

WARMUP_START = 1e-6
WARMUP_MAX = 1500


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str  # "sgd" | "adamw"
    lr: float
    weight_decay: float
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    power: float = 0.9
    eta_min: float = 1e-4
    warmup: bool = False
    layer_decay: float | None = None  # ConvNeXt's stage-wise decay rate
    no_decay_keys: tuple[str, ...] = ()  # names containing one of these: weight decay 0
    decay_1d: bool = True  # False: no weight decay on 1-D parameters and biases
    poly: str = "mmengine"  # "mmengine": PolyLR, ending at the last iteration; "csail": the authors' loop


RECIPES = {
    "resnet": Recipe("resnet", "sgd", 0.01, 5e-4),
    "upp": Recipe("upp", "sgd", 0.02, 1e-4, eta_min=0.0, decay_1d=False, poly="csail"),
    "convnext": Recipe("convnext", "adamw", 1e-4, 0.05, power=1.0, eta_min=0.0, warmup=True, layer_decay=0.9),
    "swin": Recipe(
        "swin",
        "adamw",
        6e-5,
        0.01,
        power=1.0,
        eta_min=0.0,
        warmup=True,
        no_decay_keys=("absolute_pos_embed", "relative_position_bias_table", "norm"),
    ),
}


def recipe_for(net: nn.Module, name: str | None = None, lr: float | None = None) -> Recipe:
    """The named recipe, else the one of the network's backbone family; `lr` replaces its learning rate."""
    if name is None and getattr(getattr(net, "config", None), "arch", None) == "upp":
        name = "upp"
    if name is None:
        backbone = getattr(getattr(net, "config", None), "backbone", None)
        name = (
            "convnext"
            if isinstance(backbone, ConvNeXtConfig)
            else "swin"
            if isinstance(backbone, SwinConfig)
            else "resnet"
        )
    if name not in RECIPES:
        raise UsageError(f"--recipe {name!r}: unknown", hint=f"recipes: {', '.join(RECIPES)}")
    r = RECIPES[name]
    if lr is not None:
        if not 0 < lr < 10:
            raise UsageError(f"--lr {lr}: give a learning rate above 0, e.g. {r.lr}")
        r = replace(r, lr=lr)
    return r


def _stage(name: str) -> int:
    """mmseg's stage id for ConvNeXt parameters (`get_stage_id_for_convnext`, 8 layers), segcli's names."""
    if name.startswith("backbone.embeddings") or ".downsampling_layer." in name:
        return 0
    if name.startswith("backbone.encoder.stages."):
        return int(name.split(".")[3]) + 1
    return 7


def param_groups(net: nn.Module, r: Recipe) -> list[dict]:
    """Parameter groups as mmseg's optimizer constructors make them: each with `lr`, `weight_decay` and
    `lr_scale` (its share of the base learning rate)."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        decay = r.weight_decay
        if (r.layer_decay is not None or not r.decay_1d) and (p.ndim == 1 or name.endswith(".bias")):
            decay = 0.0
        if any(k in name for k in r.no_decay_keys):
            decay = 0.0
        scale = r.layer_decay ** (8 - _stage(name) - 1) if r.layer_decay is not None else 1.0
        groups.setdefault((scale, decay), []).append(p)
    return [
        {"params": ps, "lr": r.lr * scale, "lr_scale": scale, "weight_decay": decay}
        for (scale, decay), ps in sorted(groups.items(), key=lambda kv: kv[0])
    ]


def optimizer(net: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(net, r)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    return torch.optim.AdamW(groups, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay)


def warmup_iters(r: Recipe, total: int) -> int:
    """Iterations of linear warmup (none below 2: mmengine's LinearLR needs two points)."""
    w = min(WARMUP_MAX, total // 10) if r.warmup else 0
    return w if w >= 2 else 0


def lr_at(r: Recipe, step: int, total: int, scale: float = 1.0) -> float:
    """The learning rate of a group (`scale` × the base) for iteration `step` of `total` (0-based), as
    mmengine's LinearLR (warmup) then PolyLR set it: each reaches its end value at its last iteration
    (mmengine's `total_iters = end - begin - 1`)."""
    base = r.lr * scale
    if r.poly == "csail":
        return base * (1 - max(step - 1, 0) / total) ** r.power
    w = warmup_iters(r, total)
    if step < w:
        return base * (WARMUP_START + (1 - WARMUP_START) * step / (w - 1))
    span = max(total - w - 1, 1)
    t = min(step - w, span)
    return (base - r.eta_min) * (1 - t / span) ** r.power + r.eta_min


def set_lr(opt: torch.optim.Optimizer, r: Recipe, step: int, total: int) -> float:
    """Every group's learning rate for `step`; returns the base group's."""
    for g in opt.param_groups:
        g["lr"] = lr_at(r, step, total, g.get("lr_scale", 1.0))
    return lr_at(r, step, total)
