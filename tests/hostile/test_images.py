"""Images that cannot be segmented: each fails alone with one line, the batch goes on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import photo, random_image
from PIL import Image


def test_thin_and_tiny_images_under_slide_are_segmented(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "thin.png", 40, 1000, seed=1)
    photo(src / "tall.png", 900, 30, seed=2)
    Image.fromarray(np.array([[[200, 10, 10]]], np.uint8)).save(src / "dot.png")
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--resize", "none", "--mode", "slide", "--crop", "64")
    assert r.exit_code == 0, r.stderr
    for name, shape in {"thin": (40, 1000), "tall": (900, 30), "dot": (1, 1)}.items():
        assert np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).shape == shape


def test_undecodable_files_fail_alone(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "good.png")
    (src / "fake.jpg").write_bytes(b"DDS |\x00\x00\x00\x07\x10\x08\x00" + b"\x00" * 120)  # a DDS header
    gif = Image.fromarray(random_image(16, 16)).convert("P")
    gif.save(src / "trunc.gif")
    (src / "trunc.gif").write_bytes((src / "trunc.gif").read_bytes()[:40])
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--ext", "jpg,png,gif", "--jsonl")
    assert r.exit_code == 1, r.stderr
    status = {json.loads(line)["name"]: json.loads(line)["status"] for line in r.stdout.splitlines()}
    assert status["good"] == "done" and status["fake"] == "failed" and status["trunc"] == "failed"
    errors = [line for line in r.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 2 and all("Traceback" not in e for e in errors)


def test_probs_of_a_huge_image_are_refused_from_the_header(cli, model, tmp_path):
    src = tmp_path / "in"
    photo(src / "small.png")
    # a PNG whose header claims 9000x9000 (a decoder would need the data; the check reads only the header)
    Image.new("L", (9000, 9000)).save(src / "huge.png", optimize=False, compress_level=9)
    r = cli("predict", src, "-m", model, "-o", tmp_path / "out", "--save", "probs", "--max-pixels", str(10**8))
    assert r.exit_code == 1 and "--save probs would hold" in r.stderr and "limit is 4 GiB" in r.stderr
    assert (tmp_path / "out" / "small_probs.npy").is_file() and not (tmp_path / "out" / "huge.png").exists()


@pytest.mark.slow  # decodes a bomb-sized label map
def test_evaluate_one_bit_bomb_and_label_suffix_pairs(cli, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    ones = np.zeros((8, 8), bool)
    ones[:, 4:] = True
    Image.fromarray(ones).save(gt / "bits.png")  # mode 1
    Image.fromarray(ones.astype(np.uint8)).save(pred / "bits.png")
    Image.new("L", (30000, 30000)).save(gt / "bomb.png")  # 900 Mpx: over the pixel limit
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "bomb.png")
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(gt / "road_label.png")
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(pred / "road_label.png")  # prediction of road_label.jpg
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / "road.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "road.png")
    r = cli("evaluate", "--gt", gt, "--pred", pred, "--num-classes", "2", "--json", "-", "--per-image")
    assert r.exit_code == 1 and "bomb.png: cannot read label map" in r.stderr and "exceeds" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["pairs"] == 3 and doc["summary"]["aAcc"] == 1.0  # every pair that was read matches exactly
    assert {p["name"] for p in doc["per_image"]} == {"bits", "road", "road_label"}


def test_pillow_warnings_do_not_leak(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010E] = "x" * 100
    Image.fromarray(random_image(24, 32)).save(src / "e.jpg", exif=exif.tobytes()[:-60])  # tag data cut short
    done = subprocess.run(
        [sys.executable, "-m", "segcli", "predict", src, "-m", model, "-o", tmp_path / "out", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and done.stderr == "", done.stderr
