"""`--save coco` and `--coco-file`: COCO's compressed RLE written without pycocotools, read back with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import random_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segcli import Segmenter
from segcli.io import coco

mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools is a test dependency")


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1), st.sampled_from([1, 3, 9])
)
def test_rle_equals_pycocotools(h, w, density, seed, blob):
    rng = np.random.default_rng(seed)
    small = rng.random((-(-h // blob), -(-w // blob))) < density  # runs of several lengths, long ones too
    mask = np.kron(small, np.ones((blob, blob), dtype=bool))[:h, :w]
    theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = coco.encode(mask)
    assert ours == {"size": [h, w], "counts": theirs["counts"].decode("ascii")}
    assert (coco.decode(ours) == mask).all()
    if mask.any():
        assert coco.bbox(mask) == mask_utils.toBbox(theirs).tolist()


def test_a_corrupt_rle_is_refused():
    with pytest.raises(ValueError, match="sum to"):
        coco.decode({"size": [4, 4], "counts": coco.counts_string(np.array([3, 2]))})


def test_coco_outputs_decode_to_the_label_maps_and_load_in_pycocotools(cli, tiny_convnext_dir, tmp_path):
    from pycocotools.coco import COCO

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = ["a.png", "sub/b.png", "c.png"]
    for i, name in enumerate(names):
        Image.fromarray(random_image(40 + 8 * i, 56, seed=30 + i)).save(src / name)
    out = tmp_path / "out"
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--coco-file")
    assert r.exit_code == 0, r.stderr
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    total = 0
    for name in names:
        labels = np.asarray(Image.open(out / name))
        doc = json.loads((out / name.replace(".png", ".coco.json")).read_text())
        assert doc["images"] == [{"id": 1, "file_name": name, "height": labels.shape[0], "width": labels.shape[1]}]
        rebuilt = np.full(labels.shape, -1)
        for a in doc["annotations"]:  # pycocotools' decoder, one mask per class present
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert (rebuilt[m] == -1).all() and a["area"] == m.sum() == mask_utils.area(a["segmentation"])
            rebuilt[m] = a["category_id"] - 1
        assert (rebuilt == labels).all()  # every pixel, exactly
        assert [c["name"] for c in doc["categories"]] == list(seg.classes)
        total += len(doc["annotations"])
        gt = COCO(str(out / name.replace(".png", ".coco.json")))  # a COCO dataset of its own
        assert len(gt.getAnnIds()) == len(doc["annotations"])
    dataset = COCO(str(out / "coco.json"))
    ids = {img["file_name"]: img["id"] for img in dataset.dataset["images"]}
    assert ids == {"a.png": 1, "c.png": 2, "sub/b.png": 3}  # places among the inputs (sorted)
    assert len(dataset.getAnnIds()) == total
    results = dataset.loadRes(str(out / "coco-results.json"))  # the results form
    assert len(results.getAnnIds()) == total
    for i in (0, 1):  # shards: each file holds its images under the run's ids
        r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--coco-file", "--shard", f"{i}/2", "--jsonl")
        assert r.exit_code == 0 and {json.loads(x)["status"] for x in r.stdout.splitlines()} <= {"skipped"}
    shards = [json.loads((out / f"coco-shard-{i}-of-2.json").read_text()) for i in (0, 1)]
    assert sorted(img["id"] for s in shards for img in s["images"]) == [1, 2, 3]
    assert {img["file_name"]: img["id"] for s in shards for img in s["images"]} == ids
    assert sum(len(s["annotations"]) for s in shards) == total


def test_coco_names_are_reserved_in_the_layout(tmp_path):
    from pathlib import PurePosixPath

    from segcli.io.layout import assign_bases, output_paths

    rels = [PurePosixPath(n) for n in ("x.png", "x.coco.png", "coco.json", "coco-results.jpg", "y.jpg")]
    paths = [
        p for b in assign_bases(rels) for p in output_paths(tmp_path, b, frozenset({"json", "coco"}), None).values()
    ]
    assert len(paths) == len(set(paths)) == 15
    assert tmp_path / "y.coco.json" in paths  # the short name where nothing collides
    assert not {tmp_path / "coco.json", tmp_path / "coco-results.json"} & set(paths)  # the run's files


def test_a_damaged_image_file_is_one_line_and_the_run_files_go_on(cli, tiny_convnext_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(random_image(24, 32, seed=60 + i)).save(src / f"p{i}.png")
    out = tmp_path / "out"
    assert cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--coco-file").exit_code == 0
    (out / "p0.coco.json").write_text('{"images": [{"id": 1, "x": NaN}], "annotations": [1]}')  # edited by hand
    r = cli("predict", src, "-m", tiny_convnext_dir, "-o", out, "--coco-file")
    assert f"{out / 'p0.coco.json'}: cannot read it for the run's COCO file" in r.stderr
    dataset = json.loads((out / "coco.json").read_text())  # strict JSON, the other image in it
    assert [img["file_name"] for img in dataset["images"]] == ["p1.png"] and dataset["annotations"]
