"""mmsegmentation checkpoints read by what they say about themselves: the training config mmengine saves in
`meta["cfg"]` (read as data, never run) and `meta["dataset_meta"]`. Models are built by mmseg from its own
official config files, saved as mmseg's runner saves them, and converted without `--arch`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import randomize_
from mmseg_ref import import_mmseg

from segcli import Segmenter
from segcli.errors import ConfigError
from segcli.loading.formats import pyconfig


def official(name: str):
    """An official mmseg config (as its `Config`), with SyncBN as BN (a CPU build) and no pretrained weights."""
    import_mmseg()
    import mmseg
    from mmengine import Config

    path = Path(mmseg.__file__).parent / ".mim" / "configs" / name
    cfg = Config.fromfile(str(path))
    cfg.model.pretrained = None
    for head in ("backbone", "decode_head", "auxiliary_head"):
        if cfg.model.get(head) and "norm_cfg" in cfg.model[head]:
            cfg.model[head].norm_cfg = dict(type="BN", requires_grad=True)
    return cfg


def build(cfg, channels: int | None = None, seed: int = 0):
    from mmseg.registry import MODELS

    if channels is not None:  # a narrower head: the same network family, a fraction of the work
        cfg.model.decode_head.channels = channels
        cfg.model.auxiliary_head.channels = channels // 2
    model = randomize_(MODELS.build(cfg.model), seed=seed).eval()
    return model


def save(model, cfg, path: Path, classes: list[str], **meta) -> Path:
    palette = [[(i * 37) % 256, (i * 91) % 256, (i * 53) % 256] for i in range(len(classes))]
    doc = {"cfg": cfg.pretty_text, "dataset_meta": {"classes": classes, "palette": palette}, **meta}
    torch.save({"meta": doc, "state_dict": model.state_dict()}, path)
    return path


def mmseg_logits(model, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    with torch.no_grad():
        return model.encode_decode(x, [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))])


CITYSCAPES = [f"c{i}" for i in range(19)]


def test_official_pspnet_r18_d8_converts_without_arch_and_matches(cli, tmp_path):
    cfg = official("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    mm = build(cfg, channels=64, seed=1)
    pth = save(mm, cfg, tmp_path / "psp_r18.pth", CITYSCAPES)
    r = cli("convert", pth, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tmp_path / "out")
    assert seg.classes == CITYSCAPES and seg.palette[1].tolist() == [37, 91, 53]
    x = torch.randn(1, 3, 97, 129, generator=torch.Generator().manual_seed(0))
    ref = mmseg_logits(mm, x)
    with torch.no_grad():
        diff = (seg.network(x) - ref).abs().max().item()
    assert ref.std() > 0.1 and diff <= 1e-4, diff
    doc = json.loads((tmp_path / "out" / "config.json").read_text())
    assert doc["backbone"]["dilate_conv2"] is False and doc["source"]["described_by"] == "the checkpoint's config"
    assert doc["segcli"]["resize"] == "1024:2048" and doc["segcli"]["mode"] == "whole"
    # the network in mmseg's own normalisation (0..255, its mean and std), not a rescaled copy
    assert doc["preprocess"]["scale"] == 1.0 and doc["preprocess"]["mean"][0] == pytest.approx(123.675)


def test_official_upernet_r50_converts_without_arch_and_matches(cli, tmp_path):
    cfg = official("upernet/upernet_r50_4xb4-80k_ade20k-512x512.py")
    mm = build(cfg, channels=32, seed=2)
    pth = save(mm, cfg, tmp_path / "upernet.pth", [f"a{i}" for i in range(150)])
    r = cli("convert", pth, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 97, 129, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (seg.network(x) - mmseg_logits(mm, x)).abs().max().item()
    assert diff <= 1e-4, diff


def test_arch_and_config_must_agree(cli, tmp_path):
    cfg = official("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    pth = save(build(cfg, channels=64), cfg, tmp_path / "m.pth", CITYSCAPES)
    r = cli("convert", pth, "--arch", "pspnet-r50-d8-cityscapes", "-o", tmp_path / "out")
    assert r.exit_code == 2
    assert "its own config and --arch pspnet-r50-d8-cityscapes describe different networks" in r.stderr
    assert "backbone.depth: the checkpoint 18, --arch 50" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda m: m.backbone.update(dcn=dict(type="DCN")), "model.backbone.dcn"),
        (lambda m: m.backbone.update(style="caffe"), "model.backbone.style"),
        (lambda m: m.backbone.update(type="ResNetV1d"), "deep_stem"),
        (lambda m: m.decode_head.update(out_channels=1, threshold=0.3), "model.decode_head.out_channels = 1"),
        (lambda m: m.decode_head.update(act_cfg=dict(type="GELU")), "model.decode_head.act_cfg"),
        (lambda m: m.decode_head.update(some_new_field=3), "model.decode_head.some_new_field"),
        (lambda m: m.update(type="CascadeEncoderDecoder"), "model.type"),
    ],
)
def test_fields_segcli_does_not_compute_are_refused_by_name(cli, tmp_path, edit, named):
    cfg = official("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    mm = build(cfg, channels=64)
    edit(cfg.model)
    r = cli("convert", save(mm, cfg, tmp_path / "m.pth", CITYSCAPES), "-o", tmp_path / "out")
    assert r.exit_code == 2 and named in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_the_config_text_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = f"""
