"""`--save labelstudio`: brush pre-annotations that Label Studio's own decoder reads back exactly."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

from segcli import Segmenter
from segcli.io.labelstudio import brush_rle

brush = pytest.importorskip("label_studio_converter.brush", reason="label-studio-converter is a test dependency")


@pytest.mark.parametrize("h, w, kind", [(1, 1, "full"), (7, 9, "random"), (300, 300, "full"), (60, 500, "bands")])
def test_brush_rle_is_what_label_studio_decodes(h, w, kind):
    rng = np.random.default_rng(h * w)
    mask = {
        "full": np.ones((h, w), bool),  # 360000 values: runs longer than one 16-bit chunk
        "random": rng.random((h, w)) < 0.5,
        "bands": np.repeat(rng.random((h, 1)) < 0.5, w, axis=1),
    }[kind]
    rgba = brush.decode_rle(brush_rle(mask)).reshape(h, w, 4)
    assert (rgba == np.where(mask, 255, 0)[..., None]).all()
    assert brush_rle(mask) == brush.mask2rle(mask.astype(np.uint8) * 255)  # their encoder's bytes, too


def test_tasks_and_config_import_as_label_studio_reads_them(cli, tiny_convnext_dir, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = ["a.png", "sub/b.png"]
    for i, name in enumerate(names):
        Image.fromarray(random_image(36 + 8 * i, 52, seed=50 + i)).save(src / name)
    out = tmp_path / "out"
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--save", "labelstudio", "--ls-from-name", "seg",
            "--ls-to-name", "photo", "--ls-image-prefix", "/data/local-files/?d=in/")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert [t["data"]["photo"] for t in tasks] == [f"/data/local-files/?d=in/{n}" for n in names]
    classes = Segmenter.from_pretrained(tiny_convnext_dir).classes
    for name, t in zip(names, tasks, strict=True):
        labels = np.asarray(Image.open(out / name))
        (prediction,) = t["predictions"]
        assert prediction["model_version"].startswith("segcli ")
        for res in prediction["result"]:
            assert (res["from_name"], res["to_name"], res["type"]) == ("seg", "photo", "brushlabels")
        # the converter's own reading of results (label_studio_converter.brush.decode_from_annotation)
        flat = [{**res["value"], "type": res["type"], "original_width": res["original_width"],
                 "original_height": res["original_height"]} for res in prediction["result"]]  # fmt: skip
        layers = brush.decode_from_annotation("seg", flat)
        rebuilt = np.full(labels.shape, -1)
        for key, layer in layers.items():
            cls = classes.index(key.removeprefix("seg-").rsplit("-", 1)[0])
            assert (rebuilt[layer > 0] == -1).all()
            rebuilt[layer > 0] = cls
        assert (rebuilt == labels).all()  # every pixel, exactly
        assert json.loads((out / name.replace(".png", ".ls.json")).read_text()) == t
    config = ET.fromstring((out / "labelstudio.xml").read_text())
    image, brushes = config.find("Image"), config.find("BrushLabels")
    assert image.get("name") == "photo" and image.get("value") == "$photo"
    assert brushes.get("name") == "seg" and brushes.get("toName") == "photo"
    assert [lab.get("value") for lab in brushes.findall("Label")] == list(classes)
