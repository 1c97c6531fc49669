"""The training loss equals mmsegmentation 1.2.2's `EncoderDecoder.loss` for the same weights and batch —
the total, each term, and the gradient of every parameter — for PSPNet and UPerNet with the auxiliary FCN
head (BatchNorm in training mode: batch statistics), built by mmseg with random weights and converted by
segcli as a user's checkpoint would be."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_
from mmseg_ref import import_mmseg

from segcli import Segmenter
from segcli.loading.formats.mmseg import map_key
from segcli.train.loss import add_dropout, convention, losses

BN = dict(type="BN", requires_grad=True)
K = 5


WEIGHTS = [1.0, 0.5, 2.0, 1.5, 0.8]


def _model(head: str, align: bool, dropout: float = 0.0, weights: list | None = None) -> dict:
    c = 64
    decode = dict(num_classes=K, channels=16, align_corners=align, norm_cfg=BN, dropout_ratio=dropout)
    if weights is not None:
        decode["loss_decode"] = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, class_weight=weights)
    if head == "psp":
        decode.update(type="PSPHead", in_channels=8 * c, in_index=3, pool_scales=(1, 2, 3, 6))
    else:
        decode.update(type="UPerHead", in_channels=[c, 2 * c, 4 * c, 8 * c], in_index=[0, 1, 2, 3], pool_scales=(1, 2))
    aux = dict(
        type="FCNHead", in_channels=4 * c, in_index=2, channels=8, num_convs=1, concat_input=False, num_classes=K,
        norm_cfg=BN, align_corners=align, dropout_ratio=dropout,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4, class_weight=weights),
    )  # fmt: skip
    backbone = dict(
        type="ResNetV1c", depth=18, num_stages=4, out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4), contract_dilation=True, norm_cfg=BN, style="pytorch",
    )  # fmt: skip
    pre = dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
    return dict(type="EncoderDecoder", backbone=backbone, decode_head=decode, auxiliary_head=aux, data_preprocessor=pre)


@pytest.mark.parametrize(
    "head, align, dropout, weights",
    [("psp", False, 0.0, None), ("uper", True, 0.0, None), ("psp", False, 0.1, None), ("uper", False, 0.0, WEIGHTS)],
)
def test_loss_and_gradients_equal_mmseg(cli, tmp_path, head, align, dropout, weights):
    """With dropout (mmseg's 0.1 before each classifier), the same masks: the RNG seeded alike before each.
    With class weights (mmseg's `class_weight`), the same weighted mean."""
    import_mmseg()
    from mmengine import Config
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    cfg = Config(dict(model=_model(head, align, dropout, weights)))
    mm = randomize_(MODELS.build(cfg.model), seed=3)
    classes = [f"k{i}" for i in range(K)]
    torch.save(
        {"meta": {"cfg": cfg.pretty_text, "dataset_meta": {"classes": classes}}, "state_dict": mm.state_dict()},
        tmp_path / "m.pth",
    )
    assert cli("convert", tmp_path / "m.pth", "-o", tmp_path / "out").exit_code == 0
    net = Segmenter.from_pretrained(tmp_path / "out").network

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 57, 71, generator=g)
    labels = torch.randint(0, K, (2, 57, 71), generator=g)
    if weights is None:  # (mmseg's class weights cannot be indexed by the ignore value: it raises)
        labels[:, :5] = 255  # unlabelled rows: zero loss, yet counted in the mean (avg_non_ignore=False)
    samples = []
    for lab in labels:
        s = SegDataSample(metainfo=dict(img_shape=(57, 71), ori_shape=(57, 71), pad_shape=(57, 71)))
        s.gt_sem_seg = PixelData(data=lab[None])
        samples.append(s)

    mm.train()
    net.train()
    add_dropout(net, dropout)
    torch.manual_seed(7)
    theirs = mm.loss(x, samples)
    torch.manual_seed(7)
    ours = losses(net, x, labels, class_weight=None if weights is None else torch.tensor(WEIGHTS))
    assert ours["decode"].item() == pytest.approx(theirs["decode.loss_ce"].item(), rel=1e-5)
    assert 0.4 * ours["aux"].item() == pytest.approx(theirs["aux.loss_ce"].item(), rel=1e-5)
    total = theirs["decode.loss_ce"] + theirs["aux.loss_ce"]
    assert ours["total"].item() == pytest.approx(total.item(), rel=1e-5)

    total.backward()
    ours["total"].backward()
    mine = dict(net.named_parameters())
    compared, worst = 0, 0.0
    for name, p in mm.named_parameters():
        if p.grad is None:
            continue
        q = mine[map_key(name)]
        assert q.grad is not None, name
        scale = p.grad.abs().max().item()
        diff = (q.grad - p.grad).abs().max().item()
        assert diff <= 1e-4 * scale + 1e-12, name
        compared, worst = compared + 1, max(worst, diff / max(scale, 1e-30))
    rel = abs(ours["total"].item() - total.item()) / total.item()
    print(
        f"\nLOSS-PARITY {head} dropout {dropout}: total {total.item():.6f} rel diff {rel:.1e}; worst gradient rel diff {worst:.1e}"
    )
    assert compared == len(mine)  # every parameter of ours has mmseg's gradient beside it


def test_loss_and_gradients_equal_transformers_upernet(tmp_path):
    """A hub-layout model trains with transformers' own loss: the mean over labelled pixels."""
    from helpers import save_hf_dir, tiny_convnext

    hf = randomize_(tiny_convnext(num_labels=K, id2label={i: f"k{i}" for i in range(K)}), seed=5)
    seg = Segmenter.from_pretrained(save_hf_dir(hf, tmp_path / "m"))
    net = seg.network
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 96, generator=g)
    labels = torch.randint(0, K, (2, 64, 96), generator=g)
    labels[:, :, :9] = 255
    hf.train()
    net.train()
    theirs = hf(pixel_values=x, labels=labels).loss
    ours = losses(net, x, labels, mean_over=convention(seg.info.default_preset))
    assert ours["total"].item() == pytest.approx(theirs.item(), rel=1e-5)
    theirs.backward()
    ours["total"].backward()
    mine, worst = dict(net.named_parameters()), 0.0
    # gradients that are zero in exact arithmetic (a bias that train-mode BatchNorm subtracts again) are
    # rounding noise in both: compared against the largest gradient of the network instead
    floor = 1e-7 * max(p.grad.abs().max().item() for p in hf.parameters())
    for name, p in hf.named_parameters():
        q = mine[name]
        scale = p.grad.abs().max().item()
        diff = (q.grad - p.grad).abs().max().item()
        assert diff <= 1e-4 * scale + floor, name
        if scale > 1e3 * floor:  # the figure printed: gradients that are not rounding noise
            worst = max(worst, diff / scale)
    assert len(mine) == len(dict(hf.named_parameters()))
    print(f"\nLOSS-PARITY transformers: total {theirs.item():.6f}; worst gradient rel diff {worst:.1e}")


