"""`segcli evaluate`: metrics equal to mmseg's IoUMetric and to a hand count; options, errors, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image
from mmseg_ref import import_mmseg
from PIL import Image

from segcli.errors import LabelRangeError, UnreducedLabelsError
from segcli.evaluation.metrics import confusion, scores


def save(path: Path, labels: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8))
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)
    return path


def structured(h: int, w: int, k: int, seed: int) -> np.ndarray:
    """Blocky label maps: some classes large, some small, some absent."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, k, (max(1, h // 16), max(1, w // 16)))
    return np.kron(small, np.ones((16, 16), dtype=np.int64))[:h, :w]


def maps(seed: int, k: int = 12, ignore: int = 255):
    rng = np.random.default_rng(seed)
    gt = structured(70, 90, k - 3, seed)  # classes k-3..k-1 never in GT
    gt[rng.random(gt.shape) < 0.1] = ignore
    pred = np.where(rng.random(gt.shape) < 0.7, np.clip(gt, 0, k - 1), rng.integers(0, k - 1, gt.shape))
    pred[pred == k - 2] = 0  # one class never predicted either
    return gt.astype(np.uint8), pred.astype(np.uint8)


# ---------------------------------------------------------------- exactness


def test_hand_computed_example():
    # 3 classes; gt / pred with one ignored pixel
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], dtype=np.uint8)
    cm = confusion(gt, pred, 3)
    # counted by hand (rows gt, cols pred), the ignored pixel left out
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    sc = scores(cm)
    # class 0: I=1 G=2 P=3 → IoU 1/4; class 1: I=2 G=3 P=3 → 2/4; class 2: I=1 G=2 P=1 → 1/2
    assert sc["per_class"]["IoU"].tolist() == [0.25, 0.5, 0.5]
    assert sc["mIoU"] == pytest.approx((0.25 + 0.5 + 0.5) / 3, abs=0, rel=1e-15)
    assert sc["aAcc"] == 4 / 7
    assert sc["per_class"]["Acc"].tolist() == [0.5, 2 / 3, 0.5]
    assert sc["per_class"]["Dice"].tolist() == [2 / 5, 4 / 6, 2 / 3]
    assert sc["per_class"]["Fscore"].tolist() == pytest.approx([2 / 5, 2 / 3, 2 / 3])


def mmseg_metrics(pairs, k, ignore=255):
    import_mmseg()
    from mmseg.evaluation.metrics import IoUMetric

    areas = [
        IoUMetric.intersect_and_union(
            torch.from_numpy(p.astype(np.int64)), torch.from_numpy(g.astype(np.int64)), k, ignore
        )
        for g, p in pairs
    ]
    totals = [sum(a[i] for a in areas) for i in range(4)]
    return IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU", "mDice", "mFscore"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_mmseg_iou_metric(seed):
    k = 12
    pairs = [maps(seed * 10 + i, k) for i in range(4)]
    cm = sum(confusion(g, p, k) for g, p in pairs)
    ours = scores(cm)
    ref = mmseg_metrics(pairs, k)
    assert abs(ours["aAcc"] - float(ref["aAcc"])) <= 1e-6
    for m in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"):
        a, b = ours["per_class"][m], np.asarray(ref[m], dtype=np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), m  # the same classes are 0/0
        assert np.nanmax(np.abs(a - b)) <= 1e-6, m
        assert abs(ours[f"m{m}"] - float(np.nanmean(b))) <= 1e-6, m
    assert np.isnan(ours["per_class"]["IoU"][k - 1])  # absent from both: NaN, left out of the mean


def test_zero_convention_counts_absent_classes():
    gt, pred = maps(5)
    cm = confusion(gt, pred, 12)
    nan, zero = scores(cm, "nan"), scores(cm, "zero")
    present = ~np.isnan(nan["per_class"]["IoU"])
    assert zero["mIoU"] == pytest.approx(np.nansum(nan["per_class"]["IoU"]) / 12)
    assert zero["mIoU"] < nan["mIoU"] and present.sum() < 12


