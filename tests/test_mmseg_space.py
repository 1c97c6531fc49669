"""mmsegmentation's config space, generated as mmseg's own tests vary theirs: seeded random EncoderDecoder
configs — ResNetV1c at depths 18 / 34 / 50 / 101 with D8 / D16 / D32 dilation, contract_dilation on or off,
multi-grid last stages, PSPHead or UPerHead at small widths and random pool scales, an FCNHead auxiliary head
or none (with or without concat_input), softmax or binary (sigmoid + threshold) heads, align_corners either
way — built by mmseg, saved as mmseg's runner saves them (the config text in meta), converted by segcli without
`--arch` and compared with mmseg's own forward: logits within 1e-4 and the same labels (mmseg's rule)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from helpers import assert_labels_agree, randomize_
from mmseg_ref import import_mmseg

from segcli import Segmenter

DILATION = {
    "D8": ((1, 2, 1, 1), (1, 1, 2, 4)),
    "D16": ((1, 2, 2, 1), (1, 1, 1, 2)),
    "D32": ((1, 2, 2, 2), (1, 1, 1, 1)),
}
LAST_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3}
BN = dict(type="BN", requires_grad=True)


def variant(seed: int) -> tuple[dict, str]:
    rng = random.Random(seed)
    depth = [18, 34, 50, 101][seed % 4]
    layout = rng.choice(list(DILATION))
    strides, dilations = DILATION[layout]
    grid = tuple(rng.choice([1, 2, 4]) for _ in range(LAST_BLOCKS[depth])) if rng.random() < 0.3 else None
    c = 64 if depth < 50 else 256
    binary = rng.random() < 0.25
    k = 2 if binary else rng.randint(3, 7)
    align = rng.random() < 0.5
    width = rng.choice([16, 32])
    head = dict(
        num_classes=k,
        channels=width,
        pool_scales=tuple(sorted(rng.sample([1, 2, 3, 6], rng.randint(1, 4)))),
        align_corners=align,
        norm_cfg=BN,
        dropout_ratio=0.1,
        **(dict(out_channels=1, threshold=rng.choice([0.3, 0.5, 0.7])) if binary else {}),
    )
    if rng.random() < 0.5:
        head.update(type="PSPHead", in_channels=8 * c, in_index=3)
    else:
        head.update(type="UPerHead", in_channels=[c, 2 * c, 4 * c, 8 * c], in_index=[0, 1, 2, 3])
    aux = None
    if rng.random() < 0.6:
        aux = dict(
            type="FCNHead",
            in_channels=4 * c,
            in_index=2,
            channels=8,
            num_convs=rng.choice([1, 2]),
            concat_input=rng.random() < 0.5,
            num_classes=k,
            norm_cfg=BN,
            align_corners=align,
            **(dict(out_channels=1) if binary else {}),
        )
    backbone = dict(
        type="ResNetV1c",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=strides,
        dilations=dilations,
        contract_dilation=rng.random() < 0.7,
        multi_grid=grid,
        norm_cfg=BN,
        style="pytorch",
    )
    model = dict(
        type="EncoderDecoder", backbone=backbone, decode_head=head, auxiliary_head=aux, test_cfg=dict(mode="whole")
    )
    model["data_preprocessor"] = dict(
        type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True
    )
    note = f"R{depth}-{layout} grid {grid} {head['type']} k={k}{' binary' if binary else ''} aux {aux is not None}"
    return model, note


@pytest.mark.parametrize(
    "seed",
    [pytest.param(s, marks=pytest.mark.slow) if s % 4 >= 2 else s for s in range(16)],  # R50 / R101: slow
)
def test_mmseg_variant_converts_without_arch_and_matches(cli, tmp_path, seed):
    import_mmseg()
    from mmengine import Config
    from mmseg.registry import MODELS

    model_cfg, note = variant(seed)
    cfg = Config(dict(model=model_cfg))
    mm = randomize_(MODELS.build(cfg.model), seed=seed).eval()
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(seed))
    meta = [dict(img_shape=(65, 97), ori_shape=(65, 97), pad_shape=(65, 97))]
    with torch.no_grad():  # a classifier whose logits vary over the image (a binary one around its threshold)
        conv = mm.decode_head.conv_seg
        z = mm.encode_decode(x, meta)[0]  # [C, H, W]
        spread = z.flatten(1).std(1).clamp_min(1e-6)  # per class, over the pixels
        conv.weight.mul_((3.0 / spread).view(-1, 1, 1, 1))
        conv.bias.mul_(3.0 / spread)
        z = mm.encode_decode(x, meta)[0]
        centre = (
            math.log(model_cfg["decode_head"]["threshold"] / (1 - model_cfg["decode_head"]["threshold"]))
            if z.shape[0] == 1
            else 0.0
        )
        conv.bias.sub_(z.flatten(1).median(1).values - centre)
    classes = [f"k{i}" for i in range(model_cfg["decode_head"]["num_classes"])]
    torch.save(
        {"meta": {"cfg": cfg.pretty_text, "dataset_meta": {"classes": classes}}, "state_dict": mm.state_dict()},
        tmp_path / "m.pth",
    )
    r = cli("convert", tmp_path / "m.pth", "-o", tmp_path / "out")
    assert r.exit_code == 0, f"{note}: {r.stderr}"
    seg = Segmenter.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        ref = mm.encode_decode(x, meta)
        ours = seg.network(x)
    diff = (ours - ref).abs().max().item()
    print(f"\nMMSEG-SPACE {diff:.2e} {note}")
    assert diff <= 1e-4, f"{note}: max |diff| {diff:.2e}"
    if ref.shape[1] == 1:  # mmseg's rule for a binary head
        threshold = model_cfg["decode_head"]["threshold"]
        expected = ref[0, 0].sigmoid() > threshold
        labels = torch.from_numpy(seg.network.heads.labels(ours[0])["labels"]).bool()
        scores = torch.stack([centre - ref[0, 0], ref[0, 0] - centre])  # label 1 past the threshold's logit
        assert_labels_agree(labels.long().numpy(), scores.numpy(), 2 * diff + 1e-6, note)
    else:
        expected, labels = ref[0].argmax(0), ours[0].argmax(0)
        assert_labels_agree(labels.numpy(), ref[0].numpy(), 2 * diff + 1e-6, note)  # only near-ties may flip
    assert len(expected.unique()) >= 2, f"{note}: a degenerate model proves little"
