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
SMALL = dict(crop=(32, 32), batch=2, workers=0, log_every=1, photometric=False, report=False)


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


def test_the_loss_falls_and_the_model_learns(small_model, classes_file, tmp_path):
    data = dataset(tmp_path / "data", 12)
    held = [shapes(np.random.default_rng(100 + i)) for i in range(4)]
    summary = fit(data, str(small_model), tmp_path / "run", classes=classes_file, iters=60, lr=2e-3, **SMALL)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["total"] for r in log if "total" in r]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10]), losses
    trained = Segmenter.from_pretrained(summary.model)
    assert trained.info.class_set.classes == tuple(NAMES) and trained.info.class_set.palette[1] == COLOURS[1]
    untrained = Segmenter.from_pretrained(small_model)
    assert _accuracy(trained, held) > max(0.5, _accuracy(untrained, held) + 0.2)


def test_an_interrupted_run_resumes_with_the_same_loss_curve(small_model, classes_file, tmp_path):
    data = dataset(tmp_path / "data", 6)
    common = dict(classes=classes_file, iters=8, lr=1e-3, val_every=100, checkpoint_every=100, **SMALL)
    fit(data, str(small_model), tmp_path / "whole", **common)

    seen: list[int] = []
    stop = Events(logged=lambda r: seen.append(r["iter"]), should_stop=lambda: bool(seen) and seen[-1] >= 3)
    first = fit(data, str(small_model), tmp_path / "parts", events=stop, **common)
    assert first.stopped and first.iters == 3
    with pytest.raises(UsageError, match="holds a training run already"):
        fit(data, str(small_model), tmp_path / "parts", **common)
    fit(data, str(small_model), tmp_path / "parts", resume=True, **common)

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


def test_classes_files_in_four_shapes_and_the_classifier_remap(tmp_path):
    import torch

    from segcli.errors import ConfigError
    from segcli.train.classes import read_classes, remap

    (tmp_path / "a.csv").write_text("name,r,g,b\nsoil,1,2,3\ncrop,4,5,6\n")
    (tmp_path / "b.json").write_text('{"classes": ["soil", "crop"], "palette": [[1, 2, 3], [4, 5, 6]]}')
    (tmp_path / "c.json").write_text(
        '{"schema": "segcli.classes/1", "classes": [{"index": 1, "name": "crop", "color": "#040506"},'
        ' {"index": 0, "name": "soil", "color": "#010203"}]}'
    )
    (tmp_path / "d.txt").write_text("soil\ncrop\n\n")
    for name in ("a.csv", "b.json", "c.json"):
        s = read_classes(tmp_path / name)
        assert s.classes == ("soil", "crop") and s.palette == ((1, 2, 3), (4, 5, 6)), name
    assert read_classes(tmp_path / "d.txt").classes == ("soil", "crop")
    (tmp_path / "e.txt").write_text("soil\nsoil\n")
    with pytest.raises(ConfigError, match=r"e\.txt: class 'soil' is named twice"):
        read_classes(tmp_path / "e.txt")

    old = ("a", "b", "c")
    weight, bias = torch.arange(3 * 4, dtype=torch.float32).view(3, 4, 1, 1), torch.tensor([1.0, 2.0, 3.0])
    tensors = {"head.w": weight, "head.b": bias, "other": torch.ones(2)}
    shapes = {"head.w": (2, 4, 1, 1), "head.b": (2,), "other": (2,)}
    out, kept = remap(tensors, shapes, old, ("c", "new"))
    assert kept == {"c": 2} and torch.equal(out["head.w"][0], weight[2]) and out["head.b"].tolist() == [3.0, 0.0]
    assert out["head.w"][1].abs().max() < 0.1 and out["other"] is tensors["other"]


def test_the_augmentation_is_seeded_padded_and_avoids_one_class_crops():
    from segcli.train.augment import Pipeline

    rng = np.random.default_rng(0)
    image, labels = shapes(rng, 40, 40)
    labels = labels.astype(np.int64)
    pipe = Pipeline((64, 64), photometric=True)
    a = pipe(image, labels, np.random.default_rng([1, 2]))
    b = pipe(image, labels, np.random.default_rng([1, 2]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # a function of its seed
    assert a[0].shape == (64, 64, 3) and a[1].shape == (64, 64)
    big = np.zeros((200, 200), dtype=np.int64)
    big[:, 150:] = 1  # a quarter of the image: crops retried until no class covers more than 75 %
    pipe = Pipeline((32, 32), ratio=(1.0, 1.0), photometric=False, flip=0.0, base=(200, 200))
    crops = [pipe(np.zeros((200, 200, 3), np.uint8), big, np.random.default_rng(s))[1] for s in range(20)]
    balanced = sum(int(0.25 <= (c == 1).mean() <= 0.75) for c in crops)
    assert balanced >= 10  # seeds 0..19: 15 with the retries, 2 with one try per crop


def test_a_checkpoint_the_disk_refuses_stops_the_run_with_the_last_good_one(small_model, tmp_path, monkeypatch):
    import errno

    from segcli.errors import SegcliError
    from segcli.train.run import RunFolder

    data = dataset(tmp_path / "data", 4)
    real, calls = RunFolder.save, []

    def save(self, step, *args):  # the disk fills up after the first checkpoint
        calls.append(step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, step, *args)

    monkeypatch.setattr(RunFolder, "save", save)
    with pytest.raises(SegcliError, match=r"No space left on device.*iter_00000002"):
        fit(data, str(small_model), tmp_path / "run", iters=6, checkpoint_every=2, val_every=100, **SMALL)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "iter_00000002"


def test_class_weights_need_one_per_class(small_model, tmp_path):
    data = dataset(tmp_path / "data", 2)
    with pytest.raises(UsageError, match="2 weight"):
        fit(data, str(small_model), tmp_path / "run", iters=2, class_weights=(1.0, 2.0), **SMALL)
