"""transformers' UperNet config space, generated the way its model testers build theirs: seeded random valid
ConvNeXt and Swin variants (3 or 4 stages, any `out_features` subset UperNet accepts, every parameter-free
activation, layer scale on or off, patch and window sizes, class counts 1..5 with and without names, pool
scales, auxiliary head on / off / `concat_input`), random weights and BatchNorm statistics, saved with
`save_pretrained` and loaded by segcli: logits within 1e-4 of transformers' own forward and the same labels, at
sizes that are no multiple of 32 or of the window."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import randomize_

from segcli import Segmenter

ACTS = ["gelu", "gelu_new", "gelu_fast", "gelu_10", "quick_gelu", "relu", "silu", "mish", "tanh", "relu2", "linear"]
SEEDS = range(24)


def variant(seed: int):
    """One random valid UperNet config (as transformers' testers vary theirs), and a note of what it is."""
    from transformers import ConvNextConfig, SwinConfig, UperNetConfig

    rng = random.Random(seed)
    stages = rng.choice([3, 4])
    depths = [rng.randint(1, 2) for _ in range(stages)]
    act = rng.choice(ACTS)
    aux = rng.random() < 0.6
    chosen = sorted(rng.sample(range(1, stages + 1), rng.randint(3 if aux else 1, stages)))
    out = [f"stage{i}" for i in chosen]
    if seed % 2 == 0:
        widths = [rng.choice([8, 12, 16]) * 2**i for i in range(stages)]
        bb = ConvNextConfig(
            depths=depths,
            hidden_sizes=widths,
            num_stages=stages,
            hidden_act=act,
            patch_size=rng.choice([2, 4]),
            layer_scale_init_value=rng.choice([0.0, 1e-6]),
            out_features=out,
        )
        note = f"convnext depths {depths} widths {widths}"
    else:
        embed = rng.choice([8, 16])
        heads = [rng.choice([1, 2]) * 2 ** min(i, 1) for i in range(stages)]
        bb = SwinConfig(
            embed_dim=embed,
            depths=depths,
            num_heads=heads,
            window_size=rng.choice([2, 3, 5]),
            hidden_act=act,
            patch_size=rng.choice([2, 4]),
            mlp_ratio=rng.choice([2.0, 4.0]),
            out_features=out,
        )
        note = f"swin depths {depths} embed {embed} window {bb.window_size}"
    labels = rng.randint(1, 5)
    names = {i: f"thing {i}" for i in range(labels)} if rng.random() < 0.5 else None  # 2 unnamed: nothing saved
    cfg = UperNetConfig(
        backbone_config=bb,
        hidden_size=rng.choice([8, 16]),
        pool_scales=sorted(rng.sample([1, 2, 3, 6], rng.randint(1, 4))),
        use_auxiliary_head=aux,
        auxiliary_channels=8,
        auxiliary_num_convs=rng.choice([1, 2]),  # 0 needs equal widths (transformers builds no other)
        auxiliary_concat_input=aux and rng.random() < 0.5,
        **({"id2label": names} if names else {"num_labels": labels}),
    )
    return cfg, f"{note}, {act}, out {out}, {labels} classes{' named' if names else ''}, aux {aux}"


@pytest.mark.parametrize("seed", SEEDS)
def test_transformers_variant_matches(seed, tmp_path):
    from transformers import UperNetForSemanticSegmentation

    cfg, note = variant(seed)
    model = randomize_(UperNetForSemanticSegmentation(cfg), seed=seed).eval()
    with torch.no_grad():  # a classifier that spreads the logits: labels are decided, not tied
        model.decode_head.classifier.weight.mul_(8.0)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    seg = Segmenter.from_pretrained(tmp_path / "m")
    assert seg.num_classes == cfg.num_labels, note
    x = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(pixel_values=x).logits
        ours = seg.network(x)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, f"{note}: max |diff| {diff:.2e}"
    assert torch.equal(ours.argmax(1), ref.argmax(1)) or cfg.num_labels == 1, note
    if model.auxiliary_head is not None:
        with torch.no_grad():
            feats = model.backbone.forward_with_filtered_kwargs(x).feature_maps
            aux_ref = torch.nn.functional.interpolate(model.auxiliary_head(feats), size=(45, 61), mode="bilinear")
            assert (seg.network.forward_aux(x) - aux_ref).abs().max().item() <= 1e-4, note


def test_two_unnamed_classes_save_no_labels_and_load_as_two(tmp_path):
    """transformers leaves id2label and num_labels out of config.json when they are its defaults (2 classes):
    segcli reads them as transformers does."""
    import json

    from helpers import tiny_convnext

    model = tiny_convnext(num_labels=2)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "id2label" not in cfg and "num_labels" not in cfg
    seg = Segmenter.from_pretrained(tmp_path / "m")
    assert seg.classes == ["LABEL_0", "LABEL_1"]
