"""A unified perceptual parser exported to ONNX / TorchScript runs with all four heads, like the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_labels_agree, photo
from PIL import Image

from segcli import Segmenter
from segcli.errors import ConfigError

SIZE = (64, 80)  # the traced size; the test image has it, so the views are the export's


def _export(cli, model, out, fmt):
    r = cli("export", str(model), "-f", fmt, "-o", str(out), "--size", f"{SIZE[0]}x{SIZE[1]}", "-q")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["verified"] and all(c["max_abs_diff"] < 1e-4 for c in result["checks"])
    return out


def _same_parse(exported, tiny_upp_dir, image):
    eager = Segmenter.from_pretrained(tiny_upp_dir)
    ref = eager.parse(str(image), "hf", resize="none")
    seg = Segmenter.from_pretrained(exported)
    assert seg.maps == ("part", "material") and len(seg.scenes) == 365
    got = seg.parse(str(image), "hf", resize="none")
    scores = eager.logits(str(image), "hf", resize="none").numpy()  # the objects'
    assert_labels_agree(got.object, scores, 1e-4, "object")  # the export's verified bound: only near-ties flip
    flipped = got.object != ref.object  # a part is read within its object's group: it follows the object
    for kind in ("part", "material"):
        np.testing.assert_array_equal(getattr(got, kind)[~flipped], getattr(ref, kind)[~flipped], err_msg=kind)
    assert got.part.any() and len(np.unique(got.object)) > 3  # parts were read within the objects' groups
    assert [n for n, _ in got.scene] == [n for n, _ in ref.scene]
    np.testing.assert_allclose([p for _, p in got.scene], [p for _, p in ref.scene], atol=1e-5)


def test_torchscript_parser_runs_all_heads(cli, tiny_upp_dir, tmp_path):
    image = photo(tmp_path / "u.png", *SIZE, seed=3)
    pt = _export(cli, tiny_upp_dir, tmp_path / "upp.pt", "torchscript")
    side = json.loads((tmp_path / "upp.pt.json").read_text())
    assert side["head"]["type"] == "upp" and set(side["head_classes"]) == {"part", "material", "scene"}
    assert side["output"]["outputs"] == ["logits", "scene"]
    _same_parse(pt, tiny_upp_dir, image)

    out = tmp_path / "out"
    r = cli("predict", str(image), "-m", str(pt), "-o", str(out), "--preset", "hf", "--resize", "none")
    assert r.exit_code == 0, r.stderr
    ref = Segmenter.from_pretrained(tiny_upp_dir).parse(str(image), "hf", resize="none")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "u_material.png")), ref.material)
    assert json.loads((out / "u.json").read_text())["scene"][0]["name"] == ref.scene[0][0]

    side["head_classes"]["material"]["names"] = side["head_classes"]["material"]["names"][:-1]
    (tmp_path / "upp.pt.json").write_text(json.dumps(side))
    with pytest.raises(ConfigError, match=r"upp\.pt\.json: `head_classes\.material\.names` must list"):
        Segmenter.from_pretrained(pt)


@pytest.mark.slow
def test_onnx_parser_runs_all_heads(cli, tiny_upp_dir, tmp_path):
    image = photo(tmp_path / "u.png", *SIZE, seed=3)
    _same_parse(_export(cli, tiny_upp_dir, tmp_path / "upp.onnx", "onnx"), tiny_upp_dir, image)


def test_a_parser_exports_logits_not_labels(cli, tiny_upp_dir, tmp_path):
    r = cli("export", str(tiny_upp_dir), "-f", "torchscript", "-o", str(tmp_path / "u.pt"), "--labels")
    assert r.exit_code == 2 and "four maps" in r.stderr
