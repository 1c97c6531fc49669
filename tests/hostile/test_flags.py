"""Flags that cannot be satisfied: usage errors (exit 2) before any model runs, and outputs that would land
on their own inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo
from PIL import Image


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resize", "0"], "invalid resize"),
        (["--resize", "0x0"], "invalid resize"),
        (["--resize", "999999999x2"], "invalid resize"),
        (["--scales", "nan"], "invalid scales"),
        (["--scales", "inf"], "invalid scales"),
        (["--scales", "1e-300"], "invalid scales"),
        (["--mode", "slide", "--crop", "0"], "invalid crop"),
        (["--tile-batch", "100000"], "tile-batch"),
        (["-o", ""], "--out is empty"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_flags_are_usage_errors(cli, model, tmp_path, args, message):
    photo(tmp_path / "in" / "a.png")
    base = ["predict", tmp_path / "in", "-m", model]
    r = cli(*base, *(args if "-o" in args else [*args, "-o", tmp_path / "out"]))
    assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_evaluate_num_classes_zero_is_a_usage_error(cli, tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    r = cli("evaluate", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred", "--num-classes", "0")
    assert r.exit_code == 2 and "--num-classes 0" in r.stderr


def test_evaluate_save_pred_may_not_overlap_inputs(cli, model, tmp_path):
    gt, images = tmp_path / "gt", tmp_path / "images"
    photo(images / "a.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(gt / "a.png") if gt.mkdir() is None else None
    before = (gt / "a.png").read_bytes()
    for target in (gt, gt / "sub", tmp_path, images):
        r = cli("evaluate", "--gt", gt, "--model", model, "--images", images, "--save-pred", target)
        assert r.exit_code == 2 and "--save-pred" in r.stderr and "mixed with" in r.stderr, (target, r.stderr)
    assert (gt / "a.png").read_bytes() == before and sorted(p.name for p in gt.iterdir()) == ["a.png"]


def test_export_onto_its_own_source_is_refused(cli, model):
    before = (model / "model.safetensors").read_bytes()
    for out in (model, model / "sub"):
        r = cli("export", model, "-f", "safetensors-fp16", "-o", out)
        assert r.exit_code == 2 and "inside the model's folder" in r.stderr
    assert (model / "model.safetensors").read_bytes() == before