model = dict(type='EncoderDecoder', backbone=dict(depth=18), neg=-1.5, t=(1, 2), d={{'a': [None, True]}})
train_pipeline = [__import__('os').system('touch {marker}')]
hook = lambda x: x
"""
    cfg = pyconfig.parse(text, "test")
    assert not marker.exists()
    assert cfg["model"] == {
        "type": "EncoderDecoder",
        "backbone": {"depth": 18},
        "neg": -1.5,
        "t": (1, 2),
        "d": {"a": [None, True]},
    }
    assert isinstance(cfg["train_pipeline"], pyconfig.Unreadable) and isinstance(cfg["hook"], pyconfig.Unreadable)
    with pytest.raises(ConfigError, match="holds `hook` as code"):
        pyconfig.value(cfg, "hook", "test")
    with pytest.raises(ConfigError, match="does not parse"):
        pyconfig.parse("model = dict(", "test")
    deep = "x = " + "[" * 5000 + "]" * 5000  # bounded: one line of error or an unreadable value, no crash
    try:
        assert isinstance(pyconfig.parse(deep, "test")["x"], pyconfig.Unreadable)
    except ConfigError as e:
        assert "does not parse" in str(e)


def test_without_a_config_the_arch_is_asked_for(cli, tmp_path):
    cfg = official("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    mm = build(cfg, channels=64)
    torch.save({"meta": {"CLASSES": CITYSCAPES}, "state_dict": mm.state_dict()}, tmp_path / "m.pth")
    r = cli("convert", tmp_path / "m.pth", "-o", tmp_path / "out")
    assert r.exit_code == 2 and "carries no config" in r.stderr and "--arch NAME" in r.stderr


def _binary(tmp_path, cli, mode: str = "whole"):
    """mmseg's binary PSPNet (out_channels=1, threshold 0.3: sigmoid, not softmax), converted by its config."""
    cfg = official("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    cfg.model.decode_head.update(num_classes=2, out_channels=1, threshold=0.3)
    cfg.model.auxiliary_head.update(num_classes=2, out_channels=1)
    if mode == "slide":
        cfg.model.test_cfg = dict(mode="slide", crop_size=(64, 64), stride=(43, 43))
    mm = build(cfg, channels=32, seed=5)
    with torch.no_grad():  # logits around the threshold's logit: both labels occur
        mm.decode_head.conv_seg.bias.fill_(-0.85)
    pth = save(mm, cfg, tmp_path / "binary.pth", ["background", "crack"])
    r = cli("convert", pth, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    return mm, Segmenter.from_pretrained(tmp_path / "out")


def test_binary_head_labels_by_sigmoid_and_threshold(cli, tmp_path):
    mm, seg = _binary(tmp_path, cli)
    assert seg.classes == ["background", "crack"] and seg.network.heads.binary_threshold == 0.3
    image = (torch.rand(90, 120, 3, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8).numpy()
    x = seg.network.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    ref = mmseg_logits(mm, x)  # [1, 1, H, W]
    assert ref.shape[1] == 1
    expected = (ref[0, 0].sigmoid() > 0.3).numpy()  # mmseg's postprocess_result for out_channels=1
    assert 0.05 < expected.mean() < 0.95
    plain = dict(resize="none", mode="whole")
    labels = seg.predict(image, "hf", **plain)
    assert (labels == expected).all()
    torch.testing.assert_close(seg.logits(image, "hf", **plain)[0], ref[0, 0], rtol=0, atol=1e-4)
    probs = seg.probs(image, "hf", **plain)
    torch.testing.assert_close(probs[1], ref[0, 0].sigmoid(), rtol=0, atol=1e-5)
    torch.testing.assert_close(probs.sum(0), torch.ones(90, 120), rtol=0, atol=1e-6)
    # two views (the image and its mirror), as mmseg's SegTTAModel merges a binary head: mean sigmoid > threshold
    with torch.no_grad():
        mirrored = mmseg_logits(mm, x.flip(-1)).flip(-1)
    mean = (ref[0, 0].sigmoid() + mirrored[0, 0].sigmoid()) / 2
    assert (seg.predict(image, "hf", **plain, flip=True) == (mean > 0.3).numpy()).all()


def test_binary_head_slides_its_logits_as_mmseg(cli, tmp_path):
    mm, seg = _binary(tmp_path, cli, mode="slide")
    image = (torch.rand(100, 150, 3, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8).numpy()
    x = seg.network.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        ref = mm.slide_inference(x, [dict(img_shape=(100, 150), ori_shape=(100, 150), pad_shape=(100, 150))])
    labels = seg.predict(image, "mmseg", resize="none")  # the converted protocol: 64-pixel windows, stride 43
    assert seg.params("mmseg").crop == (64, 64)
    assert (labels == (ref[0, 0].sigmoid() > 0.3).numpy()).all()


def test_binary_model_predicts_two_class_files(cli, tmp_path):
    import numpy as np
    from PIL import Image

    _binary(tmp_path, cli)
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    r = cli("predict", tmp_path / "a.png", "-m", tmp_path / "out", "-o", tmp_path / "pred", "--save", "json,probs")
    assert r.exit_code == 0, r.stderr
    probs = np.load(tmp_path / "pred" / "a_probs.npy")
    labels = np.asarray(Image.open(tmp_path / "pred" / "a.png"))
    assert probs.shape == (2, 40, 56) and set(np.unique(labels)) <= {0, 1}
    assert ((probs[1].astype(np.float32) > 0.3) == (labels == 1)).mean() > 0.999  # float16 at the threshold
    doc = json.loads((tmp_path / "pred" / "a.json").read_text())
    assert [c["name"] for c in doc["classes"]] <= ["background", "crack"]


@pytest.mark.slow  # ONNX exports
def test_binary_heads_export_with_their_threshold(cli, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    import numpy as np

    _, seg = _binary(tmp_path, cli)
    r = cli("export", tmp_path / "out", "-f", "onnx", "-o", tmp_path / "m.onnx", "--size", "64x96")
    assert r.exit_code == 0, r.stderr
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["output"]["threshold"] == 0.3
    onnx = Segmenter.from_pretrained(tmp_path / "m.onnx")
    assert onnx.network.heads.binary_threshold == 0.3 and onnx.classes == ["background", "crack"]
    image = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    ours, theirs = seg.predict(image, "hf", resize="64x96"), onnx.predict(image, "hf", resize="64x96")
    assert (ours == theirs).mean() > 0.999 and 0 < ours.mean() < 1
    r = cli("export", tmp_path / "out", "-f", "torchscript", "--labels", "-o", tmp_path / "m.pt", "--size", "64x96")
    assert r.exit_code == 0 and json.loads(r.stdout)["verified"], r.stderr  # labels by the threshold, verified
