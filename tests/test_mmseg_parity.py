"""Engine parity with mmsegmentation 1.2.2 itself (test-only reference, see DEVELOPERS.md).

The same network runs inside mmseg's `EncoderDecoder` (its `encode_decode` is segcli's model) and in
segcli's engine, on the same image: mmseg's `slide_inference` / `whole_inference`, `postprocess_result`
(flip back, resize to the original size) and `SegTTAModel.merge_preds` (softmax averaging) must agree
with segcli's within 1e-5 for sizes smaller than the crop, exact multiples and awkward ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_image
from mmseg_ref import import_mmseg

from segcli import Segmenter
from segcli.engine import plan, predict

K = 150


@pytest.fixture(scope="module")
def seg(tiny_convnext_dir) -> Segmenter:
    return Segmenter.from_pretrained(tiny_convnext_dir)


@pytest.fixture(scope="module")
def mm(seg):
    import_mmseg()
    from mmseg.registry import MODELS

    cfg = dict(
        type="EncoderDecoder",
        backbone=dict(type="ResNetV1c", depth=18, out_indices=(3,)),
        decode_head=dict(type="FCNHead", in_channels=512, channels=8, num_classes=K, align_corners=False),
        test_cfg=dict(mode="whole"),
    )
    model = MODELS.build(cfg).eval()
    model.encode_decode = lambda inputs, metas: seg.model(inputs)  # the same network in mmseg's inference
    return model


def mm_view(mm, seg, img, ori, crop=None, stride=None, flip=False):
    """mmseg's prediction for one (already resized) view: inference, then postprocess_result."""
    from mmengine.config import ConfigDict
    from mmseg.structures import SegDataSample

    mm.test_cfg = ConfigDict(mode="slide", crop_size=crop, stride=stride) if crop else ConfigDict(mode="whole")
    x = np.ascontiguousarray(img[:, ::-1]) if flip else img
    inputs = seg.model.normalize(torch.tensor(x).permute(2, 0, 1)[None].float())
    meta = dict(
        ori_shape=ori,
        img_shape=img.shape[:2],
        pad_shape=img.shape[:2],
        flip=flip,
        flip_direction="horizontal",
        img_path="x.png",
    )
    with torch.no_grad():
        return mm.postprocess_result(mm.inference(inputs, [meta]), [SegDataSample(metainfo=meta)])[0]


@pytest.mark.parametrize(
    "h, w, crop, stride",
    [
        (100, 90, 128, 85),
        (256, 384, 128, 128),
        (300, 457, 128, 85),
        pytest.param(1001, 517, 256, 171, marks=pytest.mark.slow),  # many windows: the full suite's
    ],
    ids=["smaller-than-crop", "exact-multiples", "awkward", "1001x517"],
)
def test_slide_inference(mm, seg, h, w, crop, stride):
    img = random_image(h, w, seed=h + w)
    ref = mm_view(mm, seg, img, (h, w), (crop, crop), (stride, stride))
    ours = predict(seg.model, img, seg.params("hf", resize="none", mode="slide", crop=crop, stride=stride), logits=True)
    diff = (ours.logits - ref.seg_logits.data).abs().max().item()
    print(f"\nMMSEG slide {h}x{w} crop {crop} stride {stride}: max|diff| {diff:.2e}")
    assert diff <= 1e-5
    # the network sees contiguous crops here and strided views in mmseg: last-bit differences can flip
    # an argmax near-tie
    assert (ours.labels == ref.pred_sem_seg.data[0].numpy()).mean() > 0.9999


@pytest.mark.parametrize(
    "h, w, mode", [(300, 457, "whole"), (700, 333, "slide"), pytest.param(1001, 517, "slide", marks=pytest.mark.slow)]
)
def test_resize_then_back_to_the_original_size(mm, seg, h, w, mode):
    img = random_image(h, w, seed=h)
    slide = dict(crop=128, stride=85) if mode == "slide" else {}
    p = seg.params("mmseg", mode=mode, resize="256:1024", **slide)
    view = plan(img, p, K)[0]
    ref = mm_view(mm, seg, view.image, (h, w), p.crop, p.stride)
    ours = predict(seg.model, img, p, logits=True)
    diff = (ours.logits - ref.seg_logits.data).abs().max().item()
    print(f"\nMMSEG {mode} {h}x{w} via {view.size}: max|diff| {diff:.2e}")
    assert diff <= 1e-5
    assert (ours.labels == ref.pred_sem_seg.data[0].numpy()).mean() > 0.9999


@pytest.mark.parametrize("h, w, mode", [pytest.param(300, 457, "slide", marks=pytest.mark.slow), (211, 199, "whole")])
def test_multi_scale_flip_merge(mm, seg, h, w, mode):
    from mmseg.models.segmentors.seg_tta import SegTTAModel

    img = random_image(h, w, seed=w)
    slide = dict(crop=128, stride=85) if mode == "slide" else {}
    p = seg.params("mmseg-ms", mode=mode, resize="128:512", **slide)
    views = plan(img, p, K)
    samples = [mm_view(mm, seg, v.image, (h, w), p.crop, p.stride, flip=v.flip) for v in views]
    merged = SegTTAModel(module=mm).merge_preds([samples])[0].pred_sem_seg.data.numpy()
    probs = sum(s.seg_logits.data.softmax(0) for s in samples) / len(samples)  # merge_preds' average
    ours = predict(seg.model, img, p, logits=True)
    diff = (ours.logits.exp() - probs).abs().max().item()
    print(f"\nMMSEG tta {mode} {h}x{w} ({len(views)} views): probabilities max|diff| {diff:.2e}")
    assert len(views) == 12 and diff <= 1e-5
    assert (ours.labels == merged.reshape(ours.labels.shape)).mean() > 0.9999
