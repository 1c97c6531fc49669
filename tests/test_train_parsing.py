"""The unified perceptual parser's training loss against its authors' (CSAILVision/unifiedparsing
`models/models.py`, transcribed below from `SegmentationModule.forward`'s training branch, `part_loss` and
the decoder's training log-softmax), on the authors' decoder (tests/reference/upp.py) and the same weights
converted by segcli, both in training mode (BatchNorm on the batch), one batch of each source type of their
joint dataset: Broden's ADE/Pascal images (object, part, scene) and OpenSurfaces' (material)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_train_loss import pth_rename
from test_upp import _converted, hierarchy

from segcli import Segmenter
from segcli.train.parsing_loss import ParsingLabels, local_parts, parsing_losses

SCALE = {"object": 1, "part": 0.5, "scene": 0.25, "material": 1}  # their loss_scale


def _theirs_part_loss(pred_part, gt_seg_part, gt_seg_object, object_label, valid):  # models.py, verbatim
    mask_object = gt_seg_object == object_label
    loss = F.nll_loss(pred_part, gt_seg_part * mask_object.long(), reduction="none")
    loss = loss * mask_object.float()
    loss = torch.sum(loss.view(loss.size(0), -1), dim=1)
    nr_pixel = torch.sum(mask_object.view(mask_object.shape[0], -1), dim=1)
    sum_pixel = (nr_pixel * valid).sum()
    loss = (loss * valid.float()).sum() / torch.clamp(sum_pixel, 1).float()
    return loss


def _theirs(encoder, decoder, feed: dict, source: int) -> dict[str, torch.Tensor]:
    """SegmentationModule.forward(feed_dict) in training (source_idx 0: object, part, scene; 1: material)."""
    switch = {"object": source == 0, "part": source == 0, "scene": source == 0, "material": source == 1}
    raw = decoder.logits(encoder(feed["img"], return_feature_maps=True))
    pred = {k: (raw[k] if on else None) for k, on in switch.items()}
    for k in ("object", "scene", "material"):  # UPerNet.forward's training branch
        if pred[k] is not None:
            pred[k] = F.log_softmax(pred[k], dim=1)
            if k == "scene":
                pred[k] = pred[k].squeeze(3).squeeze(2)
    if pred["part"] is not None:
        part_pred_list, head = [], 0
        for _, parts in decoder.object_part:
            n_part = len(parts)
            part_pred_list.append(F.log_softmax(pred["part"][:, head : head + n_part], dim=1))
            head += n_part
        pred["part"] = part_pred_list
    loss = {}
    if pred["object"] is not None:
        loss["object"] = F.nll_loss(pred["object"], feed["seg_object"], ignore_index=0)
    if pred["part"] is not None:
        loss["part"] = sum(
            _theirs_part_loss(pred["part"][i], feed["seg_part"], feed["seg_object"], label, feed["valid_part"][:, i])
            for i, (label, _) in enumerate(decoder.object_part)
        )
    if pred["scene"] is not None:
        loss["scene"] = F.nll_loss(pred["scene"], feed["scene_label"], ignore_index=-1)
    if pred["material"] is not None:
        loss["material"] = F.nll_loss(pred["material"], feed["seg_material"], ignore_index=0)
    loss["total"] = sum(loss[k] * SCALE[k] for k in list(loss))
    return loss


def _batch(g: torch.Generator, objects_with_parts: list[int], groups: list[list[int]]):
    """Images [2, 3, 96, 128] (their BGR, mean-subtracted scale) and labels at 1/4: objects drawn mostly from
    those with parts, each such pixel a random part of its object's group (global labels), ragged validity."""
    x = torch.randn(2, 3, 96, 128, generator=g) * 60
    h, w = 24, 32
    pick = torch.tensor([*objects_with_parts[:6], 0, 5, 17])
    objects = pick[torch.randint(0, len(pick), (2, h, w), generator=g)]
    parts = torch.zeros_like(objects)
    for label, members in zip(objects_with_parts, groups, strict=True):
        where = objects == label
        choice = torch.tensor(members)[torch.randint(0, len(members), (2, h, w), generator=g)]
        parts = torch.where(where, choice, parts)
    valid = torch.rand(2, len(groups), generator=g) > 0.3
    material = torch.randint(0, 26, (2, h, w), generator=g)
    scene = torch.tensor([3, -1])
    return x, objects, parts, valid, material, scene


@pytest.mark.slow
def test_parsing_losses_and_gradients_equal_the_authors(cli, tmp_path):
    encoder, decoder, converted = _converted(cli, tmp_path, small=True)
    net = Segmenter.from_pretrained(converted).network
    heads = net.config.heads
    tree = hierarchy()
    assert [(gr.object_label, len(gr.parts)) for gr in heads.part_groups] == [(o, len(p)) for o, p in tree]
    x, objects, parts, valid, material, scene = _batch(
        torch.Generator().manual_seed(4), [o for o, _ in tree], [p for _, p in tree]
    )
    local = local_parts(objects, parts, heads.part_groups, heads.part_classes)
    sources = [
        (0, ParsingLabels(object=objects, part=local, valid_part=valid, scene=scene)),
        (1, ParsingLabels(material=material)),
    ]
    for source, labels in sources:
        for m in (encoder, decoder, net):
            m.train()
            m.zero_grad(set_to_none=True)
        feed = {"img": x, "seg_object": objects, "seg_part": local, "valid_part": valid,
                "scene_label": scene, "seg_material": material}  # fmt: skip
        theirs, ours = _theirs(encoder, decoder, feed, source), parsing_losses(net, x, labels)
        assert set(ours) == set(theirs)  # a task absent from the batch adds nothing
        for k in theirs:
            assert ours[k].item() == pytest.approx(theirs[k].item(), rel=1e-5), (source, k)
        theirs["total"].backward()
        ours["total"].backward()
        from segcli.loading.formats import csail

        mine = {n: p for n, p in net.named_parameters() if p.grad is not None}
        named = {**pth_rename(encoder, csail.ENCODER), **pth_rename(decoder, csail.UPP)}
        assert set(named) == set(mine), (source, set(named) ^ set(mine))  # the same parameters get gradients
        worst = 0.0
        for name, grad in named.items():
            scale = grad.abs().max().item()
            diff = (mine[name].grad - grad).abs().max().item()
            assert diff <= 1e-4 * scale + 1e-12, (source, name)
            worst = max(worst, diff / max(scale, 1e-30))
        said = ", ".join(f"{k} {v.item():.6f}" for k, v in theirs.items())
        print(f"\nUPP-LOSS-PARITY source {source}: {said}; worst gradient rel diff {worst:.1e}")


def test_local_parts_index_each_objects_group():
    from segcli.engine.heads import PartGroup

    groups = (PartGroup(3, (0, 7, 9)), PartGroup(5, (0, 9, 2)))
    objects = torch.tensor([[3, 3, 5, 5, 1]])
    parts = torch.tensor([[9, 2, 9, 2, 7]])
    assert local_parts(objects, parts, groups, 10).tolist() == [[2, 0, 1, 2, 0]]  # 2 is not a part of object 3
