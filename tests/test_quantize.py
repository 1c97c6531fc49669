"""`segcli quantize` (segcli.quantization): a real int8 QDQ model from the tiny ConvNeXt, calibrated on generated
photos, compared with float32 on the held-out ones, run by `predict -m FILE.onnx`; refusals write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import photo
from PIL import Image

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the [onnx] extra)")

VIEW = ("--resize", "64x64")  # one view size: a static export at it


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for i in range(6):
        photo(folder / ("sub" if i % 2 else ".") / f"im{i}.png", 48, 64, seed=10 + i)
    return folder


def _labels(folder):
    return {p.name: np.asarray(Image.open(p)) for p in folder.rglob("im*.png")}


@pytest.mark.slow
def test_an_int8_model_is_checked_written_and_predicts_like_any_export(cli, tiny_convnext_dir, photos, tmp_path):
    fp32 = tmp_path / "fp32"
    r = cli("predict", photos, "-m", tiny_convnext_dir, "-o", fp32, *VIEW, "-q")
    assert r.exit_code == 0, r.output
    gt = tmp_path / "gt"  # float32's own labels as ground truth: its mIoU is 100 by construction
    for p in fp32.rglob("im*.png"):
        (gt / p.relative_to(fp32)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(Image.open(p)).astype(np.uint8)).save(gt / p.relative_to(fp32))
    out = tmp_path / "models" / "int8.onnx"
    args = ("--calib", photos, "-o", out, "--calib-images", "3", "--gt", gt, "--min-agreement", "0.5")
    r = cli("quantize", tiny_convnext_dir, *args, "--max-miou-drop", "100", *VIEW, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["written"] and doc["size"] == [64, 64] and not doc["dynamic"]
    check = doc["check"]
    assert check["images"] == 3 and check["held_out"] and doc["calibration"]["views"] == 3
    # the graph is int8: weights quantized per channel, activations through QuantizeLinear / DequantizeLinear
    import onnx

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer)
    side = json.loads((tmp_path / "models" / "int8.onnx.json").read_text())
    assert side["quantization"]["check"]["label_agreement"] == check["label_agreement"]
    # predict runs it like any export; the agreement it reported is that of these labels on the held-out images
    int8 = tmp_path / "int8-out"
    r = cli("predict", photos, "-m", out, "-o", int8, *VIEW, "-q")
    assert r.exit_code == 0, r.output
    a, b = _labels(fp32), _labels(int8)
    calibrated = {p.rsplit("/", 1)[1] for p in doc["calibration"]["files"]}
    held = [n for n in a if n not in calibrated]
    assert len(calibrated) == 3 and len(held) == 3
    same = sum(int((a[n] == b[n]).sum()) for n in held) / sum(a[n].size for n in held)
    assert same == pytest.approx(check["label_agreement"], abs=1e-9) and 0.5 < same < 1.0
    m = check["miou"]
    assert m["float32"] == pytest.approx(100.0) and m["images"] == 3 and m["drop"] == pytest.approx(100 - m["int8"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx", "int8.onnx.json"]  # no temporary left


@pytest.mark.slow
def test_a_model_that_loses_too_much_is_not_written(cli, tiny_convnext_dir, photos, tmp_path):
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"an earlier model")
    r = cli("quantize", tiny_convnext_dir, "--calib", photos, "-o", out, "--calib-images", "3", *VIEW, "--json")
    doc = json.loads(r.stdout)
    assert doc["check"]["label_agreement"] < 0.95  # the tiny random model's near-tied logits: the premise
    assert r.exit_code == 1 and not doc["written"] and "--min-agreement 95.00%" in doc["refused"]
    assert f"{out} not written" in r.stderr
    assert out.read_bytes() == b"an earlier model" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


def test_what_quantize_refuses_before_any_work(cli, tiny_convnext_dir, tiny_swin_dir, photos, tmp_path):
    base = ("--calib", photos, *VIEW)
    cases = [
        ((tiny_convnext_dir, *base, "-o", tmp_path / "q.pt"), "is an ONNX file"),
        ((tiny_convnext_dir, "--calib", tmp_path / "none", "-o", tmp_path / "q.onnx"), "not a directory"),
        ((tiny_convnext_dir, *base, "-o", tiny_convnext_dir / "q.onnx"), "inside the model's folder"),
        ((tiny_convnext_dir, *base, "-o", tmp_path / "q.onnx", "--min-agreement", "2"), "between 0 and 1"),
        ((tiny_convnext_dir, *base, "-o", tmp_path / "q.onnx", "--gt", photos / "im0.png"), "not a directory"),
        ((tiny_convnext_dir, *base, "-o", tmp_path / "q.onnx", "--gt", tmp_path), "has ground truth"),
        ((tiny_swin_dir, "--calib", photos, "--resize", "none", "-o", tmp_path / "q.onnx"), "one fixed view size"),
    ]
    for args, message in cases:
        r = cli("quantize", *args)
        assert r.exit_code == 2 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "q.onnx").exists() and not list(tiny_convnext_dir.glob("q.*"))
