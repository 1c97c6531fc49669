"""`--save confidence,entropy`: where the model is unsure, per pixel and per image."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.engine.merge import certainty


def pytest_approx(v: float):
    return pytest.approx(v, rel=1e-5, abs=1e-6)


def pytest_approx_loose(v: float):
    return pytest.approx(float(v), abs=1e-3)  # float16 maps


def test_certainty_is_the_largest_probability_and_the_normalised_entropy():
    p = torch.rand(7, 5, 6).softmax(0)
    top, ent = certainty(p)
    for y, x in [(0, 0), (2, 3), (4, 5)]:
        col = p[:, y, x].double()
        assert top[y, x].item() == col.max().item()
        assert ent[y, x].item() == pytest_approx(float(-(col * col.log()).sum() / math.log(7)))
    uniform, one = torch.full((4, 1, 1), 0.25), torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1)
    assert certainty(uniform)[1].item() == pytest_approx(1.0) and certainty(one)[1].item() == 0.0


def test_confidence_maps_and_the_json_follow_the_probabilities(cli, tiny_convnext_dir, tmp_path):
    image = random_image(60, 90, seed=12)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    r = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", out, "--save", "json,confidence,entropy",
            "--low-confidence", "0.6")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    p = seg.probs(image).double()  # [K, H, W], the model's preset, computed here on its own
    top = p.max(0).values.numpy()
    ent = (-(p * p.clamp_min(1e-12).log()).sum(0) / math.log(p.shape[0])).numpy()
    conf_png = np.asarray(Image.open(out / "a_confidence.png")).astype(int)
    ent_png = np.asarray(Image.open(out / "a_entropy.png")).astype(int)
    assert np.abs(conf_png - np.rint(top * 255)).max() <= 1 and np.abs(ent_png - np.rint(ent * 255)).max() <= 1
    doc = json.loads((out / "a.json").read_text())["confidence"]
    assert doc["mean"] == pytest_approx_loose(top.mean()) and doc["low_confidence"] == 0.6
    assert abs(doc["uncertain_fraction"] - (top < 0.6).mean()) <= 2 / top.size  # float16 at the threshold
    labels = np.asarray(Image.open(out / "a.png"))
    for c in doc["classes"]:
        assert c["mean"] == pytest_approx_loose(top[labels == c["index"]].mean()), c
    assert {c["index"] for c in doc["classes"]} == set(np.unique(labels).tolist())
    again = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", out, "--save", "json,confidence,entropy",
                "--low-confidence", "0.3", "--jsonl")  # fmt: skip
    assert json.loads(again.stdout)["status"] == "done"  # another threshold: another JSON
    bad = cli("predict", tmp_path / "a.png", "-m", tiny_convnext_dir, "-o", tmp_path / "o2", "--low-confidence", "2")
    assert bad.exit_code == 2 and "--low-confidence 2.0 is outside 0..1" in bad.stderr


def test_the_report_orders_the_images_most_uncertain_first(cli, tiny_convnext_dir, tmp_path):
    import re

    pytest.importorskip("jinja2", reason="the [report] extra")
    pytest.importorskip("matplotlib", reason="the [report] extra")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        Image.fromarray(random_image(40, 56, seed=40 + i)).save(src / f"p{i}.png")
    model = ["-m", tiny_convnext_dir, "--resize", "128x128"]  # not the preset's 512x512: three runs of four images
    first = cli("predict", src, *model, "-o", tmp_path / "o1", "--save", "json,confidence")
    assert first.exit_code == 0, first.stderr  # a random network is unsure everywhere: a threshold among its values
    means = sorted(json.loads((tmp_path / "o1" / f"p{i}.json").read_text())["confidence"]["mean"] for i in range(4))
    out = tmp_path / "out"
    r = cli("predict", src, *model, "-o", out, "--save", "json,confidence", "--report",
            "--low-confidence", f"{(means[1] + means[2]) / 2:.6f}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    fractions = {
        f"p{i}": json.loads((out / f"p{i}.json").read_text())["confidence"]["uncertain_fraction"] for i in range(4)
    }
    assert len(set(fractions.values())) > 1  # the order below means something
    index = (out / "index.html").read_text()
    assert 'id="order-uncertain"' in index
    page = (out / "segcli-report" / "uncertain-1.html").read_text()
    shown = re.findall(r'<div class="name">([^<]+)</div>\s*<div class="uncertain">uncertain ([0-9.]+)%', page)
    assert [n for n, _ in shown] == sorted(fractions, key=lambda n: -fractions[n])
    for name, value in shown:
        assert float(value) == pytest.approx(100 * fractions[name], abs=0.051)
    plain = cli("predict", src, *model, "-o", tmp_path / "o2", "--report")
    assert plain.exit_code == 0 and 'id="order-uncertain"' not in (tmp_path / "o2" / "index.html").read_text()
