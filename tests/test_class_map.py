"""`--class-map`: a model's classes merged into the user's, in every output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_labels_agree, photo
from PIL import Image

from segcli import Segmenter
from segcli.engine.grouped import merge_logits
from segcli.errors import ConfigError, UsageError
from segcli.evaluation.metrics import confusion
from segcli.loading.class_map import load
from segcli.loading.classes import ClassSet

SET = ClassSet("toy", ("wall", "house", "tree", "grass", "road", "car"), tuple((i, 2 * i, 3 * i) for i in range(6)))


def test_json_and_csv_maps_name_classes_by_name_or_index(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"house": "building", "0": "building", "tree": "green", "grass": "green", "*": None}))
    c = tmp_path / "m.csv"
    c.write_text("source,target\n# buildings\nhouse,building\nwall,building\ntree,green\n3,green\n*,\n")
    for path in (j, c):
        cm = load(path, SET)
        assert cm.class_set.classes == ("building", "green")
        assert cm.table == (0, 0, 1, 1, -1, -1)
        assert cm.class_set.palette == (SET.palette[0], SET.palette[2])  # each its first source class's colour
        assert cm.ignores and cm.ignore_label == 255
    assert load(j, SET).sha256 == load(c, SET).sha256  # the digest is the mapping's, not the file's
    (tmp_path / "o.json").write_text(json.dumps({"road": "road", "*": "other"}))
    assert load(tmp_path / "o.json", SET).table == (1, 1, 1, 1, 0, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"hous": "building"}', r"m\.json: 'hous' is not a class of the model"),
        ('{"House": "building"}', r"did you mean 'house'"),
        ('{"house": "a", "1": "b"}', r"'house' is mapped twice"),
        ('{"house": 3}', r"'house' maps to 3"),
        ('{"house": "a",\n "tree" "b"}', r"m\.json:2: not valid JSON"),
        ('{"*": null}', r"names no output class"),
        ("house,a\ntree,b,c\n", r"m\.json:2: 3 columns"),
    ],
)
def test_a_bad_map_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(path, SET)


def test_merged_logits_are_the_log_of_the_summed_probabilities():
    logits = torch.randn(6, 5, 7) * 8
    logits[0] += 200.0  # far apart: no overflow, the small groups keep their share
    member = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    got = merge_logits(logits.double(), member).softmax(0).numpy()
    p = np.exp(logits.double().numpy() - logits.double().numpy().max(0))
    p /= p.sum(0)
    want = np.stack([p[:2].sum(0), p[2:5].sum(0), p[5]])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def _groups(tmp_path):
    """ADE20K's 150 classes: 0..49 → a, 50..99 → b, the rest ignored."""
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({**{str(i): "a" for i in range(50)}, **{str(i): "b" for i in range(50, 100)}}))
    return path


def _expected(probs: np.ndarray) -> np.ndarray:
    g = np.stack([probs[:50].sum(0), probs[50:100].sum(0), probs[100:].sum(0)])
    return np.where(g.argmax(0) == 2, 255, g.argmax(0)).astype(np.uint8)


@pytest.mark.parametrize(
    "overrides", [{"mode": "whole"}, {"mode": "slide", "crop": "32", "stride": "20", "resize": "none"}]
)
def test_labels_are_the_most_probable_group_of_the_unmapped_model(tiny_convnext_dir, tmp_path, overrides):
    image = photo(tmp_path / "a.png", 48, 64, seed=3)
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    probs = seg.probs(str(image), "hf", **overrides).numpy()  # the model's own classes, computed first
    seg.map_classes(_groups(tmp_path))
    labels = seg.predict(str(image), "hf", **overrides)
    want = _expected(probs)
    assert {0, 1, 255} <= set(np.unique(want).tolist())  # the test sees both groups and ignored pixels
    groups = np.stack([probs[:50].sum(0), probs[50:100].sum(0), probs[100:].sum(0)])
    # equal but at float32 near-ties of two groups' sums (the engine sums in logit space)
    assert_labels_agree(np.where(labels == 255, 2, labels), groups, 1e-6)
    assert (labels == want).mean() > 0.998
    assert seg.classes == ["a", "b"]
    np.testing.assert_allclose(seg.probs(str(image), "hf", **overrides).numpy(), groups, atol=1e-5)  # + ignored