def test_reduce_zero_label_round_trip():
    """A reduced map evaluated plainly == the raw (+1, 0 = other) map evaluated with reduce_zero_label."""
    gt, pred = maps(7, k=150)
    raw = gt.astype(np.int64) + 1
    raw[gt == 255] = 0  # what reduce_zero_label turns back into ignore
    raw = raw.astype(np.uint8)
    assert np.array_equal(confusion(gt, pred, 150), confusion(raw, pred, 150, reduce_zero_label=True))
    raw255 = raw.copy()
    raw255[0, 0] = 255  # an explicit ignore stays ignored
    assert confusion(raw255, pred, 150, reduce_zero_label=True).sum() == confusion(
        raw, pred, 150, reduce_zero_label=True
    ).sum() - (raw[0, 0] != 0)


def test_label_errors():
    gt, pred = maps(3, k=150)
    raw = gt.astype(np.int64) + 1
    raw[gt == 255] = 0
    raw[0, :5] = 150  # the raw ADE20K form reaches num_classes
    with pytest.raises(UnreducedLabelsError, match="add --reduce-zero-label"):
        confusion(raw.astype(np.uint8), pred, 150, where="a.png")
    odd = gt.copy()
    odd[0, 0] = 200
    with pytest.raises(LabelRangeError, match=r"a\.png: ground-truth values \[200\] are outside 0\.\.149"):
        confusion(odd, pred, 150, where="a.png")
    gt12, pred12 = maps(3)
    with pytest.raises(LabelRangeError, match=r"predicted values \[12\]"):
        confusion(gt12, np.full_like(pred12, 12), 12, where="a.png")


# ---------------------------------------------------------------- CLI


@pytest.fixture()
def dataset(tmp_path):
    """gt/ and pred/ trees: nested folders, palette predictions, ignore pixels, one unpaired file each side."""
    pairs = []
    for i, rel in enumerate(["a/x", "a/y", "b/z"]):
        gt, pred = maps(20 + i)
        save(tmp_path / "gt" / f"{rel}_gtFine.png", gt)
        save(tmp_path / "pred" / f"{rel}.png", pred, palette=True)
        pairs.append((gt, pred))
    save(tmp_path / "gt" / "b" / "lonely_gtFine.png", maps(9)[0])
    save(tmp_path / "pred" / "extra.png", maps(8)[1])
    return tmp_path, pairs


def test_cli_json_csv_confusion(cli, dataset):
    root, pairs = dataset
    out = root / "report.json"
    r = cli(
        "evaluate",
        "--pred",
        root / "pred",
        "--gt",
        root / "gt",
        "--gt-suffix",
        "_gtFine",
        "--num-classes",
        12,
        "--json",
        out,
        "--csv",
        root / "m.csv",
        "--confusion",
        root / "cm.npy",
        "--per-image",
    )
    assert r.exit_code == 1  # one ground-truth file has no prediction
    assert "lonely_gtFine.png: no prediction for this ground truth" in r.stderr
    assert "1 prediction(s) without ground truth" in r.stderr and "mIoU" in r.stderr
    doc = json.loads(out.read_text())
    ref = scores(sum(confusion(g, p, 12) for g, p in pairs))
    assert doc["schema"] == "segcli.evaluation/1" and doc["pairs"] == 3 and doc["convention"] == "nan"
    assert doc["summary"]["mIoU"] == ref["mIoU"] and doc["summary"]["aAcc"] == ref["aAcc"]  # unrounded
    assert doc["classes"][11]["IoU"] is None  # absent from both
    assert doc["unpaired"]["gt_without_prediction"][0].endswith("lonely_gtFine.png")
    assert [p["name"] for p in doc["per_image"]] == ["a/x", "a/y", "b/z"]
    assert np.array_equal(np.load(root / "cm.npy"), sum(confusion(g, p, 12) for g, p in pairs))
    rows = (root / "m.csv").read_text().splitlines()
    assert rows[0].startswith("index,name,IoU") and rows[-2].split(",")[1] == "mean" and len(rows) == 12 + 3