def test_loss_and_gradients_equal_the_csail_train_script(cli, tmp_path):
    """A CSAIL PPM-deepsup model trains with its authors' loss (`SegmentationModule` with `NLLLoss(ignore_index
    =-1)` and `deep_sup_scale` 0.4): logits at 1/8, labels brought down to them as their loader does (PIL's
    nearest of the 0-is-unlabelled mask, minus 1), and the 0.1 dropout of both branches."""
    import numpy as np
    from PIL import Image
    from test_authors import csail_reference, mit, save_csail

    from segcli.loading.formats import csail

    k = 150
    encoder, decoder = csail_reference("resnet18dilated", "ppm_deepsup", 512, seed=4)
    files = save_csail(encoder, decoder, tmp_path / "ckpt", 20)
    arch = "csail-resnet18dilated-ppm-deepsup"
    assert cli("convert", *files, "--arch", arch, "-o", tmp_path / "out").exit_code == 0
    seg = Segmenter.from_pretrained(tmp_path / "out")
    net = seg.network

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 96, generator=g)
    labels = torch.randint(0, k, (2, 64, 96), generator=g)
    labels[:, :12] = 255  # unlabelled: CSAIL's 0 in the file, -1 after its loader
    stored = np.where(labels.numpy() == 255, 0, labels.numpy() + 1).astype(np.uint8)
    small = [np.asarray(Image.fromarray(m).resize((12, 8), Image.Resampling.NEAREST)) for m in stored]
    seg_label = torch.from_numpy(np.stack(small)).long() - 1

    ref = mit.SegmentationModule(encoder, decoder, torch.nn.NLLLoss(ignore_index=-1), deep_sup_scale=0.4)
    ref.train()
    net.train()
    add_dropout(net, 0.1)
    torch.manual_seed(11)
    theirs, _ = ref({"img_data": x, "seg_label": seg_label})
    torch.manual_seed(11)
    ours = losses(net, x, labels, mean_over=convention(seg.info.default_preset))
    assert convention(seg.info.default_preset) == "csail"
    assert ours["total"].item() == pytest.approx(theirs.item(), rel=1e-5)
    theirs.backward()
    ours["total"].backward()
    mine = dict(net.named_parameters())
    named = {**pth_rename(encoder, csail.ENCODER), **pth_rename(decoder, csail.PPM_DEEPSUP)}
    assert set(named) == set(mine)
    worst = 0.0
    for name, grad in named.items():
        scale = grad.abs().max().item()
        diff = (mine[name].grad - grad).abs().max().item()
        assert diff <= 1e-4 * scale + 1e-12, name
        worst = max(worst, diff / max(scale, 1e-30))
    print(f"\nLOSS-PARITY csail ppm-deepsup: total {theirs.item():.6f}; worst gradient rel diff {worst:.1e}")


def pth_rename(module: torch.nn.Module, table: list) -> dict[str, torch.Tensor]:
    from segcli.loading.formats import pth

    return pth.rename({n: p.grad for n, p in module.named_parameters() if p.grad is not None}, table)


def test_a_step_frees_the_gradients_before_the_next_forward(small_model):
    """As mmengine's OptimWrapper: backward, step, zero_grad(set_to_none) — no gradient (a model's size of
    memory) held through the next forward; the step changed the weights."""
    from segcli.train.step import Objective, step_once

    net = Segmenter.from_pretrained(small_model).network.train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (2, 32, 32), generator=g)
    terms = step_once(Objective(net), opt, [(images, labels)], None, None)
    assert set(terms) == {"decode", "aux", "total"} and terms["total"] > 0
    assert all(p.grad is None for p in net.parameters())
    changed = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2