def test_every_output_uses_the_merged_classes_and_resume_follows_the_map(cli, tiny_convnext_dir, tmp_path):
    from pycocotools import mask as mask_utils

    src = tmp_path / "in"
    src.mkdir()
    image = photo(src / "a.png", 48, 64, seed=3)
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    probs = seg.probs(str(image), mode="whole").numpy()
    want = _expected(probs)
    top = np.stack([probs[:50].sum(0), probs[50:100].sum(0), probs[100:].sum(0)]).max(0)
    cmap, out = _groups(tmp_path), tmp_path / "out"
    save = "json,coco,labelstudio,vector,overlay,label,confidence,probs"
    args = ("predict", str(src), "-m", str(tiny_convnext_dir), "-o", str(out), "--mode", "whole", "--save", save)
    assert cli(*args, "--class-map", str(cmap)).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a_label.png")), want)
    saved = np.load(out / "a_probs.npy")  # the output classes only (the ignored ones' share is 1 - their sum)
    np.testing.assert_allclose(saved, np.stack([probs[:50].sum(0), probs[50:100].sum(0)]), atol=2e-3)
    doc = json.loads((out / "a.json").read_text())
    assert {c["name"]: c["pixels"] for c in doc["classes"]} == {
        "a": int((want == 0).sum()),
        "b": int((want == 1).sum()),
    }
    assert doc["ignored_pixels"] == int((want == 255).sum())
    conf = doc["confidence"]  # over the classified pixels: the largest group's probability
    assert conf["uncertain_fraction"] == pytest.approx(float((top[want != 255] < 0.5).mean()), abs=0.01)
    assert conf["mean"] == pytest.approx(float(top[want != 255].mean()), abs=1e-3)
    assert doc["inference"]["class_map"]["classes"]["a"][:2] == ["wall", "building"]
    cocodoc = json.loads((out / "a.coco.json").read_text())
    assert [c["name"] for c in cocodoc["categories"]] == ["a", "b"]
    rebuilt = np.full(want.shape, 255, np.uint8)
    for ann in cocodoc["annotations"]:
        rle = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
        rebuilt[mask_utils.decode(rle).astype(bool)] = ann["category_id"] - 1
    np.testing.assert_array_equal(rebuilt, want)  # ignored pixels in no annotation
    ls = json.loads((out / "a.ls.json").read_text())["predictions"][0]["result"]
    assert sorted(r["value"]["brushlabels"][0] for r in ls) == ["a", "b"]
    gj = json.loads((out / "a.geojson").read_text())
    area = {0: 0.0, 1: 0.0}
    for f in gj["features"]:
        area[f["properties"]["class"]] += f["properties"]["area_px"]
    assert area == {0: (want == 0).sum(), 1: (want == 1).sum()}  # no polygon covers an ignored pixel
    classes = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]] == ["a", "b"]

    assert "1 skipped" in cli(*args, "--class-map", str(cmap)).stderr  # the same map: resumed
    other = tmp_path / "other.csv"
    other.write_text("*,all\n")
    assert "1 done" in cli(*args, "--class-map", str(other)).stderr  # another map: redone
    assert (np.asarray(Image.open(out / "a_label.png")) == 0).all()


def test_evaluate_scores_merged_predictions_and_ignored_pixels_are_misses(cli, tiny_convnext_dir, tmp_path):
    gt_l = np.array([[0, 0, 1, 1], [0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 255, 1, 0], [0, 1, 255, 1]], np.uint8)  # 255: a class map's ignored pixels
    cm = confusion(gt_l, pred, 2, misses=True)
    np.testing.assert_array_equal(cm, [[2, 0, 1], [1, 2, 1]])  # the last column: predicted "no class"
    np.testing.assert_array_equal(confusion(gt_l.astype(np.uint16), pred.astype(np.uint16), 2, misses=True), cm)
    np.testing.assert_array_equal(confusion(gt_l, pred, 2), [[2, 0], [1, 2]])

    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir(), gt.mkdir()
    image = photo(images / "a.png", 48, 64, seed=3)
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    want = _expected(seg.probs(str(image), mode="whole").numpy())
    truth = np.where(want == 255, 1, want).astype(np.uint8)  # ignored pixels are class b's misses
    Image.fromarray(truth).save(gt / "a.png")
    r = cli("evaluate", "--images", str(images), "--gt", str(gt), "-m", str(tiny_convnext_dir), "--mode", "whole",
            "--class-map", str(_groups(tmp_path)), "--json", "-")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    b = int((truth == 1).sum())
    r = cli("evaluate", "--pred", str(gt), "--gt", str(gt), "--num-classes", "2", "--class-map", str(_groups(tmp_path)))
    assert r.exit_code == 2 and "--class-map merges the classes of predictions made here" in r.stderr
    iou = {c["name"]: c["IoU"] for c in doc["classes"]}
    assert iou["a"] == pytest.approx(1.0)
    assert iou["b"] == pytest.approx((want == 1).sum() / b)


def test_a_parser_is_refused(tiny_upp_dir, tmp_path):
    seg = Segmenter.from_pretrained(tiny_upp_dir)
    path = tmp_path / "m.csv"
    path.write_text("*,thing\n")
    with pytest.raises(UsageError, match="single-head model"):
        seg.map_classes(path)