def test_cli_json_to_stdout_only(cli, dataset):
    root, _ = dataset
    (root / "gt" / "b" / "lonely_gtFine.png").unlink()
    r = cli(
        "evaluate",
        "--pred",
        root / "pred",
        "--gt",
        root / "gt",
        "--gt-suffix",
        "_gtFine",
        "--num-classes",
        12,
        "--json",
        "-",
        "--absent",
        "zero",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)  # nothing but JSON on stdout
    assert doc["convention"] == "zero" and doc["classes"][11]["IoU"] == 0.0


def test_cli_classes_and_reduce_zero_label(cli, tmp_path):
    gt, pred = maps(4, k=150)
    raw = gt.astype(np.int64) + 1
    raw[gt == 255] = 0
    raw[:3, :3] = 150
    save(tmp_path / "gt" / "i.png", raw)
    save(tmp_path / "pred" / "i.png", pred)
    base = ["evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--classes", "ade20k"]
    r = cli(*base)
    assert r.exit_code == 2 and "add --reduce-zero-label" in r.stderr
    r = cli(*base, "--reduce-zero-label", "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["classes"][0]["name"] == "wall" and doc["reduce_zero_label"] is True


def test_cli_errors(cli, tmp_path):
    gt, pred = maps(1)
    save(tmp_path / "gt" / "i.png", gt)
    save(tmp_path / "pred" / "i.png", pred[:, :50])
    r = cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes", 12)
    h = gt.shape[0]
    assert r.exit_code == 1 and f"prediction is 50x{h} but" in r.stderr and "--resize-pred nearest" in r.stderr
    r = cli(
        "evaluate",
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--num-classes",
        12,
        "--resize-pred",
        "nearest",
    )
    assert r.exit_code == 0, r.stderr
    Image.fromarray(random_image(70, 90)).save(tmp_path / "pred" / "i.png")
    r = cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes", 12)
    assert r.exit_code == 1 and "a colour image, not a label map" in r.stderr
    for args, msg in [
        ([], "say what the classes are"),
        (["--num-classes", 12, "--absent", "maybe"], "--absent"),
        (["--num-classes", 12, "--classes", "coco"], "not a class set"),
        (["--num-classes", 12, "--model", "x"], "either --pred"),
    ]:
        r = cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", *args)
        assert r.exit_code == 2 and msg in r.stderr, (args, r.stderr)


def test_cli_model_form(cli, tiny_convnext_dir, tmp_path):
    """--model --images: predict, then evaluate; equals evaluating the saved predictions."""
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray(random_image(48, 64, seed=i)).save(tmp_path / "img" / f"s{i}_leftImg8bit.png")
        save(tmp_path / "gt" / f"s{i}_gtFine.png", structured(48, 64, 150, i))
    r = cli(
        "evaluate",
        "--model",
        tiny_convnext_dir,
        "--images",
        tmp_path / "img",
        "--gt",
        tmp_path / "gt",
        "--gt-suffix",
        "_gtFine",
        "--pred-suffix",
        "_leftImg8bit",
        "--save-pred",
        tmp_path / "saved",
        "--json",
        "-",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pairs"] == 2 and doc["inference"]["preset"] == "hf" and doc["model"]["source"] == "local"
    again = cli(
        "evaluate",
        "--pred",
        tmp_path / "saved",
        "--gt",
        tmp_path / "gt",
        "--gt-suffix",
        "_gtFine",
        "--pred-suffix",
        "_leftImg8bit",
        "--classes",
        "ade20k",
        "--json",
        "-",
    )
    assert json.loads(again.stdout)["summary"] == doc["summary"]
    assert not math.isnan(doc["summary"]["aAcc"])


def test_8_bit_fast_path_equals_the_generic_path():
    for seed in range(3):
        gt, pred = maps(seed, k=12)
        for reduce in (False, True):
            fast = confusion(gt, pred, 12, reduce_zero_label=reduce)
            generic = confusion(gt.astype(np.uint16), pred.astype(np.int32), 12, reduce_zero_label=reduce)
            assert np.array_equal(fast, generic) and fast.sum() > 0
