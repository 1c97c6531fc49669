"""`segcli.train.fit` on generated data (textured shapes, 4 classes): the data layouts and the scan, the
loss falls and the trained model beats the untrained one on held-out images, RUN/model is what `predict`
runs, and an interrupted-and-resumed run has the uninterrupted run's loss curve, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli import Segmenter
from segcli.errors import UsageError
from segcli.train.data import MaskRule, find, scan
from segcli.train.fit import Events, fit

NAMES = ["ground", "red square", "green disc", "blue bar"]
COLOURS = [(120, 120, 120), (200, 40, 40), (40, 180, 60), (50, 70, 210)]
SMALL = dict(crop=(32, 32), batch=2, workers=0, log_every=1, photometric=False)


def shapes(rng: np.random.Generator, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of textured shapes and its index mask (0 ground, 1 squares, 2 discs, 3 bars)."""
    labels = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(3):
        k = int(rng.integers(1, 4))
        cy, cx, r = int(rng.integers(8, h - 8)), int(rng.integers(8, w - 8)), int(rng.integers(5, 10))
        if k == 1:
            m = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif k == 2:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            m = (abs(yy - cy) < 3) & (abs(xx - cx) < 2 * r)
        labels[m] = k
    image = np.array(COLOURS, dtype=np.float32)[labels] + rng.normal(0, 12, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def dataset(root: Path, n: int, seed: int = 0, layout: str = "images") -> Path:
    rng = np.random.default_rng(seed)
    images, masks = (
        (root / "img_dir" / "train", root / "ann_dir" / "train")
        if layout == "mmseg"
        else (
            root / "images",
            root / "masks",
        )
    )
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, labels = shapes(rng)
        Image.fromarray(image).save(images / f"{i:03d}.jpg", quality=95)
        Image.fromarray(labels).save(masks / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def classes_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("classes") / "classes.csv"
    path.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)))
    return path


def _accuracy(seg: Segmenter, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([(seg.predict(image) == labels).mean() for image, labels in pairs]))


def test_the_loss_falls_and_the_model_learns(tiny_convnext_dir, classes_file, tmp_path):
    data = dataset(tmp_path / "data", 12)
    held = [shapes(np.random.default_rng(100 + i)) for i in range(4)]
    summary = fit(data, str(tiny_convnext_dir), tmp_path / "run", classes=classes_file, iters=60, lr=2e-3, **SMALL)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["total"] for r in log if "total" in r]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    trained = Segmenter.from_pretrained(summary.model)
    assert trained.info.class_set.classes == tuple(NAMES) and trained.info.class_set.palette[1] == COLOURS[1]
    untrained = Segmenter.from_pretrained(tiny_convnext_dir)
    assert _accuracy(trained, held) > max(0.5, _accuracy(untrained, held) + 0.2)


def test_an_interrupted_run_resumes_with_the_same_loss_curve(tiny_convnext_dir, classes_file, tmp_path):
    data = dataset(tmp_path / "data", 6)
    common = dict(classes=classes_file, iters=8, lr=1e-3, val_every=100, checkpoint_every=100, **SMALL)
    fit(data, str(tiny_convnext_dir), tmp_path / "whole", **common)

    seen: list[int] = []
    stop = Events(logged=lambda r: seen.append(r["iter"]), should_stop=lambda: bool(seen) and seen[-1] >= 3)
    first = fit(data, str(tiny_convnext_dir), tmp_path / "parts", events=stop, **common)
    assert first.stopped and first.iters == 3
    with pytest.raises(UsageError, match="holds a training run already"):
        fit(data, str(tiny_convnext_dir), tmp_path / "parts", **common)
    fit(data, str(tiny_convnext_dir), tmp_path / "parts", resume=True, **common)

    def curve(run: str) -> list[tuple[int, float, float]]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [(r["iter"], r["total"], r["lr"]) for r in map(json.loads, lines) if "total" in r]

    assert curve("parts") == curve("whole") and len(curve("whole")) == 8  # equal floats: bit for bit


def test_layouts_and_the_scan(tmp_path):
    mm = dataset(tmp_path / "mm", 3, layout="mmseg")
    (mm / "img_dir" / "val").mkdir()
    (mm / "ann_dir" / "val").mkdir()
    Image.fromarray(shapes(np.random.default_rng(9))[0]).save(mm / "img_dir" / "val" / "v.jpg")
    Image.fromarray(shapes(np.random.default_rng(9))[1]).save(mm / "ann_dir" / "val" / "v.png")
    split = find(mm)
    assert len(split.train) == 3 and [p.name for p in split.val] == ["v.jpg"] and "img_dir" in split.layout

    plain = dataset(tmp_path / "plain", 10)
    split = find(plain, val_split=0.2, seed=1)
    assert len(split.train) == 8 and len(split.val) == 2
    assert [p.name for p in find(plain, val_split=0.2, seed=1).val] == [p.name for p in split.val]  # seeded
    (plain / "labels").mkdir()
    with pytest.raises(UsageError, match="ambiguous"):
        find(plain)

    bad = dataset(tmp_path / "bad", 4)
    Image.fromarray(np.full((48, 64), 7, dtype=np.uint8)).save(bad / "masks" / "001.png")  # class 7 of 4
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(bad / "masks" / "002.png")  # wrong size
    (bad / "images" / "extra.jpg").write_bytes((bad / "images" / "000.jpg").read_bytes())  # no mask
    split = find(bad)
    result = scan(split.train, MaskRule(4))
    assert len(result.good) == 2 and len(result.problems) == 2 and len(split.missing) == 1
    assert "001.png: values [7] are outside the 4 classes" in result.problems[0]
    assert "002.png: 10x10 mask for a 64x48 image" in result.problems[1]
    assert result.pixels.sum() + result.ignored == 2 * 48 * 64
