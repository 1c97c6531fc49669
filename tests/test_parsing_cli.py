"""Unified perceptual parsing through `segcli predict`, `Segmenter.parse` and the other commands, on a
reduced parser (conftest.tiny_upp_dir) with the real class sets and part hierarchy."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from helpers import DATA
from PIL import Image

from segcli import Segmenter
from segcli.errors import UsageError
from segcli.io.outputs import overlay_jpeg


def hierarchy() -> dict[int, list[int]]:
    lines = (DATA / "unifiedparsing" / "object_part_hierarchy.csv").read_text().splitlines()[1:]
    return {int(line.split(",")[0]): [int(p) for p in line.split(",")[2].split(";")] for line in lines}


def _photo(tmp_path, name="room.png", size=(60, 80), seed=0):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)  # blocks of colour: a few regions, not noise
    image = np.kron(base, np.ones((size[0] // 6, size[1] // 8, 1), dtype=np.uint8))
    Image.fromarray(image).save(folder / name)
    return folder / name, image


@pytest.mark.slow
def test_predict_writes_the_four_outputs(cli, tiny_upp_dir, tmp_path):
    photo, _ = _photo(tmp_path)
    out = tmp_path / "out"
    r = cli("predict", photo, "-m", tiny_upp_dir, "-o", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    objects = np.asarray(Image.open(out / "room.png"))  # 336 classes: 16-bit indices
    parts = np.asarray(Image.open(out / "room_part.png"))
    materials = np.asarray(Image.open(out / "room_material.png"))
    assert objects.shape == parts.shape == materials.shape == (60, 80)
    assert Image.open(out / "room_part.png").mode == "P" and materials.max() < 26
    # a pixel's part belongs to the object predicted there (0 where that object has no parts)
    tree = hierarchy()
    assert len(np.unique(parts)) > 1  # some pixels do get a part: the check below covers real parts
    for obj in np.unique(objects):
        allowed = set(tree.get(int(obj), [0]))
        assert set(np.unique(parts[objects == obj]).tolist()) <= allowed
    doc = json.loads((out / "room.json").read_text())
    scene = doc["scene"]
    assert len(scene) == 5 and {"index", "name", "probability"} <= scene[0].keys()
    probs = [s["probability"] for s in scene]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert sum(m["pixels"] for m in doc["materials"]) == 60 * 80 == sum(p["pixels"] for p in doc["parts"])
    counted = {m["index"]: m["pixels"] for m in doc["materials"]}
    assert counted == {int(i): int(n) for i, n in zip(*np.unique(materials, return_counts=True), strict=True)}
    assert doc["outputs"]["part"].endswith("room_part.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenes"] == [{"index": scene[0]["index"], "name": scene[0]["name"], "images": 1}]
    assert summary["save"] == ["json", "material", "part"]
    legend = json.loads((out / "classes.json").read_text())
    assert len(legend["classes"]) == 336 and len(legend["part"]) == 153 and len(legend["material"]) == 26
    assert legend["scene"][0] == {"index": 0, "name": "airfield"}


@pytest.mark.slow
def test_parse_and_save_selection(cli, tiny_upp_dir, tmp_path):
    photo, image = _photo(tmp_path, seed=1)
    seg = Segmenter.from_pretrained(tiny_upp_dir)
    parsed = seg.parse(photo)
    assert parsed.object.shape == parsed.part.shape == parsed.material.shape == image.shape[:2]
    assert len(parsed.scene) == 5 and all(name in seg.scenes for name, _ in parsed.scene)
    assert np.array_equal(seg.predict(photo), parsed.object)
    assert seg.probs(photo).shape == (336, *image.shape[:2])  # the object head's, averaged over the upp views
    with pytest.raises(UsageError, match="averages the softmax of 4 views"):
        seg.logits(photo)  # the upp preset has no logits to give

    # every mode works: windows (the scene averaged over a view's windows), flipped views (over views)
    def scene(pixels: np.ndarray) -> np.ndarray:
        x = seg.model.normalize(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float())
        with torch.no_grad():
            return seg.model(x)[1].softmax(1)[0].numpy()

    windows = [image[:, :64], image[:, 16:]]  # 60×80 image, crop 64, stride 48: two windows
    expected = np.mean([scene(w) for w in windows], axis=0)
    expected = (expected + np.mean([scene(w[:, ::-1]) for w in windows], axis=0)) / 2  # and the mirrored view
    slid = seg.parse(photo, mode="slide", crop=64, stride=48, resize="none", scales="1.0", flip=True)
    assert slid.part.shape == image.shape[:2]
    top = np.argsort(-expected, kind="stable")[:5]
    assert [name for name, _ in slid.scene] == [seg.scenes[i] for i in top]
    assert [p for _, p in slid.scene] == pytest.approx(expected[top].tolist(), abs=1e-6)
    out = tmp_path / "out"
    r = cli("predict", photo, "-m", tiny_upp_dir, "-o", out, "--save", "overlay,part", "--quiet", "--preset", "hf")
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "classes.json",
        "legend.png",
        "room.png",
        "room_material_overlay.jpg",
        "room_overlay.jpg",
        "room_part.png",
        "room_part_overlay.jpg",
        "summary.json",
    ]


def test_part_on_a_model_without_parts_is_a_usage_error(cli, tiny_convnext_dir, tmp_path):
    photo, _ = _photo(tmp_path)
    r = cli("predict", photo, "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--save", "part")
    assert r.exit_code == 2 and "no part head" in r.stderr
    with pytest.raises(Exception, match="not a unified perceptual parser"):
        Segmenter.from_pretrained(tiny_convnext_dir).parse(photo)


def test_overlay_leaves_the_background_label_unpainted():
    image = np.full((16, 16, 3), 200, dtype=np.uint8)
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[:, 8:] = 1
    palette = np.array([[0, 0, 0], [255, 0, 0]], dtype=np.uint8)
    out = np.asarray(Image.open(io.BytesIO(overlay_jpeg(image, labels, palette, 0.5, background=0)))).astype(int)
    assert np.abs(out[:, :6] - 200).max() <= 3  # the image itself (JPEG noise aside)
    assert np.abs(out[:, 10:] - [228, 100, 100]).max() <= 3  # half red
    plain = np.asarray(Image.open(io.BytesIO(overlay_jpeg(image, labels, palette, 0.5)))).astype(int)
    assert np.abs(plain[:, :6] - 100).max() <= 3  # without it, label 0 is painted black


def test_an_fp16_model_directory_keeps_every_head(cli, tiny_upp_dir, tmp_path):
    r = cli("export", tiny_upp_dir, "-f", "safetensors-fp16", "-o", tmp_path / "half")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tmp_path / "half")
    assert seg.maps == ("part", "material") and seg.scenes[0] == "airfield" and seg.part_classes[1] == "leg"


def test_a_config_whose_head_classes_do_not_match_its_head_is_refused(cli, tiny_upp_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_upp_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["head_classes"]["material"]["names"].pop()
    (bad / "config.json").write_text(json.dumps(config))
    r = cli("predict", _photo(tmp_path)[0], "-m", bad, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "head_classes.material.names" in r.stderr and "26" in r.stderr
    config = json.loads((tiny_upp_dir / "config.json").read_text())
    config["head"]["part_groups"][0]["object"] = 400  # beyond the 336 objects
    (bad / "config.json").write_text(json.dumps(config))
    r = cli("predict", _photo(tmp_path)[0], "-m", bad, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "part_groups" in r.stderr


@pytest.mark.slow
def test_bgr_input_survives_an_onnx_export(cli, tmp_path):
    """A BGR model exported without its preprocessing: the sidecar says BGR and the runner flips."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the [onnx] extra)")
    from dataclasses import replace

    from helpers import random_image, randomize_

    from segcli.engine.presets import Protocol
    from segcli.loading.classes import known_set
    from segcli.loading.formats import native
    from segcli.loading.formats.arch import network_from_tables
    from segcli.model import Segmentor
    from segcli.model.segmentor import Normalization

    net = network_from_tables(
        {"type": "resnet", "depth": 18, "blocks": [1, 1, 1, 1]}, {"type": "uper", "channels": 32}, 150, "x"
    )
    net = replace(net, normalization=Normalization((102.98, 115.95, 122.77), (1.0, 1.0, 1.0), 1.0, True))
    model = randomize_(Segmentor(net), seed=3)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    native.write(tmp_path / "bgr", tensors, net, known_set("ade20k"), "hf", Protocol(), {}, (64, 64))
    r = cli("export", tmp_path / "bgr", "-f", "onnx", "-o", tmp_path / "bgr.onnx", "--size", "64x64")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "bgr.onnx.json").read_text())["input"]["normalization"]["bgr"] is True
    image = random_image(64, 64, seed=5)
    eager = Segmenter.from_pretrained(tmp_path / "bgr").logits(image, "hf")
    exported = Segmenter.from_pretrained(tmp_path / "bgr.onnx").logits(image, "hf")
    assert (eager - exported).abs().max() < 1e-3


def test_registry_upp_head_sizes_must_match_the_dataset(cli, tmp_path):
    registry = tmp_path / "r.toml"
    registry.write_text(
        '[models.bad-upp]\nurls = ["https://example.org/a.pth", "https://example.org/b.pth"]\nformat = "csail"\n'
        'license = "MIT"\ndataset = "unifiedparsing"\nbackbone = { type = "resnet", depth = 50 }\n'
        'head = { type = "upp", scene_classes = 10 }\ncrop_size = 512\npreset = "upp"\n'
    )
    r = cli("--registry", registry, "models")
    assert (
        r.exit_code == 2 and "scene head has 10 classes" in r.stderr and "365" in r.stderr and str(registry) in r.stderr
    )
