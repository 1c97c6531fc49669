"""`segcli export`: ONNX / TorchScript / fp16 safetensors, verified against the eager model.

Sizes are chosen so that the deepest feature map is not a multiple of the PPM bins (1, 2, 3, 6): 160×224 gives
5×7 at 1/32 (UPerNet) and 20×28 at 1/8 (PSPNet).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.model.heads.ppm import ExportPool, pool_matrix

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
SIZE = "160x224"


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("s, n", [(1, 5), (2, 5), (3, 7), (6, 20), (6, 28), (6, 6), (3, 3)])
def test_fixed_pooling_equals_adaptive_pooling(s, n, dynamic):
    x = torch.randn(2, 4, n, n + 3)
    ref = torch.nn.functional.adaptive_avg_pool2d(x, s)
    torch.testing.assert_close(ExportPool(s, dynamic)(x), ref, rtol=0, atol=1e-6)
    assert torch.allclose(pool_matrix(n, s).sum(1), torch.ones(s))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["convnext", "swin", "pspnet"])
def test_onnx_export_verifies(cli, model, tiny_convnext_dir, tiny_swin_dir, tiny_pspnet_dir, tmp_path):
    src = {"convnext": tiny_convnext_dir, "swin": tiny_swin_dir, "pspnet": tiny_pspnet_dir}[model]
    r = cli("export", src, "-f", "onnx", "-o", tmp_path / "m.onnx", "--size", SIZE)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verified"] is True and {c["input"] for c in doc["checks"]} == {"random", "image"}
    for c in doc["checks"]:
        print(
            f"\nEXPORT onnx {model} {c['input']}: max|diff| {c['max_abs_diff']:.2e}, labels {c['label_agreement']:.5f}"
        )
        assert c["max_abs_diff"] <= 1e-4 and c["label_agreement"] > 0.999
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["format"] == "segcli-export/1" and side["input"]["size"] == [160, 224]
    assert side["classes"] == Segmenter.from_pretrained(src).classes and len(side["palette"]) == len(side["classes"])


@pytest.mark.slow
def test_predict_through_onnx_equals_eager(cli, onnx_convnext, tiny_convnext_dir, tmp_path):
    eager, ort = Segmenter.from_pretrained(tiny_convnext_dir), Segmenter.from_pretrained(onnx_convnext)
    assert ort.info.input_size == (128, 128) and ort.classes == eager.classes and ort.params().preset == "hf"
    img = random_image(200, 300, seed=4)
    whole = dict(resize="128x128")
    torch.testing.assert_close(ort.logits(img, "hf", **whole), eager.logits(img, "hf", **whole), rtol=0, atol=1e-4)
    slide = dict(resize="none", mode="slide", crop=128, stride=85)
    a, b = ort.run(img, "hf", logits=True, **slide), eager.run(img, "hf", logits=True, **slide)
    assert a.windows == b.windows == 2 * 4
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-4)
    assert (a.labels == b.labels).mean() > 0.999
    Image.fromarray(img).save(tmp_path / "x.png")
    r = cli("predict", tmp_path / "x.png", "-m", onnx_convnext, "-o", tmp_path / "out", "--jsonl")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["model"]["source"] == "onnx"
    assert (np.asarray(Image.open(tmp_path / "out" / "x.png")) == eager.predict(img, "hf", **whole)).mean() > 0.999
    bad = cli(
        "predict", tmp_path / "x.png", "-m", onnx_convnext, "-o", tmp_path / "o2", "--preset", "hf", "--resize", "96x96"
    )
    assert bad.exit_code == 2 and "was exported for 128x128 inputs" in bad.stderr  # every image would fail


@pytest.mark.slow
def test_dynamic_onnx_runs_other_sizes(cli, tiny_convnext_dir, tiny_swin_dir, tmp_path):
    r = cli("export", tiny_convnext_dir, "-f", "onnx", "-o", tmp_path / "d.onnx", "--size", SIZE, "--dynamic")
    assert r.exit_code == 0, r.stderr
    checks = {c["input"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["random, other size"]["shape"] == [1, 3, 197, 203] and checks["random, other size"]["ok"]
    ort = Segmenter.from_pretrained(tmp_path / "d.onnx")
    eager = Segmenter.from_pretrained(tiny_convnext_dir)
    img = random_image(90, 150, seed=5)
    torch.testing.assert_close(
        ort.logits(img, "hf", resize="none"), eager.logits(img, "hf", resize="none"), rtol=0, atol=1e-4
    )
    r = cli("export", tiny_swin_dir, "-f", "onnx", "-o", tmp_path / "s.onnx", "--dynamic")
    assert r.exit_code == 2 and "not supported for Swin" in r.stderr


def test_torchscript_with_preprocess_and_labels(cli, tiny_pspnet_dir, tmp_path):
    r = cli(
        "export",
        tiny_pspnet_dir,
        "-f",
        "torchscript",
        "-o",
        tmp_path / "m.pt",
        "--size",
        SIZE,
        "--with-preprocess",
        "--labels",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verified"] and all(c["label_agreement"] >= 0.999 for c in doc["checks"])
    module = torch.jit.load(str(tmp_path / "m.pt"))
    img = random_image(160, 224, seed=6)
    labels = module(torch.from_numpy(img)[None])[0].numpy()  # uint8 RGB in, class indices out: usable alone
    eager = Segmenter.from_pretrained(tiny_pspnet_dir)
    assert (labels == eager.predict(img, "hf", resize="160x224")).mean() > 0.999
    side = json.loads((tmp_path / "m.pt.json").read_text())
    assert side["input"]["layout"].startswith("NHWC uint8") and side["output"]["name"] == "labels"
    assert side["align_corners"] is True and side["classes"][0] == "road"


def test_export_time_estimate_follows_the_network():
    """The estimate `segcli export` prints grows with the network's modules (what torch.export's tracing
    works through), is larger for a dynamic ONNX export and stays within what was measured (a few seconds
    for the tiny test models, tens for real UperNet-ConvNeXt-T; benchmarks/export_time.py)."""
    from segcli.backends.export import estimate_seconds
    from segcli.loading.registry import load_registry
    from segcli.model import Segmentor

    with torch.device("meta"):
        real = Segmentor(load_registry()["upernet-convnext-tiny"].network)
        small = Segmentor(load_registry()["upernet-convnext-tiny"].network.__class__(*_tiny_convnext_parts()))
    for fmt in ("onnx", "torchscript"):
        assert 0 < estimate_seconds(small, fmt) < estimate_seconds(real, fmt)
    assert estimate_seconds(real, "onnx", dynamic=True) > estimate_seconds(real, "onnx")
    assert 2 < estimate_seconds(small, "onnx") < 15 and 5 < estimate_seconds(real, "onnx") < 60


def _tiny_convnext_parts():
    from segcli.model.backbones import ConvNeXtConfig
    from segcli.model.heads.uper import UPerHeadConfig

    return ConvNeXtConfig((1, 1, 2, 1), (16, 24, 32, 40)), UPerHeadConfig((16, 24, 32, 40), 150, channels=32)


@pytest.mark.slow
def test_verification_failure_keeps_the_file(onnx_kept):
    r, out = onnx_kept  # (the export the other ONNX tests here run)
    assert r.exit_code == 1
    assert "differs from the model beyond --atol 1e-12; the file is kept" in r.stderr
    assert out.is_file() and json.loads(r.stdout)["verified"] is False


def test_missing_onnxruntime_names_the_extra(cli, tiny_convnext_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    r = cli("export", tiny_convnext_dir, "-f", "onnx", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "onnxruntime is not installed" in r.stderr
    assert "pip install onnx onnxscript onnxruntime" in r.stderr and "pip install '.[onnx]'" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_fp16_safetensors_halves_the_file_and_loads_back(cli, tiny_convnext_dir, tmp_path):
    r = cli("export", tiny_convnext_dir, "-f", "safetensors-fp16", "-o", tmp_path / "fp16")
    assert r.exit_code == 0, r.stderr
    full = (tiny_convnext_dir / "model.safetensors").stat().st_size
    half = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert 0.45 < half / full < 0.55
    a, b = Segmenter.from_pretrained(tiny_convnext_dir), Segmenter.from_pretrained(tmp_path / "fp16")
    assert b.dtype == torch.float32 and b.classes == a.classes and b.info.input_size == a.info.input_size
    w = b.model.decode_head.classifier.weight
    assert torch.equal(w, a.model.decode_head.classifier.weight.half().float())
    img = random_image(96, 128, seed=7)
    la, lb = a.logits(img), b.logits(img)
    assert (la - lb).abs().max() < 2e-2 * la.abs().max() and (la.argmax(0) == lb.argmax(0)).float().mean() > 0.98


def test_export_usage_errors(cli, tiny_convnext_dir, tmp_path):
    for args, msg in [
        (["-f", "tflite"], "unknown --format"),
        (["-f", "torchscript", "--dynamic"], "ONNX only"),
        (["-f", "onnx", "--size", "big"], "invalid --size"),
        (["-f", "onnx", "--size", "16x16"], "too small"),
    ]:
        r = cli("export", tiny_convnext_dir, *args, "-o", tmp_path / "m.x")
        assert r.exit_code == 2 and msg in r.stderr, (args, r.stderr)


@pytest.mark.slow
def test_sidecar_that_disagrees_with_the_graph_is_a_load_error(cli, onnx_convnext, tmp_path):
    import shutil

    onnx = tmp_path / "m.onnx"
    shutil.copy(onnx_convnext, onnx)
    side = json.loads(Path(f"{onnx_convnext}.json").read_text())
    side["classes"], side["palette"] = side["classes"][:3], side["palette"][:3]
    Path(f"{onnx}.json").write_text(json.dumps(side))
    Image.fromarray(random_image(40, 40)).save(tmp_path / "x.png")
    r = cli("predict", tmp_path / "x.png", "-m", onnx, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "lists 3 classes but m.onnx outputs 150 channels" in r.stderr, r.stderr


def test_torchscript_exports_run_like_the_network(cli, tiny_pspnet_dir, tmp_path):
    r = cli("export", tiny_pspnet_dir, "-f", "torchscript", "-o", tmp_path / "m.pt", "--size", "96x128", "--no-verify")
    assert r.exit_code == 0, r.stderr
    ts, eager = Segmenter.from_pretrained(tmp_path / "m.pt"), Segmenter.from_pretrained(tiny_pspnet_dir)
    assert ts.backend == "torchscript" and ts.classes == eager.classes and ts.info.input_size == (96, 128)
    img = random_image(150, 230, seed=8)
    for view in (dict(resize="96x128"), dict(resize="none", mode="slide", crop="96x128", stride=64)):
        torch.testing.assert_close(ts.logits(img, "hf", **view), eager.logits(img, "hf", **view), rtol=0, atol=1e-4)
    Image.fromarray(img).save(tmp_path / "x.png")
    r = cli("predict", tmp_path / "x.png", "-m", tmp_path / "m.pt", "-o", tmp_path / "out", "--jsonl")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"]["source"] == "torchscript" and doc["inference"]["backend"] == "torchscript"
    want = eager.predict(img, "hf", resize="96x128")
    assert (np.asarray(Image.open(tmp_path / "out" / "x.png")) == want).mean() > 0.999
    (tmp_path / "m.pt.json").unlink()  # compiled code without segcli's sidecar: not run
    r = cli("predict", tmp_path / "x.png", "-m", tmp_path / "m.pt", "-o", tmp_path / "o2")
    assert r.exit_code == 2 and "a TorchScript archive" in r.stderr and "FILE.pt.json" in r.stderr
