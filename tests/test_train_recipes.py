"""The recipes' learning rates and weight decays equal mmsegmentation's: every parameter group at sampled
iterations against mmengine's LinearLR + PolyLR schedulers, and ConvNeXt's stage-wise decay against mmseg's
LearningRateDecayOptimizerConstructor (its parameter names translated to mmpretrain's ConvNeXt)."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import tiny_convnext
from mmseg_ref import import_mmseg
from torch import nn

from segcli.train.recipes import RECIPES, lr_at, optimizer, param_groups, warmup_iters

STEPS = [0, 1, 7, 49, 50, 51, 120, 333, 499]


def _mmengine_lrs(recipe, total: int, scales: list[float]) -> dict[int, list[float]]:
    from mmengine.optim.scheduler import LinearLR, PolyLR

    params = [nn.Parameter(torch.zeros(1)) for _ in scales]
    opt = torch.optim.SGD([{"params": [p], "lr": recipe.lr * s} for p, s in zip(params, scales, strict=True)], lr=1)
    w = warmup_iters(recipe, total)
    schedulers = []
    if w:
        schedulers.append(LinearLR(opt, start_factor=1e-6, by_epoch=False, begin=0, end=w))
    schedulers.append(PolyLR(opt, eta_min=recipe.eta_min, power=recipe.power, by_epoch=False, begin=w, end=total))
    seen = {}
    for step in range(total):
        if step in STEPS:
            seen[step] = [g["lr"] for g in opt.param_groups]
        opt.step()
        for s in schedulers:
            s.step()
    return seen


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.poly == "mmengine"])  # upp: the authors'
def test_learning_rates_equal_mmengine_schedulers(name):
    import_mmseg()
    recipe, total, scales = RECIPES[name], 500, [1.0, 0.9**3, 0.9**7]
    for step, lrs in _mmengine_lrs(recipe, total, scales).items():
        for scale, theirs in zip(scales, lrs, strict=True):
            assert lr_at(recipe, step, total, scale) == pytest.approx(theirs, rel=1e-6, abs=1e-12), (step, scale)


def _mm_name(name: str) -> str:
    """segcli's (transformers') ConvNeXt parameter names → mmpretrain's, which mmseg's constructor reads."""
    name = re.sub(r"^backbone\.embeddings\.patch_embeddings\.", "backbone.downsample_layers.0.0.", name)
    name = re.sub(r"^backbone\.embeddings\.layernorm\.", "backbone.downsample_layers.0.1.", name)
    name = re.sub(r"^backbone\.encoder\.stages\.(\d)\.downsampling_layer\.", r"backbone.downsample_layers.\1.", name)
    name = re.sub(r"^backbone\.encoder\.stages\.(\d)\.layers\.(\d+)\.", r"backbone.stages.\1.\2.", name)
    return re.sub(r"^backbone\.hidden_states_norms\.(\d)\.", r"backbone.norm\1.", name)


def test_convnext_groups_equal_mmseg_layer_decay_constructor():
    import_mmseg()
    from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor

    from segcli.model import Segmentor

    net = _segcli_convnext()
    ours = {}
    for g in param_groups(net, RECIPES["convnext"]):
        for p in g["params"]:
            ours[id(p)] = (g["lr"], g["weight_decay"])

    class ConvNeXt(nn.Module):  # the name mmseg's constructor looks for
        pass

    root = nn.Module()
    root.backbone = ConvNeXt()
    twins = {}
    for name, p in net.named_parameters():
        parts, m = _mm_name(name).split("."), root
        for part in parts[:-1]:
            if not hasattr(m, part):
                m.add_module(part, nn.Module())
            m = getattr(m, part)
        twin = nn.Parameter(torch.zeros_like(p))
        m.register_parameter(parts[-1], twin)
        twins[id(twin)] = id(p)
    cfg = dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    wrapper = LearningRateDecayOptimizerConstructor(
        dict(type="OptimWrapper", optimizer=cfg), dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6)
    )(root)
    checked = 0
    for g in wrapper.optimizer.param_groups:
        for p in g["params"]:
            lr, wd = ours[twins[id(p)]]
            assert lr == pytest.approx(g["lr"], rel=1e-9) and wd == g["weight_decay"]
            checked += 1
    assert checked == len(ours) == len(list(net.parameters()))
    assert isinstance(optimizer(net, RECIPES["convnext"]), torch.optim.AdamW) and isinstance(net, Segmentor)


def _segcli_convnext():
    import tempfile
    from pathlib import Path

    from helpers import save_hf_dir

    from segcli import Segmenter

    d = Path(tempfile.mkdtemp())
    return Segmenter.from_pretrained(save_hf_dir(tiny_convnext(), d)).network
